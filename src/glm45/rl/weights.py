"""Weight sync from the trainer to rollout engines (paper §3.5).

`snapshot(model, fp8=...)` takes the weights to push: detached copies (the trainer keeps
training while an asynchronous worker applies them later), optionally quantised online to
block-wise FP8 — e4m3 values in 128x128 blocks with one fp32 `weight_scale_inv` per block, under
the checkpoint's key names — for every linear and routed expert that `quantize_model_fp8` would
quantise (embeddings, heads, norms and routers stay in high precision). `glm45.infer`'s
`Engine.update_weights` takes either form: its FP8 layers take the e4m3 values as they are,
high-precision layers dequantise them (so a plain engine also samples from the FP8 policy).

`DiskWeightSync` is the push for an engine in another process: write the snapshot as a
checkpoint directory and ask the server to reload from it (SGLang's `/update_weights_from_disk`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glm45.rl.errors import RLError

__all__ = ["DiskWeightSync", "fp8_keys", "snapshot", "state_bytes"]


def fp8_keys(model: nn.Module) -> set[str]:
    """In-memory names of the weights FP8 rollout quantises (as `quantize_model_fp8` does)."""
    from glm45.infer.fp8 import KEEP_HIGH_PRECISION
    from glm45.model.moe import Experts

    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in KEEP_HIGH_PRECISION:
            keys.add(f"{name}.weight")
        elif type(module) is Experts:
            keys.update(f"{name}.{p}" for p in ("gate_proj", "up_proj", "down_proj"))
    return keys


@torch.no_grad()
def snapshot(model: nn.Module, *, fp8: bool = False, block: int | None = None) -> dict[str, torch.Tensor]:
    """The weights to push: detached CPU copies (in-memory names), or with `fp8` the quantised
    linears and experts as e4m3 + `weight_scale_inv` under checkpoint names."""
    state = model.state_dict()
    if not fp8:
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    from glm45.checkpoint.fp8 import BLOCK, quantize_blockwise
    from glm45.checkpoint.hf import memory_to_disk

    block = block or BLOCK
    quantised = fp8_keys(model)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        for key, value in memory_to_disk(name, tensor.detach(), model.config):
            if name in quantised:
                q, scale = quantize_blockwise(value.float(), block)
                out[key] = q.cpu()
                out[key.removesuffix("weight") + "weight_scale_inv"] = scale.cpu()
            else:
                out[key] = value.to("cpu", copy=True)
    return out


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


class DiskWeightSync:
    """Push weights to a rollout server in another process: write a checkpoint directory, then
    POST `{"model_path": dir}` to `{url}/update_weights_from_disk` (the SGLang API). With `fp8`
    the directory is an FP8 checkpoint (e4m3 linears and experts + scales)."""

    def __init__(self, url: str, directory: str | os.PathLike, *, fp8: bool = False, tokenizer: Any = None,
                 timeout_s: float = 600.0, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.directory = Path(directory)
        self.fp8 = fp8
        self.tokenizer = tokenizer
        self.timeout_s = timeout_s
        self.api_key = api_key

    def write(self, model: nn.Module, version: int) -> Path:
        """The model as a checkpoint directory `<dir>/v{version}` (written atomically)."""
        final = self.directory / f"v{version:08d}"
        tmp = self.directory / f".tmp-v{version:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        if self.fp8:
            import copy

            from glm45.infer.fp8 import quantize_model_fp8, save_fp8_pretrained

            save_fp8_pretrained(quantize_model_fp8(copy.deepcopy(model)), tmp, tokenizer=self.tokenizer)
        else:
            model.save_pretrained(tmp, tokenizer=self.tokenizer)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.directory.glob("v*"):  # keep only the newest: a server reads it once
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def push(self, model: nn.Module, version: int) -> dict[str, float]:
        import httpx

        t0 = time.perf_counter()
        path = self.write(model, version)
        t1 = time.perf_counter()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        r = httpx.post(f"{self.url}/update_weights_from_disk", json={"model_path": os.fspath(path)},
                       headers=headers, timeout=self.timeout_s)
        if r.status_code != 200:
            raise RLError(f"{self.url}/update_weights_from_disk answered {r.status_code}: {r.text[:300]}")
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if isinstance(body, dict) and body.get("success") is False:
            raise RLError(f"{self.url} could not load the pushed weights: {body.get('message', body)}")
        return {"write_s": t1 - t0, "load_s": time.perf_counter() - t1,
                "bytes": float(sum(f.stat().st_size for f in path.glob("*.safetensors")))}
