"""GLM45Model and GLM45ForCausalLM: the decoder stack, the output head and the MTP layer.

Shape legend: B batch, T query length, S key length, D model width, V vocabulary.

Masks: with no padding, no segments and no cache, attention is plain causal (SDPA's fast
path). Packed rows (segment ids, no padding mask) attend run by run (`SegmentRuns`).
Otherwise a boolean mask [B, 1, T, S] (True = may attend) is built here from the padding mask
and/or segment ids, or passed in whole by the caller (the inference engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from glm45.config import ModelConfig
from glm45.model.layers import MLP, Attention, KVCacheLike, RMSNorm, RotaryEmbedding, SegmentRuns
from glm45.model.linear_ce import linear_cross_entropy
from glm45.model.moe import MoE, RouterStats


@dataclass
class CausalLMOutput:
    logits: torch.Tensor | None  # [B, T, V] (or the last `logits_to_keep` positions)
    hidden_states: torch.Tensor  # [B, T, D] after the final norm (what the MTP layer consumes)
    mtp_logits: torch.Tensor | None = None  # [B, T, V]: position t predicts token t+2
    loss_sum: torch.Tensor | None = None  # with `targets`: fp32 sum of the next-token CE (no logits kept)
    mtp_loss_sum: torch.Tensor | None = None  # with `mtp_targets`: the same for the MTP head
    router_stats: list[RouterStats] = field(default_factory=list)  # MoE layers in order, MTP last

    @property
    def expert_load(self) -> torch.Tensor | None:
        """[num MoE layers (+ MTP), E] token counts per expert."""
        if not self.router_stats:
            return None
        return torch.stack([s.load_E for s in self.router_stats])


class DecoderLayer(nn.Module):
    """Pre-norm attention + (dense MLP | MoE)."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.is_moe = config.is_moe_layer(layer_idx)
        self.mlp = MoE(config) if self.is_moe else MLP(config.hidden_size, config.intermediate_size)

    def forward(self, x_BTD, rope, mask, cache=None, want_scores=False):
        x_BTD = x_BTD + self.self_attn(self.input_layernorm(x_BTD), rope, mask, cache)
        h_BTD = self.post_attention_layernorm(x_BTD)
        if self.is_moe:
            y_BTD, stats = self.mlp(h_BTD, want_scores)
            return x_BTD + y_BTD, stats
        return x_BTD + self.mlp(h_BTD), None


def _summed_ce(hidden_BTD: torch.Tensor, weight_VD: torch.Tensor, targets_BT: torch.Tensor, name: str) -> torch.Tensor:
    if targets_BT.shape != hidden_BTD.shape[:2]:
        raise ValueError(f"{name} must be [batch, seq] = {tuple(hidden_BTD.shape[:2])}, got {tuple(targets_BT.shape)}")
    return linear_cross_entropy(hidden_BTD.flatten(0, 1), weight_VD, targets_BT.flatten())


