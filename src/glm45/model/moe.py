"""The GLM-4.5 MoE block: sigmoid router with loss-free balance bias, routed experts, shared expert.

Shape legend: N tokens (flattened batch), D model width, E routed experts, K experts per
token, I expert width, M = N*K routed token copies.

The router never updates its own balance bias: it reports per-expert load (and, when asked,
the scores behind the sequence-level balance loss) and the trainer updates the bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glm45.config import ModelConfig
from glm45.model.layers import MLP, in_matmul_dtype, matmul_dtype


@dataclass
class RouterStats:
    """What one MoE forward exposes to the trainer."""

    load_E: torch.Tensor  # tokens routed to each expert (float, detached)
    scores_NE: torch.Tensor | None = None  # sigmoid scores (with grad) for the balance loss
    topk_idx_NK: torch.Tensor | None = None


class Router(nn.Module):
    """Sigmoid scores; bias-corrected group-limited top-k selection; weights from raw scores."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.scaling = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(self.n_experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(self.n_experts, dtype=torch.float32))

    def _apply(self, fn, recurse=True):
        # The balance bias stays fp32 whatever dtype the model is cast to: bf16 would round
        # away the 1e-3 updates of loss-free balancing.
        bias = self.e_score_correction_bias
        out = super()._apply(fn, recurse)
        moved = self.e_score_correction_bias
        self.e_score_correction_bias = (moved.float() if bias.is_meta or moved.is_meta
                                        else bias.to(device=moved.device, dtype=torch.float32))
        return out

    def forward(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits_NE = F.linear(x_ND.float(), self.weight.float())
        scores_NE = logits_NE.sigmoid()
        with torch.no_grad():  # selection is not differentiable; the bias only affects which experts
            choice_NE = scores_NE + self.e_score_correction_bias
            if self.n_group > 1:
                per_group = self.n_experts // self.n_group
                grouped = choice_NE.view(-1, self.n_group, per_group)
                group_score = grouped.topk(2, dim=-1).values.sum(-1)
                keep = group_score.topk(self.topk_group, dim=-1).indices
                group_mask = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep, True)
                choice_NE = choice_NE.masked_fill(
                    ~group_mask.unsqueeze(-1).expand_as(grouped).reshape_as(choice_NE), float("-inf"))
            topk_idx_NK = choice_NE.topk(self.top_k, dim=-1).indices
        weights_NK = scores_NE.gather(1, topk_idx_NK)
        if self.norm_topk_prob:
            weights_NK = weights_NK / (weights_NK.sum(-1, keepdim=True) + 1e-20)
        return weights_NK * self.scaling, topk_idx_NK, scores_NE


