"""Copy a state dict into a running model: the weight push of RL and the FP8 checkpoint loader.

Accepted names: the model's own (`model.state_dict()`, experts as 3-D tensors, MTP as `mtp.*`)
and the checkpoint's (per-expert keys, MTP as `model.layers.{N}.*`). Values may be high
precision or e4m3 with a `weight_scale_inv` beside them. FP8 layers of the target quantise
high-precision values; high-precision layers dequantise FP8 values.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import nn

from glm45.checkpoint.fp8 import dequantize_blockwise
from glm45.checkpoint.hf import disk_key, disk_to_memory, is_expert_tensor, memory_to_disk
from glm45.infer.fp8 import FP8, FP8Error, FP8Experts, FP8Linear


class WeightsError(ValueError):
    """A pushed state dict that does not fit the model (names the keys)."""


def _scale_key(key: str) -> str:
    return key.removesuffix("weight") + "weight_scale_inv"


def _to_disk_keys(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    own = {n for n, _ in itertools.chain(model.named_parameters(), model.named_buffers())}
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if key in own or is_expert_tensor(key) or key.startswith("mtp."):
            out.update(memory_to_disk(key, t, model.config))
        else:
            out[key] = t
    return out


def assign_weights(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Copy `state` into `model` in place. `strict`: every model weight must be given."""
    config = model.config
    entries = _to_disk_keys(model, state)
    expected: set[tuple[str, int | None]] = set()
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if name.endswith("scale_inv"):
            continue
        expected.update(((name, e) for e in range(t.shape[0])) if is_expert_tensor(name) else [(name, None)])
    filled: set[tuple[str, int | None]] = set()
    unknown: list[str] = []
    with torch.no_grad():
        for key, value in entries.items():
            if key.endswith("weight_scale_inv"):
                continue
            name, expert = disk_to_memory(key, config)
            if (name, expert) not in expected:
                unknown.append(key)
                continue
            scale = entries.get(_scale_key(key))
            path, attr = name.rsplit(".", 1)
            module = model.get_submodule(path)
            try:
                if isinstance(module, FP8Linear) and attr == "weight":
                    module.set_weight(value, scale, name=key)
                elif isinstance(module, FP8Experts):
                    module.set_expert(attr, expert, value, scale, name=key)
                else:
                    _copy_into(getattr(module, attr), expert, value, scale, key)
            except FP8Error as e:
                raise WeightsError(str(e)) from None
            filled.add((name, expert))
    if unknown:
        raise WeightsError(f"keys that match no model weight ({len(unknown)}): {_preview(sorted(unknown))}")
    missing = sorted(disk_key(n, e, config) for n, e in expected - filled)
    if strict and missing:
        raise WeightsError(f"weights missing from the update ({len(missing)}): {_preview(missing)}")


def _copy_into(target: torch.Tensor, expert: int | None, value: torch.Tensor, scale: torch.Tensor | None,
               key: str) -> None:
    dst = target[expert] if expert is not None else target
    if value.dtype == FP8:
        if scale is None:
            raise WeightsError(f"{key}: an e4m3 weight needs its weight_scale_inv")
        value = dequantize_blockwise(value, scale)
    if tuple(value.shape) != tuple(dst.shape):
        raise WeightsError(f"{key}: got shape {tuple(value.shape)}, the model has {tuple(dst.shape)}")
    dst.copy_(value)


def _preview(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", … (+{len(items) - n} more)" if len(items) > n else "")
