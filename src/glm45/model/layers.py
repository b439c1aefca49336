"""Building blocks of the GLM-4.5 decoder: RMSNorm, partial RoPE, GQA attention, dense MLP.

Shape legend (suffixes on hot tensors):
  B batch, T query length, S key length (cache + new), D model width, H query heads,
  K key/value heads, E head dim, R rotary dim, F MLP width.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from glm45.config import ModelConfig


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype F.linear computes in for input x: autocast's where it is on, else x's own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def in_matmul_dtype(x: torch.Tensor) -> torch.Tensor:
    """x cast once to the dtype its matmuls will use. Under autocast every F.linear casts an fp32
    input again (weights are cached, inputs are not): a block feeding one input to several
    projections casts it first. A no-op outside autocast."""
    return x.to(matmul_dtype(x))


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back to the input dtype, then scaled by the weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # Same arithmetic in one op (no casts, weight fused): decoding is op-overhead bound.
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)
        return self.weight * normed


class Rope(NamedTuple):
    """Rotary tables for one forward, shared by every layer: head-wide and pre-broadcast, so
    applying them is four ops. `apply` equals the textbook rotate-half RoPE on the first
    `rotary_dim` dims (tests/helpers_model.apply_partial_rope checks it)."""

    cos_B1TE: torch.Tensor  # cos on the rotary dims, 1 on the pass-through dims
    sin_B1TE: torch.Tensor  # -sin on the first rotary half, +sin on the second, 0 elsewhere
    partner_E: torch.Tensor  # each dim's rotate-half partner (itself on pass-through dims)

    def apply(self, x_BHTE: torch.Tensor) -> torch.Tensor:
        return x_BHTE * self.cos_B1TE + x_BHTE.index_select(-1, self.partner_E) * self.sin_B1TE


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the rotary part (first `rotary_dim` dims) of each head.

    Tables are built lazily for the largest position seen, so building a model on the meta
    device allocates nothing, and `set_theta` (the mid-training RoPE base change) is cheap.
    """

    def __init__(self, rotary_dim: int, theta: float, head_dim: int | None = None):
        super().__init__()
        self.rotary_dim = rotary_dim
        self.head_dim = head_dim or rotary_dim
        self.theta = theta
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None
        self._partner: torch.Tensor | None = None

    def set_theta(self, theta: float) -> None:
        self.theta = float(theta)
        self._cos = self._sin = None

    def _build(self, length: int, device: torch.device) -> None:
        R, E = self.rotary_dim, self.head_dim
        half = torch.arange(0, R, 2, dtype=torch.float64, device=device)
        inv_freq = 1.0 / (self.theta ** (half / R))
        pos = torch.arange(length, dtype=torch.float64, device=device)
        angles = torch.outer(pos, inv_freq)  # rotate-half layout: dims i and i + R/2 share a frequency
        cos, sin = angles.cos(), angles.sin()
        passthrough = torch.zeros(length, E - R, dtype=torch.float64, device=device)
        # rotate_half(x) * sin == x[partner] * signed_sin: the sign of rotate_half moves into sin.
        self._cos = torch.cat([cos, cos, passthrough + 1], dim=-1).float()
        self._sin = torch.cat([-sin, sin, passthrough], dim=-1).float()
        idx = torch.arange(E, device=device)
        self._partner = torch.cat([idx[R // 2:R], idx[:R // 2], idx[R:]])

    def reserve(self, length: int, device: torch.device | str) -> None:
        """Build the tables for positions 0..length-1 now. A compiled forward needs this: it
        cannot grow the tables (that reads the largest position back to the host)."""
        if self._cos is None or self._cos.shape[0] < length or self._cos.device != torch.device(device):
            self._build(length, torch.device(device))

    def forward(self, position_ids_BT: torch.Tensor, dtype: torch.dtype) -> Rope:
        if torch.compiler.is_compiling():
            if self._cos is None:
                raise RuntimeError("RotaryEmbedding.reserve(max positions) must run before compiling the model")
        else:
            needed = int(position_ids_BT.max()) + 1 if position_ids_BT.numel() else 1
            if self._cos is None or self._cos.shape[0] < needed or self._cos.device != position_ids_BT.device:
                self._build(max(needed, 256 if self._cos is None else 2 * self._cos.shape[0]), position_ids_BT.device)
        cos = self._cos[position_ids_BT].to(dtype).unsqueeze(1)
        sin = self._sin[position_ids_BT].to(dtype).unsqueeze(1)
        return Rope(cos, sin, self._partner)


# Up to this many tokens, causal attention in bf16 on CPU is faster forward + backward with the
# scores materialised by batched matmuls, a block of queries at a time, than with SDPA's flash
# kernel (B·T 2048, H 8, K 2, E 32, one thread, ms: T 128 13.2 vs 42.5, T 256 20.5 vs 40.1,
# T 512 38.2 vs 71.6, T 1024 66.2 vs 85.0, T 2048 156.5 vs 149.8). It keeps the causal half of
# the B·H·T² bf16 probabilities for backward: 8 MiB per 1024-token row of 8 heads at the limit.
MATERIALISED_MAX_T = 1024
# Query rows per block of the materialised path. Block i's queries attend only to keys up to
# its end, so the masked upper triangle is mostly skipped and each block's scores stay in cache:
# forward + backward at T 256 (B 8): one [T, T] block 32.4 ms, blocks of 128 rows 19.6-20.6,
# of 64 17.5-18.0, of 32 20.3.
MATERIALISED_BLOCK = 64


def _causal_bias(rows: int, start: int, keys: int, dtype: torch.dtype) -> torch.Tensor:
    """[rows, keys] additive mask for queries start..start+rows-1: -inf where the key is later."""
    return torch.full((rows, keys), float("-inf"), dtype=dtype).triu_(start + 1)


def _materialised_causal(q_BHTE: torch.Tensor, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor,
                         dtype: torch.dtype) -> torch.Tensor:
    B, H, T, E = q_BHTE.shape
    K = k_BKTE.shape[1]
    G = H // K
    # each key/value head's G query heads stacked as G·rows rows: one block per (batch, kv head)
    q = q_BHTE.to(dtype).reshape(B * K, G, T, E)
    k, v = k_BKTE.to(dtype).reshape(B * K, T, E), v_BKTE.to(dtype).reshape(B * K, T, E)
    outs = []
    with torch.autocast("cpu", enabled=False):
        for start in range(0, T, MATERIALISED_BLOCK):
            end = min(start + MATERIALISED_BLOCK, T)
            rows = end - start
            bias = _causal_bias(rows, start, end, dtype).repeat(G, 1)
            scores = torch.baddbmm(bias, q[:, :, start:end].reshape(B * K, G * rows, E), k[:, :end].transpose(1, 2),
                                   alpha=E ** -0.5)
            outs.append(torch.bmm(torch.softmax(scores, dim=-1), v[:, :end]).view(B * K, G, rows, E))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.view(B, H, T, E)


def causal_self_attention(q_BHTE: torch.Tensor, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor) -> torch.Tensor:
    """Causal self-attention over T tokens (queries and keys the same T positions), GQA: query
    head h reads key/value head h // (H / K), as `scaled_dot_product_attention(enable_gqa=True)`.
    Short bf16 rows on CPU take the materialised path (above); it rounds the scores to bf16
    before the softmax where the flash kernel keeps them in fp32, about 2x its error against
    fp32 attention (within bf16's resolution)."""
    H, T = q_BHTE.shape[1], q_BHTE.shape[2]
    K = k_BKTE.shape[1]
    dtype = matmul_dtype(q_BHTE)
    if not (q_BHTE.device.type == "cpu" and dtype == torch.bfloat16 and 1 < T <= MATERIALISED_MAX_T
            and k_BKTE.shape[2] == T):
        return F.scaled_dot_product_attention(q_BHTE, k_BKTE, v_BKTE, is_causal=T > 1, enable_gqa=H != K)
    return _materialised_causal(q_BHTE, k_BKTE, v_BKTE, dtype)


class SegmentRuns(NamedTuple):
    """Packed rows as runs of one document each (`segment_ids` constant on a run): attention is
    causal within a run and never crosses runs — exactly the block-diagonal causal mask — but
    computed run by run, so a row costs the sum of its runs' squares instead of a full T×T
    (SDPA with a dense mask skips no block). Packed SFT rows of 1024 tokens: 2.5x faster
    attention forward + backward in fp32."""

    runs: list[list[tuple[int, int]]]  # per row, (start, end) of each run; they tile 0..T

    @classmethod
    def from_segment_ids(cls, segment_ids_BT: torch.Tensor) -> "SegmentRuns":
        B, T = segment_ids_BT.shape
        change = (segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]).nonzero().tolist()  # one host sync
        starts: list[list[int]] = [[0] for _ in range(B)]
        for b, t in change:
            starts[b].append(t + 1)
        return cls([list(zip(row, row[1:] + [T])) for row in starts])

    def attend(self, q_BHTE: torch.Tensor, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor) -> torch.Tensor:
        rows = []
        for b, runs in enumerate(self.runs):
            q, k, v = q_BHTE[b:b + 1], k_BKTE[b:b + 1], v_BKTE[b:b + 1]
            parts = [causal_self_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e]) for s, e in runs]
            rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
        return rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)


