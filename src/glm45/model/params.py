"""Parameter counts with the paper's Table 1 convention: the MTP layer counts; word embeddings
and output layers (the main ones and the MTP layer's copies) do not."""

from __future__ import annotations

from glm45.config import ModelConfig


def _attention(c: ModelConfig) -> int:
    q = c.hidden_size * c.num_attention_heads * c.head_dim
    kv = 2 * c.hidden_size * c.num_key_value_heads * c.head_dim
    bias = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim if c.attention_bias else 0
    o = c.num_attention_heads * c.head_dim * c.hidden_size
    qk_norm = 2 * c.head_dim if c.use_qk_norm else 0
    return q + kv + bias + o + qk_norm


def _moe(c: ModelConfig, experts: int) -> int:
    per_expert = 3 * c.hidden_size * c.moe_intermediate_size
    shared = 3 * c.hidden_size * c.moe_intermediate_size * c.n_shared_experts
    router = c.n_routed_experts * c.hidden_size
    return experts * per_expert + shared + router


def count_parameters(config: ModelConfig) -> dict[str, int]:
    """{"total", "active"}: active counts only `num_experts_per_tok` routed experts per MoE layer."""
    c = config
    norms = 2 * c.hidden_size
    dense_layer = _attention(c) + norms + 3 * c.hidden_size * c.intermediate_size
    n_dense = c.first_k_dense_replace
    n_moe = c.num_hidden_layers - n_dense
    mtp_extra = 2 * c.hidden_size * c.hidden_size + 3 * c.hidden_size  # eh_proj, enorm, hnorm, head norm
    totals = {}
    for key, experts in (("total", c.n_routed_experts), ("active", c.num_experts_per_tok)):
        moe_layer = _attention(c) + norms + _moe(c, experts)
        n = n_dense * dense_layer + n_moe * moe_layer + c.hidden_size  # + final norm
        n += c.num_nextn_predict_layers * (moe_layer + mtp_extra)
        totals[key] = n
    return totals


def count_module_parameters(model) -> dict[str, int]:
    """The same convention, counted on a live module (used to check count_parameters)."""
    excluded = ("embed_tokens.weight", "lm_head.weight", "shared_head.head.weight")
    return {"total": sum(p.numel() for n, p in model.named_parameters() if not n.endswith(excluded))}