class SharedHead(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class MTPLayer(DecoderLayer):
    """Multi-token prediction: h' = eh_proj([enorm(embed(t+1)); hnorm(h_t)]) -> MoE decoder layer
    -> shared_head, giving logits for token t+2. It has its own embedding and head (as on disk)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config, config.num_hidden_layers)
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.enorm = RMSNorm(d, config.rms_norm_eps)
        self.hnorm = RMSNorm(d, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.shared_head = SharedHead(config)

    def forward(self, hidden_BTD, next_ids_BT, rope, mask, cache=None, want_scores=False, select_BND=None,
                targets_BT=None):
        """(logits, router stats); with `targets_BT`, (summed cross-entropy, router stats) from the
        fused head, computed here so that an FSDP unit holding this layer has its head gathered."""
        e_BTD = self.enorm(self.embed_tokens(next_ids_BT))
        x_BTD = self.eh_proj(torch.cat([e_BTD, self.hnorm(hidden_BTD)], dim=-1))
        x_BTD, stats = super().forward(x_BTD, rope, mask, cache, want_scores)
        if select_BND is not None:  # only these positions need logits
            x_BTD = x_BTD.gather(1, select_BND)
        x_BTD = self.shared_head.norm(x_BTD)
        if targets_BT is not None:
            return _summed_ce(x_BTD, self.shared_head.head.weight, targets_BT, "mtp_targets"), stats
        return self.shared_head.head(x_BTD), stats


def build_attention_mask(position_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor | None,
                         segment_ids_BT: torch.Tensor | None) -> torch.Tensor:
    """[B,1,T,T] bool: causal, within the same segment, keys not padding. Every query may at
    least attend to itself so padded rows stay finite (their outputs are ignored)."""
    B, T = position_ids_BT.shape
    dev = position_ids_BT.device
    allowed = torch.ones(T, T, dtype=torch.bool, device=dev).tril().expand(B, T, T)
    if segment_ids_BT is not None:
        allowed = allowed & (segment_ids_BT.unsqueeze(2) == segment_ids_BT.unsqueeze(1))
    if attention_mask_BT is not None:
        allowed = allowed & attention_mask_BT.bool().unsqueeze(1)
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=dev)
    return allowed.unsqueeze(1)


class GLM45Model(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.head_dim)

    def forward(self, input_ids_BT, position_ids_BT, mask, cache=None, want_scores=False,
                checkpoint_layers=False):
        x_BTD = self.embed_tokens(input_ids_BT)
        rope = self.rotary(position_ids_BT, x_BTD.dtype)
        stats: list[RouterStats] = []
        for layer in self.layers:
            if checkpoint_layers and self.training:
                x_BTD, s = torch.utils.checkpoint.checkpoint(
                    layer, x_BTD, rope, mask, cache, want_scores, use_reentrant=False)
            else:
                x_BTD, s = layer(x_BTD, rope, mask, cache, want_scores)
            if s is not None:
                stats.append(s)
        return self.norm(x_BTD), rope, stats


class GLM45ForCausalLM(nn.Module):
    """The GLM-4.5 causal LM. `model(input_ids)` returns a `CausalLMOutput`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = GLM45Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mtp = MTPLayer(config) if config.num_nextn_predict_layers > 0 else None
        self.gradient_checkpointing = False
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # ----------------------------------------------------------------- weights
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, initializer_range) matrices (output projections scaled down by depth),
        zero biases, unit norms, zero balance bias. The MTP layer starts from the main model's
        embedding and head, which it predicts with."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else seed)
        std = self.config.initializer_range
        depth_std = std / math.sqrt(2 * (self.config.num_hidden_layers + self.config.num_nextn_predict_layers))
        for name, p in self.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if name.endswith("norm.weight") else 0.0)
            else:
                s = depth_std if name.endswith(("o_proj.weight", "down_proj.weight", "down_proj")) else std
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * s)
        for name, b in self.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.zero_()
        if self.mtp is not None:
            self.mtp.embed_tokens.weight.copy_(self.model.embed_tokens.weight)
            self.mtp.shared_head.head.weight.copy_(self.lm_head.weight)

    def set_rope_theta(self, theta: float) -> None:
        """The mid-training RoPE base change (10k -> 1M in the paper)."""
        self.config.rope_theta = float(theta)
        self.model.rotary.set_theta(theta)

    # ----------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, cache: KVCacheLike | None = None,
                return_mtp: bool = False, mtp_input_ids: torch.Tensor | None = None,
                return_router_scores: bool = False, logits_to_keep: int = 0,
                compute_logits: bool = True, targets: torch.Tensor | None = None,
                mtp_targets: torch.Tensor | None = None) -> CausalLMOutput:
        """
        input_ids [B,T]; position_ids default to 0.. per row (counting only real tokens when an
        `attention_mask` [B,T] marks left padding); `segment_ids` [B,T] isolate packed documents;
        `attn_mask` [B,1,T,S] (bool, True = attend) overrides all of that (the engine's path).
        `return_mtp`: also MTP logits, where position t gets token t+1 (`mtp_input_ids`, by
        default input_ids shifted left) and predicts t+2.
        `targets` [B,T]: the token each position must predict (-100: none); the output then
        carries `loss_sum`, the summed cross-entropy, from the fused chunked head
        (`linear_cross_entropy`), and no logits. `mtp_targets` does the same for the MTP head
        (with `return_mtp`): `mtp_loss_sum` instead of `mtp_logits`.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            elif segment_ids is not None:
                position_ids = _positions_within_segments(segment_ids)
            else:
                position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        mask = attn_mask
        if mask is None and attention_mask is None and segment_ids is not None and cache is None:
            mask = SegmentRuns.from_segment_ids(segment_ids)
        elif mask is None and (attention_mask is not None or segment_ids is not None):
            mask = build_attention_mask(position_ids, attention_mask, segment_ids)
        hidden_BTD, rope, stats = self.model(input_ids, position_ids, mask, cache, return_router_scores,
                                             self.gradient_checkpointing)
        logits = loss_sum = None
        if targets is not None:
            loss_sum = _summed_ce(hidden_BTD, self.lm_head.weight, targets, "targets")
        elif compute_logits:
            h = hidden_BTD[:, -logits_to_keep:] if logits_to_keep else hidden_BTD
            logits = self.lm_head(h)
        mtp_logits = mtp_loss_sum = None
        if return_mtp:
            if self.mtp is None:
                raise ValueError("this model has no MTP layer (num_nextn_predict_layers = 0)")
            if mtp_input_ids is None:
                pad = self.config.pad_token_id
                mtp_input_ids = F.pad(input_ids[:, 1:], (0, 1), value=pad)
            mtp_out, mtp_stats = self.mtp(hidden_BTD, mtp_input_ids, rope, mask, cache, return_router_scores,
                                          targets_BT=mtp_targets)
            mtp_logits, mtp_loss_sum = (mtp_out, None) if mtp_targets is None else (None, mtp_out)
            stats.append(mtp_stats)
        elif mtp_targets is not None:
            raise ValueError("mtp_targets needs return_mtp=True")
        return CausalLMOutput(logits=logits, hidden_states=hidden_BTD, mtp_logits=mtp_logits, router_stats=stats,
                              loss_sum=loss_sum, mtp_loss_sum=mtp_loss_sum)

    def mtp_forward(self, hidden_BTD: torch.Tensor, next_ids_BT: torch.Tensor, position_ids_BT: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, cache: KVCacheLike | None = None,
                    logits_index: torch.Tensor | None = None) -> torch.Tensor:
        """MTP logits for drafting: hidden at positions t and the tokens at t+1 -> logits for t+2.

        Every position runs through the layer (its keys/values go to `cache`), but with
        `logits_index` [B, N] (indices into T) only those positions get logits, [B, N, V]:
        a decoder drafting from one position per row skips the head on the others.
        """
        if self.mtp is None:
            raise ValueError("this model has no MTP layer (num_nextn_predict_layers = 0)")
        rope = self.model.rotary(position_ids_BT, hidden_BTD.dtype)
        select = None
        if logits_index is not None:
            select = logits_index.unsqueeze(-1).expand(-1, -1, hidden_BTD.shape[-1])
        logits, _ = self.mtp(hidden_BTD, next_ids_BT, rope, attn_mask, cache, select_BND=select)
        return logits

    # ------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, directory, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                        **kwargs) -> "GLM45ForCausalLM":
        """Load a Hugging Face checkpoint directory (I/O lives in glm45.checkpoint)."""
        from glm45.checkpoint.hf import load_pretrained

        return load_pretrained(directory, dtype=dtype, device=device, **kwargs)

    def save_pretrained(self, directory, **kwargs) -> None:
        from glm45.checkpoint.hf import save_pretrained

        save_pretrained(self, directory, **kwargs)


def _positions_within_segments(segment_ids_BT: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... restarting wherever the segment id changes along a row."""
    B, T = segment_ids_BT.shape
    idx = torch.arange(T, device=segment_ids_BT.device).expand(B, T)
    starts = torch.ones_like(segment_ids_BT, dtype=torch.bool)
    starts[:, 1:] = segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start_idx