class Experts(nn.Module):
    """Routed experts as 3-D weights (one SwiGLU matrix triple per expert).

    Tokens are grouped by expert with one sort, each expert runs dense matmuls on its
    contiguous slice, and results are un-permuted and combined — no per-token Python loop.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        e, i, d = config.n_routed_experts, config.moe_intermediate_size, config.hidden_size
        self.n_experts = e
        self.gate_proj = nn.Parameter(torch.empty(e, i, d))
        self.up_proj = nn.Parameter(torch.empty(e, i, d))
        self.down_proj = nn.Parameter(torch.empty(e, d, i))

    # The two weight accessors let a quantised subclass (glm45.infer.fp8) dequantise on use.
    def expert_weights(self, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expert e's (gate [I, D], up [I, D], down [D, I]) matrices."""
        return self.gate_proj[e], self.up_proj[e], self.down_proj[e]

    def stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All experts' (gate [E, I, D], up [E, I, D], down [E, D, I])."""
        return self.gate_proj, self.up_proj, self.down_proj

    def gathered_weights(self, idx_M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (gate [M, I, D], up [M, I, D], down [M, D, I]) matrices of experts idx_M."""
        return self.gate_proj[idx_M], self.up_proj[idx_M], self.down_proj[idx_M]

    def _trainable_expert_weights(self, dtype: torch.dtype) -> list[tuple[torch.Tensor, ...]]:
        """Every expert's (gate, up, down), cast to `dtype` and split with one op per projection.
        Indexing `gate_proj[e]` per expert makes autograd build a zero-filled gradient of the
        whole [E, I, D] tensor for each expert and add them up; `unbind`'s backward is one
        stack. Casting before the split (under autocast) is one cast per projection, not E."""
        gate, up, down = (w.to(dtype).unbind(0) for w in self.stacked_weights())
        return list(zip(gate, up, down))

    def use_gathered(self, n_rows: int) -> bool:
        """Decoding routes a few tokens: with no more (token, expert) rows than experts, running
        each row on its expert directly beats sorting and per-expert dispatch (the CPU
        grouped_mm loops over every expert, empty or not)."""
        return n_rows <= self.n_experts and not torch.is_grad_enabled()

    def _few_rows_gathered(self, x_ND: torch.Tensor, idx_NK: torch.Tensor) -> torch.Tensor:
        """[N, K, D] outputs of the chosen experts as three batched matmuls over copied weights
        (one kernel each: the accelerator path)."""
        N, K = idx_NK.shape
        gate, up, down = self.gathered_weights(idx_NK.reshape(-1))
        x_M1D = x_ND.repeat_interleave(K, dim=0).unsqueeze(1)
        h_M1I = F.silu(torch.bmm(x_M1D, gate.transpose(1, 2))) * torch.bmm(x_M1D, up.transpose(1, 2))
        return torch.bmm(h_M1I, down.transpose(1, 2)).view(N, K, -1)

    def _few_rows_cpu(self, x_ND: torch.Tensor, idx_NK: torch.Tensor) -> torch.Tensor:
        """[N, K, D] outputs as matrix-vector products on the experts' own weights: on CPU,
        copying the weights costs more than the products (measured 190 us vs 500 us per nano
        layer at batch 1)."""
        N, K = idx_NK.shape
        rows = [_swiglu(x_ND[m // K], *self.expert_weights(e)) for m, e in enumerate(idx_NK.reshape(-1).tolist())]
        return torch.stack(rows).view(N, K, -1)

    def use_grouped_mm(self, x_MD: torch.Tensor) -> bool:
        """One grouped matmul per projection instead of a loop over experts: on CUDA in bf16,
        and on CPU in fp32 when no gradient is needed (the CPU kernel has no backward, and in
        bf16 it measured 6x slower than fp32 on an AVX512-BF16 EPYC). It also avoids the loop's
        host sync on the expert counts."""
        if not hasattr(torch, "_grouped_mm"):
            return False
        if x_MD.is_cuda:
            return x_MD.dtype == torch.bfloat16
        return not torch.is_grad_enabled() and x_MD.dtype == torch.float32

    def _indexed_reduction(self, x_ND: torch.Tensor, idx_NK: torch.Tensor) -> torch.Tensor:
        """[N, K, D] outputs written as multiply-and-sum over the chosen experts' weights: no
        data-dependent shape and no host sync. Eagerly this copies the weights, but a compiler
        (torch.compile) fuses the indexing into the reduction, so each chosen expert's weights
        are read once in place: the compiled decode step's path (2x the eager step at batch 1)."""
        N, K = idx_NK.shape
        gate, up, down = self.gathered_weights(idx_NK.reshape(-1))
        x_M1D = x_ND.repeat_interleave(K, dim=0).unsqueeze(1)
        h_MI = F.silu((gate * x_M1D).sum(-1)) * (up * x_M1D).sum(-1)
        return (down * h_MI.unsqueeze(1)).sum(-1).view(N, K, -1)

    def forward(self, x_ND: torch.Tensor, weights_NK: torch.Tensor, idx_NK: torch.Tensor,
                counts_E: torch.Tensor) -> torch.Tensor:
        N, K = idx_NK.shape
        if torch.compiler.is_compiling() and not torch.is_grad_enabled():
            y_NKD = (self._indexed_reduction(x_ND, idx_NK) if N <= compiled_gather_max_tokens(self.n_experts, K)
                     else self._sorted_outside_the_graph(x_ND, idx_NK, counts_E))
        elif not self.use_gathered(N * K):
            y_NKD = self._sorted_by_expert(x_ND, idx_NK, counts_E)
        elif x_ND.device.type == "cpu":
            y_NKD = self._few_rows_cpu(x_ND, idx_NK)
        else:
            y_NKD = self._few_rows_gathered(x_ND, idx_NK)
        return (y_NKD * weights_NK.unsqueeze(-1).to(y_NKD.dtype)).sum(1)

    @torch.compiler.disable
    def _sorted_outside_the_graph(self, x_ND: torch.Tensor, idx_NK: torch.Tensor,
                                  counts_E: torch.Tensor) -> torch.Tensor:
        """A compiled step's large batch: the experts run eagerly, sorted (a graph break; the
        sorted path's per-expert sizes are data-dependent shapes a graph cannot hold)."""
        return self._sorted_by_expert(x_ND, idx_NK, counts_E)

    def _sorted_by_expert(self, x_ND: torch.Tensor, idx_NK: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """[N, K, D] outputs with rows sorted by expert: one grouped matmul per projection, or
        dense matmuls on each expert's contiguous slice (zero-padded to `row_bucket` rows)."""
        N, D = x_ND.shape
        K = idx_NK.shape[1]
        if self.use_grouped_mm(x_ND):
            order_M = idx_NK.reshape(-1).argsort(stable=True)
            x_MD = x_ND.index_select(0, order_M // K)
            offs = counts_E.cumsum(0).to(torch.int32)
            gate, up, down = self.stacked_weights()
            h = F.silu(torch._grouped_mm(x_MD, gate.transpose(1, 2), offs=offs)) * \
                torch._grouped_mm(x_MD, up.transpose(1, 2), offs=offs)
            y_MD = torch._grouped_mm(h, down.transpose(1, 2), offs=offs)
            # Un-permute into (token, slot) order.
            return torch.empty_like(y_MD).index_copy_(0, order_M, y_MD).view(N, K, D)
        src_P, slot_pos_M, sizes = _padded_layout(idx_NK, counts_E, row_bucket(x_ND))
        # Padding rows read an appended zero row; their outputs are never read back.
        x_PD = torch.cat([x_ND, x_ND.new_zeros(1, D)]).index_select(0, src_P)
        per_expert = self._trainable_expert_weights(matmul_dtype(x_PD)) if torch.is_grad_enabled() else None
        pieces = []
        for e, x_e in enumerate(torch.split(x_PD, sizes)):
            if x_e.shape[0] == 0:
                continue
            pieces.append(_swiglu(x_e, *(per_expert[e] if per_expert else self.expert_weights(e))))
        y_PD = torch.cat(pieces) if pieces else x_PD.new_zeros(0, D)
        return y_PD.index_select(0, slot_pos_M).view(N, K, D)


# A compiled decode step gathers each chosen expert's weights per (token, expert) row while
# there are at most this many rows per expert, and sorts rows by expert beyond it: the gather
# reads one weight triple per row, the sorted path each expert's once plus a graph break.
# tiny model, compiled decode tok/s, gather vs sorted: batch 8 5314 vs 4538, 16 8899 vs 7795,
# 32 12470 vs 12924, 64 14848 vs 17776 (rows per expert 2, 4, 8, 16).
COMPILED_GATHER_ROWS_PER_EXPERT = 4


def compiled_gather_max_tokens(n_experts: int, top_k: int) -> int:
    """The most tokens a compiled forward routes through the gathered-weights path."""
    return COMPILED_GATHER_ROWS_PER_EXPERT * n_experts // top_k


# Rows per expert are rounded up to a multiple of this for bf16/fp16 matmuls on CPU. oneDNN
# builds a kernel for every new matmul shape (~0.5 ms for [M, 256] x [256, 128] here, more than
# the product itself); the data-dependent row counts made most expert matmuls new shapes, and
# its cache (1024 kernels) never warmed. fp32 on CPU runs through MKL, which has no such cost.
CPU_HALF_ROW_BUCKET = 32


def row_bucket(x: torch.Tensor) -> int:
    """The multiple each expert's rows are padded to for matmuls on x (1: no padding)."""
    half = matmul_dtype(x) in (torch.bfloat16, torch.float16)
    return CPU_HALF_ROW_BUCKET if x.device.type == "cpu" and half else 1


def _padded_layout(idx_NK: torch.Tensor, counts_E: torch.Tensor,
                   bucket: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Rows grouped by expert, each expert's group padded to a multiple of `bucket`.

    Returns src_P (the token each of the P rows reads; N for a padding row), slot_pos_M (the
    row that holds each (token, slot) pair, in idx_NK's flattened order) and the per-expert
    group sizes."""
    N, K = idx_NK.shape
    idx_M = idx_NK.reshape(-1)
    order_M = idx_M.argsort(stable=True)
    expert_M = idx_M[order_M]
    padded_E = (counts_E + bucket - 1) // bucket * bucket
    sizes = padded_E.tolist()
    start_E = counts_E.cumsum(0) - counts_E
    padded_start_E = padded_E.cumsum(0) - padded_E
    # the r-th row in expert order sits at its expert's padded start plus its rank within the expert
    pos_M = padded_start_E[expert_M] + torch.arange(idx_M.numel(), device=idx_M.device) - start_E[expert_M]
    slot_pos_M = torch.empty_like(pos_M).index_copy_(0, order_M, pos_M)
    src_P = torch.full((sum(sizes),), N, dtype=torch.long, device=idx_M.device).index_copy_(0, pos_M, order_M // K)
    return src_P, slot_pos_M, sizes


def expert_counts(topk_idx_NK: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Tokens routed to each expert: [E] counts from the top-k indices of N tokens. Not bincount:
    its output shape depends on the data, which a compiled graph cannot hold."""
    idx_M = topk_idx_NK.reshape(-1)
    return torch.zeros(n_experts, dtype=torch.long, device=idx_M.device).index_add_(0, idx_M, torch.ones_like(idx_M))


def _swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """One expert: down(silu(gate x) * up x)."""
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


class MoE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate = Router(config)
        self.experts = Experts(config)
        self.shared_experts = (MLP(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
                               if config.n_shared_experts > 0 else None)

    def forward(self, x_BTD: torch.Tensor, want_scores: bool = False) -> tuple[torch.Tensor, RouterStats]:
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(-1, D)
        weights_NK, idx_NK, scores_NE = self.gate(x_ND)
        counts_E = expert_counts(idx_NK, self.gate.n_experts)
        x_ND = in_matmul_dtype(x_ND)  # once, not per expert and projection (the router reads fp32)
        y_ND = self.experts(x_ND, weights_NK, idx_NK, counts_E)
        if self.shared_experts is not None:
            y_ND = y_ND + self.shared_experts(x_ND)
        stats = RouterStats(load_E=counts_E.float(),
                            scores_NE=scores_NE if want_scores else None,
                            topk_idx_NK=idx_NK if want_scores else None)
        return y_ND.view(B, T, D), stats
