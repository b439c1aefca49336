"""FP8 weights at run time: block-wise e4m3 linears and experts, as the released GLM-4.5-FP8
checkpoints store them and as the RL rollout uses them (the paper quantises the policy to FP8
online before each rollout).

Each linear weight is stored as e4m3 values in 128x128 blocks with one fp32 `weight_scale_inv`
per block (real weight = q * scale_inv, scale_inv = block amax / 448). Embeddings, the output
heads, norms and the router stay in high precision. The weights are dequantised on the fly in
the forward (per expert, only for the experts a batch uses): no FP8 matmul is assumed, so this
runs anywhere torch has float8 tensors and saves memory rather than time.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from glm45.checkpoint.fp8 import BLOCK, dequantize_blockwise, quantize_blockwise
from glm45.model.moe import Experts

FP8 = torch.float8_e4m3fn
QUANTIZATION_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                       "weight_block_size": [BLOCK, BLOCK]}
# High-precision linears: the output heads (main and MTP).
KEEP_HIGH_PRECISION = ("lm_head", "mtp.shared_head.head")
_PROJS = ("gate_proj", "up_proj", "down_proj")


class FP8Error(ValueError):
    """An FP8 weight, scale or model that does not fit (the message names it)."""


def _scale_shape(rows: int, cols: int, block: int) -> tuple[int, int]:
    return math.ceil(rows / block), math.ceil(cols / block)


def _check_fp8(name: str, q: torch.Tensor, scale: torch.Tensor | None, shape, scale_shape) -> None:
    if scale is None:
        raise FP8Error(f"{name}: an e4m3 weight needs its weight_scale_inv")
    if tuple(q.shape) != tuple(shape) or tuple(scale.shape) != tuple(scale_shape):
        raise FP8Error(f"{name}: got e4m3 {tuple(q.shape)} with scales {tuple(scale.shape)}, "
                       f"expected {tuple(shape)} with {tuple(scale_shape)}")


class _KeepFP8Dtypes(nn.Module):
    """`.to(dtype)` must not cast the e4m3 values or their fp32 scales: move them, keep dtypes."""

    _fp8_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        kept = {n: getattr(self, n) for n in self._fp8_buffers}
        out = super()._apply(fn, recurse)
        for n, old in kept.items():
            setattr(self, n, old.to(device=getattr(self, n).device))
        return out


class FP8Linear(_KeepFP8Dtypes):
    """nn.Linear with an e4m3 weight and per-block scales; state-dict keys `weight`,
    `weight_scale_inv` (and `bias`), as in the released FP8 checkpoints."""

    _fp8_buffers = ("weight", "weight_scale_inv")

    def __init__(self, in_features: int, out_features: int, bias: bool, block: int = BLOCK,
                 device: torch.device | str | None = None, bias_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features, self.block = in_features, out_features, block
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=FP8, device=device))
        self.register_buffer("weight_scale_inv", torch.ones(_scale_shape(out_features, in_features, block),
                                                            dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=bias_dtype, device=device),
                                 requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, block: int = BLOCK) -> "FP8Linear":
        w = linear.weight
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, block, w.device, w.dtype)
        out.set_weight(w.detach())
        if linear.bias is not None:
            out.bias.data.copy_(linear.bias.detach())
        return out

    @torch.no_grad()
    def set_weight(self, w: torch.Tensor, scale_inv: torch.Tensor | None = None, name: str = "weight") -> None:
        """Store a high-precision weight (quantised here) or e4m3 values with their scales."""
        if w.dtype == FP8:
            _check_fp8(name, w, scale_inv, self.weight.shape, self.weight_scale_inv.shape)
        else:
            if tuple(w.shape) != tuple(self.weight.shape):
                raise FP8Error(f"{name}: got shape {tuple(w.shape)}, expected {tuple(self.weight.shape)}")
            w, scale_inv = quantize_blockwise(w.to(self.weight.device), self.block)
        self.weight.copy_(w)
        self.weight_scale_inv.copy_(scale_inv)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_blockwise(self.weight, self.weight_scale_inv, self.block, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, e4m3 {self.block}x{self.block} blocks"


class FP8Experts(_KeepFP8Dtypes, Experts):
    """Routed experts with e4m3 [E, rows, cols] weights and [E, row blocks, col blocks] scales.

    Runs `Experts.forward` unchanged; its weight accessors dequantise one expert at a time.
    State-dict keys: `gate_proj` etc. (3-D, split per expert on disk) and per-expert
    `{e}.gate_proj.weight_scale_inv`, which are the checkpoint's own key names.
    """

    _fp8_buffers = tuple(n for p in _PROJS for n in (p, p + "_scale_inv"))

    def __init__(self, n_experts: int, intermediate: int, hidden: int, block: int = BLOCK,
                 device: torch.device | str | None = None, compute_dtype: torch.dtype = torch.float32):
        nn.Module.__init__(self)  # not Experts.__init__: no high-precision weights to allocate
        self.n_experts, self.block, self.compute_dtype = n_experts, block, compute_dtype
        for proj, (r, c) in zip(_PROJS, ((intermediate, hidden), (intermediate, hidden), (hidden, intermediate))):
            self.register_buffer(proj, torch.zeros(n_experts, r, c, dtype=FP8, device=device))
            self.register_buffer(proj + "_scale_inv", torch.ones(n_experts, *_scale_shape(r, c, block),
                                                                 dtype=torch.float32, device=device))

    @classmethod
    def from_experts(cls, experts: Experts, block: int = BLOCK) -> "FP8Experts":
        E, i, d = experts.gate_proj.shape
        out = cls(E, i, d, block, experts.gate_proj.device, experts.gate_proj.dtype)
        for proj in _PROJS:
            for e in range(E):
                out.set_expert(proj, e, getattr(experts, proj)[e].detach())
        return out

    def _apply(self, fn, recurse=True):
        self.compute_dtype = fn(torch.empty(0, dtype=self.compute_dtype)).dtype  # follow .to(dtype)
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def set_expert(self, proj: str, e: int, w: torch.Tensor, scale_inv: torch.Tensor | None = None,
                   name: str | None = None) -> None:
        q_all, s_all = getattr(self, proj), getattr(self, proj + "_scale_inv")
        name = name or f"experts.{e}.{proj}.weight"
        if not 0 <= e < self.n_experts:
            raise FP8Error(f"{name}: expert index {e} outside [0, {self.n_experts})")
        if w.dtype == FP8:
            _check_fp8(name, w, scale_inv, q_all.shape[1:], s_all.shape[1:])
        else:
            if tuple(w.shape) != tuple(q_all.shape[1:]):
                raise FP8Error(f"{name}: got shape {tuple(w.shape)}, expected {tuple(q_all.shape[1:])}")
            w, scale_inv = quantize_blockwise(w.to(q_all.device), self.block)
        q_all[e].copy_(w)
        s_all[e].copy_(scale_inv)

    def use_grouped_mm(self, x_MD: torch.Tensor) -> bool:
        return False  # it would dequantise every expert per forward; the loop dequantises the used ones

    def expert_weights(self, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(dequantize_blockwise(getattr(self, p)[e], getattr(self, p + "_scale_inv")[e], self.block,
                                          self.compute_dtype) for p in _PROJS)

    def stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(dequantize_blockwise(getattr(self, p), getattr(self, p + "_scale_inv"), self.block,
                                          self.compute_dtype) for p in _PROJS)

    def gathered_weights(self, idx_M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(dequantize_blockwise(getattr(self, p)[idx_M], getattr(self, p + "_scale_inv")[idx_M],
                                          self.block, self.compute_dtype) for p in _PROJS)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for p in _PROJS:
            destination[prefix + p] = getattr(self, p)
            for e, s in enumerate(getattr(self, p + "_scale_inv")):
                destination[f"{prefix}{e}.{p}.weight_scale_inv"] = s

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for p in _PROJS:
            q = state_dict.get(prefix + p)
            if q is None:
                missing_keys.append(prefix + p)
                continue
            for e in range(self.n_experts):
                key = f"{prefix}{e}.{p}.weight_scale_inv"
                try:
                    self.set_expert(p, e, q[e], state_dict.get(key), name=prefix + p)
                except FP8Error as err:
                    error_msgs.append(str(err))


def quantize_model_fp8(model: nn.Module, block: int = BLOCK) -> nn.Module:
    """Swap the model's linears (attention, dense MLPs, shared experts, MTP projection) and routed
    experts for FP8 versions, in place; returns the model. Heads, embeddings, norms and routers
    keep their precision."""
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, nn.Linear) and full not in KEEP_HIGH_PRECISION:
                setattr(parent, child_name, FP8Linear.from_linear(child, block))
            elif type(child) is Experts:
                setattr(parent, child_name, FP8Experts.from_experts(child, block))
    return model


def is_fp8_model(model: nn.Module) -> bool:
    return any(isinstance(m, (FP8Linear, FP8Experts)) for m in model.modules())


# --------------------------------------------------------------------------- checkpoints
def save_fp8_pretrained(model: nn.Module, directory: str | os.PathLike, **kwargs) -> None:
    """Write an FP8 checkpoint (e4m3 weights + `*.weight_scale_inv`, `quantization_config` in
    config.json) from a model `quantize_model_fp8` has converted."""
    from glm45.checkpoint.hf import save_pretrained

    if not is_fp8_model(model):
        raise FP8Error("the model has no FP8 layers; call quantize_model_fp8(model) before saving it as FP8")
    if kwargs.get("dtype") is not None:
        raise FP8Error("save_fp8_pretrained keeps each tensor's dtype; drop the dtype argument")
    save_pretrained(model, directory, **kwargs)
    path = os.path.join(os.fspath(directory), "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["quantization_config"] = dict(QUANTIZATION_CONFIG, weight_block_size=[_block_of(model)] * 2)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def _block_of(model: nn.Module) -> int:
    return next(m.block for m in model.modules() if isinstance(m, (FP8Linear, FP8Experts)))


def _fp8_keys(directory: str) -> dict[str, tuple[str, bool]]:
    """key -> (file, is e4m3 or a scale) for every tensor of a checkpoint."""
    from glm45.checkpoint.hf import weight_files

    keys = {}
    for path in weight_files(directory):
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                for k in f.keys():
                    keys[k] = (path, k.endswith("weight_scale_inv"))
        except (SafetensorError, OSError) as e:
            raise FP8Error(f"{path}: not a readable safetensors file ({e})") from None
    return keys


def is_fp8_checkpoint(directory: str | os.PathLike) -> bool:
    """True when the checkpoint stores block-scaled FP8 weights."""
    return any(is_scale for _, is_scale in _fp8_keys(os.fspath(directory)).values())


def load_fp8_pretrained(directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint as an FP8 model. The FP8 tensors of an FP8 checkpoint are taken exactly
    as stored; a high-precision checkpoint is quantised on load."""
    from glm45.infer.weights import assign_weights
    from glm45.model import GLM45ForCausalLM

    directory = os.fspath(directory)
    model = GLM45ForCausalLM.from_pretrained(directory, dtype=dtype, device=device)
    quantize_model_fp8(model)
    keys = _fp8_keys(directory)
    with ExitStack() as stack:
        files = {path: stack.enter_context(safe_open(path, framework="pt", device="cpu"))
                 for path in {p for p, _ in keys.values()}}
        exact = {}
        for k, (path, is_scale) in keys.items():
            if is_scale:
                weight_key = k.removesuffix("weight_scale_inv") + "weight"
                if weight_key not in keys:
                    raise FP8Error(f"{directory}: {k} has no {weight_key}")
                exact[k] = files[path].get_tensor(k)
                exact[weight_key] = files[keys[weight_key][0]].get_tensor(weight_key)
        assign_weights(model, exact, strict=False)
    return model.eval()


# ------------------------------------------------------------------------------ accuracy
@torch.no_grad()
def fp8_logit_error(reference: nn.Module, quantized: nn.Module, input_ids: torch.Tensor) -> dict[str, float]:
    """How far an FP8 model's logits are from the high-precision model it came from."""
    a = reference(input_ids).logits.float()
    b = quantized(input_ids).logits.float()
    diff = (a - b).abs()
    kl = F.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return {
        "max_abs_error": diff.max().item(),
        "mean_abs_error": diff.mean().item(),
        "relative_error": (diff.max() / a.abs().max().clamp(min=1e-12)).item(),
        "rms_relative_error": ((a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt().clamp(min=1e-12)).item(),
        "top1_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
        "kl_mean": kl.mean().item(),
    }
