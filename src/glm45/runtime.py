"""Facts about the machine that decide how to run: device and the fastest training/inference dtype.

bf16 is ~4x faster than fp32 on CPUs with AVX512-BF16/AMX and ~100x *slower* on CPUs without
them (e.g. AVX2-only AMD EPYC: 1.4 GFLOP/s measured), so the CPU dtype is measured, not assumed.
"""

from __future__ import annotations

import functools
import time

import torch


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """True when a bf16 matmul beats fp32 by at least 1.5x here (always True on CUDA)."""
    if device_type == "cuda":
        return True
    a32, b32 = torch.randn(384, 256), torch.randn(256, 256)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(a, b):
        a @ b
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(a16, b16) * 1.5 < best(a32, b32)


def compute_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype to autocast to on `device`: bf16 where it is fast, else fp32."""
    device_type = torch.device(device).type
    return torch.bfloat16 if bf16_is_fast(device_type) else torch.float32


COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def check_dtype_name(name: str, what: str = "dtype") -> None:
    """Raise ValueError unless `name` is "auto" or a key of COMPUTE_DTYPES."""
    if name != "auto" and name not in COMPUTE_DTYPES:
        raise ValueError(f"{what} must be 'auto' or one of {sorted(COMPUTE_DTYPES)}, got {name!r}")


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """"auto" -> compute_dtype(device); "bfloat16"/"float32" -> that dtype. Pin "float32" where
    results must be reproducible across machines (bf16 is only picked where it is fast)."""
    check_dtype_name(name)
    return compute_dtype(device) if name == "auto" else COMPUTE_DTYPES[name]
