"""Hugging Face checkpoint directories: config.json + (sharded) safetensors, GLM-4.5 key layout.

On disk (hub and `transformers` 5 alike) experts are per-expert keys
`model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.weight` and the MTP layer is
`model.layers.{num_hidden_layers}.*`; in memory glm45 keeps experts as 3-D tensors and the MTP
layer as `mtp.*`. This module is the only place that knows both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import replace
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from glm45.checkpoint.fp8 import dequantize_blockwise
from glm45.config import ConfigError, ModelConfig

_EXPERT_RE = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
DEFAULT_SHARD_BYTES = 5 * 1024**3

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded as GLM-4.5 (names the files and keys)."""


# ----------------------------------------------------------------------- key mapping
def is_expert_tensor(name: str) -> bool:
    return re.search(r"\.mlp\.experts\.(gate_proj|up_proj|down_proj)$", name) is not None


def disk_key(name: str, expert: int | None, config: ModelConfig) -> str:
    """In-memory name (+ expert index for 3-D expert tensors) -> on-disk key."""
    if name.startswith("mtp."):
        name = f"model.layers.{config.num_hidden_layers}." + name[len("mtp."):]
    if expert is not None:
        prefix, proj = name.rsplit(".", 1)
        return f"{prefix}.{expert}.{proj}.weight"
    return name


def memory_to_disk(name: str, tensor: torch.Tensor, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """One in-memory state-dict entry -> its on-disk key(s)."""
    if is_expert_tensor(name):
        for e in range(tensor.shape[0]):
            yield disk_key(name, e, config), tensor[e]
    else:
        yield disk_key(name, None, config), tensor


def disk_to_memory(key: str, config: ModelConfig) -> tuple[str, int | None]:
    """On-disk key -> (in-memory name, expert index or None)."""
    mtp_prefix = f"model.layers.{config.num_hidden_layers}."
    expert = None
    m = _EXPERT_RE.match(key)
    if m:
        key, expert = f"{m.group(1)}.{m.group(3)}", int(m.group(2))
    if key.startswith(mtp_prefix):
        key = "mtp." + key[len(mtp_prefix):]
    return key, expert


# ----------------------------------------------------------------------------- save
def save_pretrained(model, directory: str | os.PathLike, *, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                    tokenizer=None, dtype: torch.dtype | None = None) -> None:
    """Write config.json, generation_config.json and safetensors (sharded past `max_shard_bytes`).

    The directory is assembled under a temporary name and renamed into place, so a crash never
    leaves a half-written checkpoint. A tokenizer (anything with `.save(dir)`) is saved alongside.
    """
    config: ModelConfig = model.config
    directory = os.fspath(directory)
    parent = os.path.dirname(os.path.abspath(directory)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=parent)
    try:
        tensors: dict[str, torch.Tensor] = {}
        for name, t in model.state_dict().items():
            if dtype is not None and t.is_floating_point() and not name.endswith("e_score_correction_bias"):
                t = t.to(dtype)
            for key, value in memory_to_disk(name, t, config):
                tensors[key] = value.detach().to("cpu").contiguous()
        shards = _split_shards(tensors, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, os.path.join(tmp, fname), metadata={"format": "pt"})
                weight_map.update({k: fname for k in shard})
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f,
                          indent=2)
        main_dtype = dtype or next(p.dtype for p in model.parameters())
        replace(config, torch_dtype=str(main_dtype).removeprefix("torch.")).save(tmp)
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump({"eos_token_id": list(config.eos_token_id), "pad_token_id": config.pad_token_id,
                       "do_sample": True, "temperature": 0.6, "top_p": 0.95}, f, indent=2)
        if tokenizer is not None:
            tokenizer.save(tmp)
        if os.path.isdir(directory):
            # Keep files we do not own (e.g. a tokenizer saved earlier) unless replaced.
            for fname in os.listdir(directory):
                src = os.path.join(directory, fname)
                if not os.path.exists(os.path.join(tmp, fname)) and not _is_weight_file(fname):
                    shutil.copy2(src, os.path.join(tmp, fname))
            old = directory + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _is_weight_file(fname: str) -> bool:
    return fname.endswith(".safetensors") or fname == "model.safetensors.index.json"


