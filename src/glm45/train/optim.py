"""Muon + AdamW in one optimizer, as in GLM-4.5 §2.4.

Muon (momentum 0.95 with Nesterov, 5 quintic Newton–Schulz steps, update RMS matched to
0.2) trains every matrix; AdamW (betas 0.9/0.95, eps 1e-8) trains word embeddings, output
layers, biases and norm weights. Both live in one `torch.optim.Optimizer` whose param
groups carry `use_muon`, so LR schedulers, `zero_grad` and `state_dict` work unchanged and
a checkpoint resumes exactly.

Conventions follow `torch.optim.Muon` (torch 2.13) so that a plain 2-D matrix gets the same
update bit for bit (with `ns_dtype="bfloat16"`):
  * momentum as an EMA: buf = lerp(buf, g, 1 - mu); Nesterov update = lerp(g, buf, mu);
  * Newton–Schulz on X / max(||X||_F, 1e-7), transposed so rows <= cols;
  * weight decay p *= 1 - lr * wd with the *unadjusted* lr, then p -= lr * 0.2 * sqrt(max(A, B)) * O.
Expert weights are 3-D [E, A, B]: each expert's matrix is orthogonalised on its own, batched
over the leading dims (one batched matmul chain, no per-expert loop), and A, B are the
trailing two dims.

FSDP2 (`fully_shard`) parameters are DTensors. Newton–Schulz needs a whole matrix, so:
  * if every mesh dim is Replicate or shards a *batch* dim (dim < ndim - 2, e.g. FSDP2's
    Shard(0) of a 3-D expert tensor, which gives each rank whole experts), each rank
    orthogonalises its local shard directly — no communication, same result;
  * otherwise (e.g. Shard(0) of a 2-D matrix) the update is gathered with `.full_tensor()`,
    every rank orthogonalises the full matrix (redundant but communication-light: one
    all-gather), and each rank keeps its own shard via `distribute_tensor(...,
    src_data_rank=None)`, which slices locally without a scatter.
Momentum, weight decay and AdamW are elementwise and run on the local shards as DTensor ops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

# Quintic Newton–Schulz coefficients (Keller Jordan's Muon; torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7  # torch.optim.Muon's clamp on the Frobenius norm
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}

# Matrices that AdamW trains: word embeddings and output layers (main and MTP).
ADAMW_MATRIX_SUFFIXES = ("embed_tokens.weight", "lm_head.weight", "shared_head.head.weight")


class OptimizerConfigError(ValueError):
    """An optimizer setting or parameter that Muon/AdamW cannot use."""


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """Approximately orthogonalise the trailing 2-D matrices of `G` (shape [..., A, B]).

    Returns a tensor of `dtype` and G's shape. Each matrix is normalised by its own Frobenius
    norm, so batched and per-matrix calls agree.
    """
    if G.ndim < 2:
        raise OptimizerConfigError(f"Newton–Schulz needs a matrix, got shape {tuple(G.shape)}")
    a, b, c = coefficients
    shape = G.shape
    X = G.to(dtype).reshape(-1, shape[-2], shape[-1])
    transpose = shape[-2] > shape[-1]
    if transpose:  # iterate on the smaller Gram matrix
        X = X.mT
    X = X / torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    if transpose:
        X = X.mT
    return X.reshape(shape)


def _is_dtensor(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def orthogonalize(update: Tensor, steps: int, coefficients: tuple[float, float, float],
                  eps: float, dtype: torch.dtype) -> Tensor:
    """Newton–Schulz of a plain tensor or a DTensor (see the module docstring for the latter)."""
    if not _is_dtensor(update):
        return newton_schulz(update, steps, coefficients, eps, dtype)
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    matrix_dims = (update.ndim - 2, update.ndim - 1)
    local_ok = all(
        isinstance(pl, Replicate) or (isinstance(pl, Shard) and pl.dim not in matrix_dims)
        for pl in update.placements
    )
    if local_ok:
        out = newton_schulz(update.to_local(), steps, coefficients, eps, dtype)
        return DTensor.from_local(out, update.device_mesh, update.placements,
                                  shape=update.shape, stride=update.stride())
    full = newton_schulz(update.full_tensor(), steps, coefficients, eps, dtype)
    return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)


def muon_lr_scale(shape: torch.Size, update_rms: float) -> float:
    """Factor that gives the orthogonalised update an RMS of `update_rms` (Moonlight's rule,
    torch's "match_rms_adamw"): update_rms * sqrt(max(A, B)) over a matrix's trailing dims."""
    return update_rms * math.sqrt(max(shape[-2], shape[-1]))


class MuonAdamW(torch.optim.Optimizer):
    """Muon for groups with `use_muon=True`, AdamW for the rest.

    Group keys: lr, weight_decay, use_muon; Muon: momentum, nesterov, ns_steps,
    ns_coefficients, ns_eps, ns_dtype ("bfloat16" | "float32"), update_rms; AdamW: betas, eps.
    `lr_ratio` (read by glm45.train.schedules.apply_lr) scales a group's LR against the schedule.
    """

    def __init__(self, params: Iterable[dict[str, Any]], lr: float, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 ns_eps: float = NS_EPS, ns_dtype: str = "bfloat16", update_rms: float = 0.2,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, use_muon=False, lr_ratio=1.0,
                        momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        ns_coefficients=tuple(ns_coefficients), ns_eps=ns_eps, ns_dtype=ns_dtype,
                        update_rms=update_rms, betas=tuple(betas), eps=eps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._check_group(group)

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise OptimizerConfigError(f"MuonAdamW param group {group.get('name', '?')!r}: {msg}")

        need(group["lr"] >= 0, f"lr must be >= 0, got {group['lr']}")
        need(group["weight_decay"] >= 0, f"weight_decay must be >= 0, got {group['weight_decay']}")
        if group["use_muon"]:
            need(0 <= group["momentum"] < 1, f"momentum must lie in [0, 1), got {group['momentum']}")
            need(group["ns_dtype"] in NS_DTYPES,
                 f"ns_dtype must be one of {sorted(NS_DTYPES)}, got {group['ns_dtype']!r}")
            need(1 <= group["ns_steps"] < 100, f"ns_steps must lie in [1, 100), got {group['ns_steps']}")
            need(len(group["ns_coefficients"]) == 3, "ns_coefficients needs exactly 3 values")
            need(group["update_rms"] > 0, f"update_rms must be > 0, got {group['update_rms']}")
            for p in group["params"]:
                need(p.ndim >= 2, f"Muon needs matrices (ndim >= 2), got a parameter of shape {tuple(p.shape)}")
        else:
            b1, b2 = group["betas"]
            need(0 <= b1 < 1 and 0 <= b2 < 1, f"betas must lie in [0, 1), got {group['betas']}")
            need(group["eps"] > 0, f"eps must be > 0, got {group['eps']}")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_group(group)
            else:
                self._adamw_group(group)
        return loss

    def _muon_group(self, group: dict[str, Any]) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        dtype = NS_DTYPES[group["ns_dtype"]]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - mu)
            update = grad.lerp(buf, mu) if group["nesterov"] else buf
            ortho = orthogonalize(update, group["ns_steps"], group["ns_coefficients"],
                                  group["ns_eps"], dtype)
            p.mul_(1 - lr * wd)
            p.add_(ortho, alpha=-lr * muon_lr_scale(p.shape, group["update_rms"]))

    def _adamw_group(self, group: dict[str, Any]) -> None:
        # Same arithmetic as torch.optim.AdamW's single-tensor path (foreach=False).
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "step" not in state:
                # "step" is kept a CPU float tensor: Optimizer.load_state_dict leaves that key alone.
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            step = state["step"].item()
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            p.mul_(1 - lr * wd)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def uses_muon(name: str, param: Tensor) -> bool:
    """Muon for matrices (ndim >= 2) except word embeddings and output layers."""
    return param.ndim >= 2 and not name.endswith(ADAMW_MATRIX_SUFFIXES)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                    adamw_lr: float | None = None, *, decay_vectors: bool = False,
                    momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                    ns_dtype: str = "bfloat16", update_rms: float = 0.2,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> MuonAdamW:
    """One optimizer for the whole model, with up to three param groups:

    * "muon": every matrix (incl. the router, MTP eh_proj and 3-D expert weights);
    * "adamw": word embeddings and output layers, with weight decay;
    * "adamw_vectors": biases and norm weights (ndim 1), without weight decay unless
      `decay_vectors` — Megatron's default, which GLM-4.5 was trained with.

    `adamw_lr` defaults to `lr` (RMS matching lets Muon reuse AdamW's LR); the AdamW groups
    carry lr_ratio = adamw_lr / lr so a schedule scales both together.
    """
    if lr <= 0:
        raise OptimizerConfigError(f"lr must be > 0, got {lr}")
    adamw_lr = lr if adamw_lr is None else adamw_lr
    muon, adamw, vectors = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if uses_muon(name, p):
            muon.append(p)
        elif p.ndim >= 2:
            adamw.append(p)
        else:
            vectors.append(p)
    groups = [
        dict(name="muon", params=muon, use_muon=True, lr=lr, lr_ratio=1.0, weight_decay=weight_decay),
        dict(name="adamw", params=adamw, use_muon=False, lr=adamw_lr, lr_ratio=adamw_lr / lr,
             weight_decay=weight_decay),
        dict(name="adamw_vectors", params=vectors, use_muon=False, lr=adamw_lr,
             lr_ratio=adamw_lr / lr, weight_decay=weight_decay if decay_vectors else 0.0),
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise OptimizerConfigError("the model has no trainable parameters")
    return MuonAdamW(groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                     nesterov=nesterov, ns_steps=ns_steps, ns_dtype=ns_dtype,
                     update_rms=update_rms, betas=betas, eps=eps)
