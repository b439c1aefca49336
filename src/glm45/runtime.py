"""Facts about the machine that decide how to run: device and the fastest training/inference dtype.

On CPUs, bf16 is measured, not assumed: without AVX512-BF16/AMX a bf16 matmul is 10-150x slower
than fp32 (AVX2-only EPYC). With AVX512-BF16 a bf16 matmul is ~2.2x fp32, but a whole training
step gains less (casts, elementwise ops, backward kernels): the nano model's step once measured
~10x slower in bf16 than in fp32, and ~1.5x faster since the model's bf16 paths were tuned
(fused head, materialised short attention, expert rows padded so oneDNN reuses its kernels).
The probe therefore times a training-like step.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping

import torch
import torch.nn.functional as F


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """True when a bf16-autocast training step beats fp32 by at least 1.5x here (always True on
    CUDA). The probe is a small SwiGLU block's forward + backward, not a bare matmul, so the
    casts and elementwise ops count (see the module docstring)."""
    if device_type == "cuda":
        return True
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 256, generator=gen)
    w_in = torch.randn(512, 256, generator=gen, requires_grad=True)
    w_out = torch.randn(256, 512, generator=gen, requires_grad=True)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = F.silu(F.linear(x, w_in)) * F.linear(x, w_in)
            y = F.linear(h, w_out)
        y.float().square().mean().backward()

    def best(bf16: bool) -> float:
        step(bf16)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            step(bf16)
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(True) * 1.5 < best(False)


def compute_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype to autocast to on `device`: bf16 where it is fast, else fp32."""
    device_type = torch.device(device).type
    return torch.bfloat16 if bf16_is_fast(device_type) else torch.float32


COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def check_dtype_name(name: str, what: str = "dtype") -> None:
    """Raise ValueError unless `name` is "auto" or a key of COMPUTE_DTYPES."""
    if name != "auto" and name not in COMPUTE_DTYPES:
        raise ValueError(f"{what} must be 'auto' or one of {sorted(COMPUTE_DTYPES)}, got {name!r}")


def dtype_name(dtype: torch.dtype) -> str:
    """"bfloat16" / "float32": the name configs and the optimizer's `ns_dtype` take."""
    return str(dtype).removeprefix("torch.")


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """"auto" -> compute_dtype(device); "bfloat16"/"float32" -> that dtype. Pin "float32" where
    results must be reproducible across machines (bf16 is only picked where it is fast)."""
    check_dtype_name(name)
    return compute_dtype(device) if name == "auto" else COMPUTE_DTYPES[name]


def shared_cpu_threads(device_type: str, torch_workers: int = 1, other_busy: int = 0,
                       env: Mapping[str, str] = os.environ) -> int | None:
    """torch's intra-op thread count for `torch_workers` Python threads that run torch ops at once,
    beside `other_busy` threads or processes that each keep a core busy (an HTTP event loop, Ray
    rollout actors); None leaves it alone (CUDA, or OMP_NUM_THREADS set by the user).

    Every thread that runs torch ops on CPU gets its own OpenMP team of that many threads, and
    OpenMP threads spin while they wait, so teams that together outnumber the cores slow
    everything down. On 2 cores with torch's default of one thread per core: 16 streams behind
    `glm45 serve` 1400 tok/s, 2600-3500 with one thread; async RL 0.81-0.87x sync, 1.54-1.58x
    with one thread per side."""
    if device_type != "cpu" or "OMP_NUM_THREADS" in env:
        return None
    return max(1, (torch.get_num_threads() - other_busy) // max(1, torch_workers))