def _split_shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += n
    return shards


# ----------------------------------------------------------------------------- load
def weight_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is malformed: {e}") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.exists(os.path.join(directory, f))]
        if missing:
            raise CheckpointError(f"{directory}: shards listed in the index are missing: {missing}")
        return [os.path.join(directory, f) for f in files]
    if os.path.exists(single):
        return [single]
    raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def load_pretrained(directory: str | os.PathLike, dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu", strict: bool = True):
    """Build the model without allocating twice (meta init, then fill tensor by tensor)."""
    from glm45.model import GLM45ForCausalLM

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory!r} does not exist")
    try:
        config = ModelConfig.from_hf(directory)
    except ConfigError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    files = weight_files(directory)
    keys = _list_keys(files)
    mtp_prefix = f"model.layers.{config.num_hidden_layers}."
    if config.num_nextn_predict_layers and not any(k.startswith(mtp_prefix) for k in keys):
        warnings.warn(f"{directory}: config declares an MTP layer but the checkpoint has no "
                      f"{mtp_prefix}* weights (transformers does not save them); loading without MTP")
        config = replace(config, num_nextn_predict_layers=0)
    if dtype is None:
        dtype = _DTYPES.get(config.torch_dtype, torch.float32)
    with torch.device("meta"):
        model = GLM45ForCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    params = dict(model.named_parameters())
    params.update(model.named_buffers())
    filled: set[tuple[str, int | None]] = set()
    unexpected, misshaped = [], []
    for path in files:
        with safe_open(path, framework="pt", device="cpu") as f:
            names = set(f.keys())
            for key in names:
                if key.endswith("weight_scale_inv"):
                    continue
                name, expert = disk_to_memory(key, config)
                target = params.get(name)
                if target is None:
                    unexpected.append(key)
                    continue
                tensor = f.get_tensor(key)
                if tensor.dtype == torch.float8_e4m3fn:
                    scale_key = key.removesuffix("weight") + "weight_scale_inv"
                    if scale_key not in names:
                        raise CheckpointError(f"{path}: FP8 tensor {key} has no {scale_key}")
                    tensor = dequantize_blockwise(tensor, f.get_tensor(scale_key))
                dst = target[expert] if expert is not None else target
                if tuple(tensor.shape) != tuple(dst.shape):
                    misshaped.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(dst.shape)}")
                    continue
                with torch.no_grad():
                    dst.copy_(tensor)
                filled.add((name, expert))
    expected = set()
    for name, t in params.items():
        if is_expert_tensor(name):
            expected.update((name, e) for e in range(t.shape[0]))
        else:
            expected.add((name, None))
    missing = sorted(disk_key(n, e, config) for n, e in expected - filled)
    # Checkpoints written before loss-free balancing existed have no correction bias: zero is exact.
    missing = [k for k in missing if not k.endswith("e_score_correction_bias")]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_preview(missing)}")
    if misshaped:
        problems.append(f"mis-shaped keys ({len(misshaped)}): {_preview(misshaped)}")
    if unexpected and strict:
        problems.append(f"unexpected keys ({len(unexpected)}): {_preview(sorted(unexpected))}")
    if problems:
        raise CheckpointError(f"{directory} does not match its config: " + "; ".join(problems))
    model.eval()
    return model


def _list_keys(files: list[str]) -> set[str]:
    keys: set[str] = set()
    for path in files:
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                keys.update(f.keys())
        except Exception as e:  # safetensors raises several types for a corrupt header
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    return keys


def _preview(items: list[str], n: int = 8) -> str:
    head = ", ".join(items[:n])
    return head + (f", … (+{len(items) - n} more)" if len(items) > n else "")
