"""Expert load balance: the loss-free bias update and the sequence-level auxiliary loss.

Loss-free balancing (DeepSeek-V3, used by GLM-4.5 with rate 0.001 for the first 15T tokens):
each MoE router adds a per-expert bias to its scores for top-k *selection* only; after every
optimizer step  bias_i += u * sign(mean_load - load_i), from the step's global token counts.
Overloaded experts become less attractive, underloaded ones more.

The sequence-level auxiliary loss (weight 1e-4 in GLM-4.5) guards against extreme imbalance
inside a single sequence; it is DeepSeek-V3's L_Bal = sum_i f_i * P_i, averaged over sequences.

Shape legend: L MoE layers, E routed experts, B sequences, T tokens, K experts per token.
"""

from __future__ import annotations

import re

import torch
import torch.distributed as dist
from torch import Tensor, nn

BIAS_BUFFER_SUFFIX = "e_score_correction_bias"


class BalanceInputError(ValueError):
    """Inputs to a balance function with the wrong shapes or types."""


def _natural_key(name: str) -> list[int | str]:
    # "layers.10" sorts after "layers.9": compare digit runs as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def router_bias_buffers(model: nn.Module) -> dict[str, Tensor]:
    """The routers' bias buffers (names ending `e_score_correction_bias`), ordered by name
    with layer indices compared numerically (main layers, then the `mtp.` layer)."""
    found = {name: buf for name, buf in model.named_buffers() if name.endswith(BIAS_BUFFER_SUFFIX)}
    return {name: found[name] for name in sorted(found, key=_natural_key)}


def global_loads(loads_LE: Tensor) -> Tensor:
    """Sum per-rank expert token counts over the default process group (a copy; the input is
    left alone). Without an initialised process group the counts are already global."""
    loads_LE = loads_LE.detach().to(torch.float32).clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(loads_LE, op=dist.ReduceOp.SUM)
    return loads_LE


@torch.no_grad()
def update_balance_bias(biases: list[Tensor], loads_LE: Tensor, rate: float,
                        reduce: bool = True) -> None:
    """In place: biases[l][i] += rate * sign(mean_i(load[l]) - load[l, i]).

    `loads_LE` holds this step's token counts per layer and expert, on this rank; with
    `reduce` they are summed across ranks first (every rank must call this, so the biases stay
    identical everywhere). A rate of 0 skips the update and the communication.
    """
    if loads_LE.ndim != 2 or loads_LE.shape[0] != len(biases):
        raise BalanceInputError(f"loads must be [L={len(biases)}, E], got shape {tuple(loads_LE.shape)}")
    for layer, bias in enumerate(biases):
        if bias.shape != (loads_LE.shape[1],):
            raise BalanceInputError(
                f"bias {layer} has shape {tuple(bias.shape)}, loads have E={loads_LE.shape[1]} experts")
    if rate == 0.0:
        return
    loads_LE = global_loads(loads_LE) if reduce else loads_LE.detach().to(torch.float32)
    delta_LE = rate * torch.sign(loads_LE.mean(dim=1, keepdim=True) - loads_LE)
    for bias, delta_E in zip(biases, delta_LE):
        bias.add_(delta_E.to(device=bias.device, dtype=bias.dtype))


def max_violation(loads_LE: Tensor) -> Tensor:
    """Per layer: max load / mean load - 1 (0 for a perfectly balanced or empty layer)."""
    if loads_LE.ndim != 2:
        raise BalanceInputError(f"loads must be [L, E], got shape {tuple(loads_LE.shape)}")
    loads_LE = loads_LE.to(torch.float32)
    mean_L = loads_LE.mean(dim=1)
    ratio_L = loads_LE.max(dim=1).values / mean_L.clamp(min=torch.finfo(torch.float32).tiny)
    return torch.where(mean_L > 0, ratio_L - 1.0, torch.zeros_like(mean_L))


def sequence_balance_loss(scores_BTE: Tensor, topk_idx_BTK: Tensor, n_experts: int, top_k: int,
                          mask_BT: Tensor | None = None) -> Tensor:
    """DeepSeek-V3's sequence-wise balance loss (unweighted; the caller multiplies by alpha).

    Per sequence: s'_t = s_t / sum_j s_{t,j} (sigmoid scores normalised per token),
    f_i = E / (K * T) * #{t : i in topk(t)}, P_i = mean_t s'_{t,i}; loss_b = sum_i f_i * P_i.
    Returns the mean over sequences that have at least one unmasked token (masked tokens,
    `mask_BT` False, count in neither T, f nor P). Gradients flow through P only.
    """
    if scores_BTE.ndim != 3 or scores_BTE.shape[-1] != n_experts:
        raise BalanceInputError(f"scores must be [B, T, E={n_experts}], got shape {tuple(scores_BTE.shape)}")
    B, T, E = scores_BTE.shape
    if topk_idx_BTK.shape != (B, T, top_k):
        raise BalanceInputError(f"topk_idx must be [B={B}, T={T}, K={top_k}], got shape {tuple(topk_idx_BTK.shape)}")
    if topk_idx_BTK.dtype.is_floating_point or topk_idx_BTK.dtype == torch.bool:
        raise BalanceInputError(f"topk_idx must hold integer expert indices, got dtype {topk_idx_BTK.dtype}")
    if mask_BT is None:
        mask_BT = torch.ones(B, T, dtype=scores_BTE.dtype, device=scores_BTE.device)
    elif mask_BT.shape != (B, T):
        raise BalanceInputError(f"mask must be [B={B}, T={T}], got shape {tuple(mask_BT.shape)}")
    mask_BT = mask_BT.to(scores_BTE.dtype)

    tokens_B = mask_BT.sum(dim=1)
    denom_B = tokens_B.clamp(min=1.0)
    counts_BE = torch.zeros(B, E, dtype=scores_BTE.dtype, device=scores_BTE.device)
    weights_BTK = mask_BT.unsqueeze(-1).expand(B, T, top_k)
    counts_BE.scatter_add_(1, topk_idx_BTK.reshape(B, T * top_k).long(), weights_BTK.reshape(B, T * top_k))
    f_BE = counts_BE * (E / top_k) / denom_B.unsqueeze(1)

    # Padded positions are replaced before any arithmetic, so whatever they hold (even NaN)
    # reaches neither the loss nor the gradient.
    keep_BT1 = mask_BT.unsqueeze(-1) > 0
    scores_BTE = torch.where(keep_BT1, scores_BTE, torch.ones_like(scores_BTE))
    probs_BTE = scores_BTE / scores_BTE.sum(dim=-1, keepdim=True)
    P_BE = (probs_BTE * mask_BT.unsqueeze(-1)).sum(dim=1) / denom_B.unsqueeze(1)

    loss_B = (f_BE * P_BE).sum(dim=1)
    has_tokens_B = (tokens_B > 0).to(loss_B.dtype)
    return (loss_B * has_tokens_B).sum() / has_tokens_B.sum().clamp(min=1.0)