class KVCacheLike(Protocol):
    """What attention needs from a KV cache (the inference engine provides one)."""

    def update(self, layer_idx: int, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values; return all keys/values visible to this step ([B,K,S,E])."""
        ...


class Attention(nn.Module):
    """GQA with q/k/v bias (no o bias), per-head QK-Norm before partial RoPE."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        if config.use_qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x_BTD: torch.Tensor, rope: Rope,
                mask: torch.Tensor | SegmentRuns | None, cache: KVCacheLike | None = None) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        x_BTD = in_matmul_dtype(x_BTD)
        q_BTHE = self.q_proj(x_BTD).view(B, T, self.n_heads, self.head_dim)
        k_BTKE = self.k_proj(x_BTD).view(B, T, self.n_kv, self.head_dim)
        v_BKTE = self.v_proj(x_BTD).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q_BTHE, k_BTKE = self.q_norm(q_BTHE), self.k_norm(k_BTKE)
        q_BHTE = rope.apply(q_BTHE.transpose(1, 2))
        k_BKTE = rope.apply(k_BTKE.transpose(1, 2))
        if cache is not None:
            k_BKTE, v_BKTE = cache.update(self.layer_idx, k_BKTE, v_BKTE)
        if isinstance(mask, SegmentRuns):
            out_BHTE = mask.attend(q_BHTE, k_BKTE, v_BKTE)
        elif mask is None:  # plain causal self-attention over these T tokens (the training fast path)
            out_BHTE = causal_self_attention(q_BHTE, k_BKTE, v_BKTE)
        else:
            out_BHTE = F.scaled_dot_product_attention(q_BHTE, k_BKTE, v_BKTE, attn_mask=mask,
                                                      enable_gqa=self.n_heads != self.n_kv)
        return self.o_proj(out_BHTE.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no biases. Dense layers and the shared expert."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = in_matmul_dtype(x)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
