import pytest
import torch
import torch.nn.functional as F

from glm45.config import ModelConfig
from glm45.model import GLM45ForCausalLM, build_attention_mask, count_parameters
from glm45.model.params import count_module_parameters
from helpers_model import apply_partial_rope, randomize, tiny_config


def test_mtp_composition_matches_definition():
    cfg = tiny_config()
    m = randomize(GLM45ForCausalLM(cfg), seed=5).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        out = m(ids, return_mtp=True)
        h = out.hidden_states  # after the final norm
        mtp = m.mtp
        x = mtp.eh_proj(torch.cat([mtp.enorm(mtp.embed_tokens(ids[:, 1:])), mtp.hnorm(h[:, :-1])], -1))
        pos = torch.arange(10).expand(2, 10)
        rope = m.model.rotary(pos, x.dtype)
        x = x + mtp.self_attn(mtp.input_layernorm(x), rope, None)
        y, _ = mtp.mlp(mtp.post_attention_layernorm(x))
        expected = mtp.shared_head.head(mtp.shared_head.norm(x + y))
    # Causal attention: the first T-1 positions do not see the padded last one.
    assert torch.allclose(out.mtp_logits[:, :-1], expected, atol=1e-5)
    assert torch.allclose(m.mtp_forward(h[:, :-1], ids[:, 1:], pos), expected, atol=1e-5)


def test_router_uses_bias_for_selection_only():
    cfg = tiny_config(n_group=1, topk_group=1)
    m = GLM45ForCausalLM(cfg).eval()
    router = m.model.layers[1].mlp.gate
    x = torch.randn(32, cfg.hidden_size)
    w0, idx0, scores = router(x)
    with torch.no_grad():
        router.e_score_correction_bias[3] = 10.0  # expert 3 is now always chosen
    w1, idx1, _ = router(x)
    assert (idx1 == 3).any(dim=1).all()
    # The weight given to expert 3 comes from its unbiased score, normalised and scaled.
    pos = (idx1 == 3).nonzero()
    picked = scores.gather(1, idx1)
    expected = picked / picked.sum(-1, keepdim=True) * cfg.routed_scaling_factor
    assert torch.allclose(w1, expected, atol=1e-6)
    assert pos.shape[0] == 32


def test_group_limited_selection_stays_in_top_groups():
    cfg = tiny_config(n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=3)
    m = GLM45ForCausalLM(cfg)
    router = m.model.layers[1].mlp.gate
    x = torch.randn(64, cfg.hidden_size)
    _, idx, scores = router(x)
    group_score = scores.view(64, 4, 2).topk(2, -1).values.sum(-1)
    top_groups = group_score.topk(2, -1).indices
    assert ((idx // 2).unsqueeze(-1) == top_groups.unsqueeze(1)).any(-1).all()


def test_expert_load_counts_every_routed_token():
    cfg = tiny_config()
    m = GLM45ForCausalLM(cfg)
    out = m(torch.randint(0, cfg.vocab_size, (3, 7)), return_mtp=True)
    load = out.expert_load
    assert load.shape == (cfg.num_hidden_layers - cfg.first_k_dense_replace + 1, cfg.n_routed_experts)
    assert torch.all(load.sum(-1) == 3 * 7 * cfg.num_experts_per_tok)


def test_expert_counts_equal_bincount():
    from glm45.model.moe import expert_counts

    idx = torch.randint(0, 16, (50, 4))
    assert torch.equal(expert_counts(idx, 16), torch.bincount(idx.reshape(-1), minlength=16))
    assert torch.equal(expert_counts(torch.tensor([[3, 3]]), 5), torch.tensor([0, 0, 0, 2, 0]))


def test_router_scores_exposed_with_grad():
    cfg = tiny_config()
    m = GLM45ForCausalLM(cfg)
    out = m(torch.randint(0, cfg.vocab_size, (2, 5)), return_router_scores=True)
    s = out.router_stats[0]
    assert s.scores_NE.shape == (10, cfg.n_routed_experts) and s.scores_NE.requires_grad
    assert s.topk_idx_NK.shape == (10, cfg.num_experts_per_tok)


def test_segments_isolate_documents():
    cfg = tiny_config()
    m = randomize(GLM45ForCausalLM(cfg), seed=6).eval()
    a = torch.randint(0, cfg.vocab_size, (1, 5))
    b = torch.randint(0, cfg.vocab_size, (1, 7))
    packed = torch.cat([a, b], 1)
    seg = torch.tensor([[0] * 5 + [1] * 7])
    with torch.no_grad():
        out = m(packed, segment_ids=seg).logits
        assert torch.allclose(out[:, :5], m(a).logits, atol=1e-5)
        assert torch.allclose(out[:, 5:], m(b).logits, atol=1e-5)


def test_packed_rows_attend_run_by_run_exactly_as_the_dense_mask():
    """Segment ids take the run-by-run path (SegmentRuns); it must equal the dense block-diagonal
    causal mask in logits, MTP logits and every gradient — rows with different runs, a run of
    one token, a row that is one run."""
    from glm45.model.glm45 import _positions_within_segments

    cfg = tiny_config()
    m = randomize(GLM45ForCausalLM(cfg), seed=7)
    ids = torch.randint(0, cfg.vocab_size, (3, 12))
    seg = torch.tensor([[0] * 5 + [1] * 7, [0] * 4 + [1] + [2] * 7, [0] * 12])
    pos = _positions_within_segments(seg)
    dense = build_attention_mask(pos, None, seg)

    def run(**kw):
        m.zero_grad()
        out = m(ids, position_ids=pos, return_mtp=True, **kw)
        (out.logits.square().mean() + out.mtp_logits.square().mean()).backward()
        return out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    runs, runs_grads = run(segment_ids=seg)
    full, full_grads = run(attn_mask=dense)
    assert torch.allclose(runs.logits, full.logits, atol=1e-5)
    assert torch.allclose(runs.mtp_logits, full.mtp_logits, atol=1e-5)
    assert runs_grads.keys() == full_grads.keys()
    for name in full_grads:
        assert torch.allclose(runs_grads[name], full_grads[name], atol=1e-5), name


@pytest.mark.parametrize("T", [2, 17, 100, 256, 600])  # several query blocks, the last one short
def test_materialised_bf16_attention_matches_fp32_attention_within_bf16_rounding(T):
    """Short bf16 rows on CPU take the batched-matmul path instead of SDPA: outputs and every
    gradient must stay as close to fp32 attention as SDPA's own bf16 kernel is (GQA, causal)."""
    from glm45.model.layers import MATERIALISED_MAX_T, causal_self_attention

    assert T <= MATERIALISED_MAX_T
    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 8, T, 16, generator=g, requires_grad=True),
               torch.randn(2, 2, T, 16, generator=g, requires_grad=True),
               torch.randn(2, 2, T, 16, generator=g, requires_grad=True))
    grad_out = torch.randn(2, 8, T, 16, generator=g)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    assert torch.equal(causal_self_attention(q, k, v), ref)  # fp32 is SDPA itself
    def sdpa(*qkv):
        return F.scaled_dot_product_attention(*qkv, is_causal=True, enable_gqa=True)

    for attend in (causal_self_attention, sdpa):  # the bound holds for SDPA's own bf16 kernel too
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attend(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
        assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.05
        for got, want in zip(grads, ref_grads):
            assert (got.float() - want).norm() / want.norm() < 0.015


def test_partial_rope_rotates_first_half_only_neox_style():
    x = torch.randn(1, 1, 3, 8)
    pos = torch.arange(3).unsqueeze(0)
    rot = 4
    inv = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    ang = pos[0, :, None].float() * inv
    cos, sin = torch.cat([ang, ang], -1).cos()[None], torch.cat([ang, ang], -1).sin()[None]
    y = apply_partial_rope(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:])
    # Pair (i, i + rot/2) rotates as a complex number by angle pos * inv[i].
    for i in range(rot // 2):
        z = torch.complex(x[..., i], x[..., i + rot // 2]) * torch.polar(torch.ones_like(ang[:, i]), ang[:, i])
        assert torch.allclose(y[..., i], z.real, atol=1e-6)
        assert torch.allclose(y[..., i + rot // 2], z.imag, atol=1e-6)


def test_rope_theta_change_changes_outputs():
    cfg = tiny_config()
    m = randomize(GLM45ForCausalLM(cfg)).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 20))
    with torch.no_grad():
        a = m(ids).logits
        m.set_rope_theta(1_000_000.0)
        b = m(ids).logits
    assert m.config.rope_theta == 1_000_000.0
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-5)  # position 0 is not rotated
    assert not torch.allclose(a[:, -1], b[:, -1], atol=1e-4)


def test_backward_reaches_every_parameter_in_bf16_autocast():
    cfg = tiny_config()
    m = GLM45ForCausalLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(ids, return_mtp=True)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), ids.flatten()) + \
            F.cross_entropy(out.mtp_logits.float().flatten(0, 1), ids.flatten())
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    # Embeddings of unseen tokens still get (zero) grads; the router and experts must get real ones.
    assert no_grad == []
    assert m.model.layers[1].mlp.gate.weight.grad.abs().sum() > 0
    assert m.model.layers[1].mlp.experts.down_proj.grad.abs().sum() > 0


def test_activation_checkpointing_gives_same_gradients():
    cfg = tiny_config()
    m = randomize(GLM45ForCausalLM(cfg))
    ids = torch.randint(0, cfg.vocab_size, (2, 8))
    grads = []
    for ckpt in (False, True):
        m.zero_grad()
        m.gradient_checkpointing = ckpt
        m(ids).logits.sum().backward()
        grads.append(m.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_parameter_counts_match_table1_and_live_modules():
    full = count_parameters(ModelConfig.preset("glm-4.5"))
    assert round(full["total"] / 1e9) == 355 and round(full["active"] / 1e9) == 32
    air = count_parameters(ModelConfig.preset("glm-4.5-air"))
    assert round(air["total"] / 1e9) == 108 and round(air["active"] / 1e9) == 12
    with torch.device("meta"):  # the full model builds without allocating
        big = GLM45ForCausalLM(ModelConfig.preset("glm-4.5"))
    assert count_module_parameters(big)["total"] == full["total"]
    cfg = tiny_config()
    assert count_module_parameters(GLM45ForCausalLM(cfg))["total"] == count_parameters(cfg)["total"]


def test_bad_input_shape_is_a_clear_error():
    m = GLM45ForCausalLM(tiny_config())
    with pytest.raises(ValueError, match="input_ids must be"):
        m(torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("n_tokens", [1, 3, 40])
def test_expert_dispatch_paths_agree(n_tokens):
    """Decoding (few rows: per-row on CPU, gathered batched matmul elsewhere), no-grad grouped and loop paths
    compute the same MoE output as the definition: sum over chosen experts of w * SwiGLU_e(x)."""
    from glm45.model.moe import Experts

    cfg = tiny_config()
    experts = Experts(cfg)
    for p in experts.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(n_tokens, cfg.hidden_size)
    k = cfg.num_experts_per_tok
    idx = torch.stack([torch.randperm(cfg.n_routed_experts)[:k] for _ in range(n_tokens)])
    w = torch.rand(n_tokens, k)
    counts = torch.bincount(idx.reshape(-1), minlength=cfg.n_routed_experts)
    want = torch.zeros(n_tokens, cfg.hidden_size)
    for t in range(n_tokens):
        for j in range(k):
            g, u, d = experts.expert_weights(int(idx[t, j]))
            want[t] += w[t, j] * F.linear(F.silu(F.linear(x[t], g)) * F.linear(x[t], u), d)
    with torch.no_grad():
        assert experts.use_gathered(n_tokens * k) == (n_tokens * k <= cfg.n_routed_experts)
        fast = experts(x, w, idx, counts)
        gathered = experts._few_rows_gathered(x, idx)
        reduced = experts._indexed_reduction(x, idx)  # the compiled decode step's formulation
    loop = experts(x, w, idx, counts)  # grad enabled: the per-expert loop
    torch.testing.assert_close(fast, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((gathered * w.unsqueeze(-1)).sum(1), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((reduced * w.unsqueeze(-1)).sum(1), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loop.detach(), want, rtol=1e-5, atol=1e-5)


def test_padded_expert_layout_puts_every_slot_on_its_experts_rows():
    from glm45.model.moe import _padded_layout, expert_counts

    g = torch.Generator().manual_seed(0)
    n, k, e, bucket = 37, 3, 6, 8
    idx = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(n)])
    idx[:, 0] = 2  # one expert gets a row count that is not a multiple of the bucket
    counts = expert_counts(idx, e)
    src, slot_pos, sizes = _padded_layout(idx, counts, bucket)
    assert all(s % bucket == 0 and s - bucket < c <= s or s == c == 0 for s, c in zip(sizes, counts.tolist()))
    assert src.numel() == sum(sizes)
    starts = torch.tensor([0, *sizes]).cumsum(0)
    expert_of_row = torch.bucketize(torch.arange(src.numel()), starts[1:], right=True)
    tokens = torch.arange(n).repeat_interleave(k)
    assert torch.equal(src[slot_pos], tokens)  # each (token, slot) row reads its token
    assert torch.equal(expert_of_row[slot_pos], idx.reshape(-1))  # and sits in its expert's group
    padding = torch.ones(src.numel(), dtype=torch.bool)
    padding[slot_pos] = False
    assert (src[padding] == n).all() and int(padding.sum()) == sum(sizes) - n * k


def test_bf16_expert_rows_padded_to_a_bucket_give_the_unpadded_outputs_and_gradients(monkeypatch):
    from glm45.model import moe

    cfg = tiny_config()
    experts = moe.Experts(cfg)
    for p in experts.parameters():
        torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(1)
    n, k = 45, cfg.num_experts_per_tok
    x = torch.randn(n, cfg.hidden_size, generator=g)
    idx = torch.stack([torch.randperm(cfg.n_routed_experts, generator=g)[:k] for _ in range(n)])
    w = torch.rand(n, k, generator=g)
    counts = moe.expert_counts(idx, cfg.n_routed_experts)

    def run(bucket):
        monkeypatch.setattr(moe, "CPU_HALF_ROW_BUCKET", bucket)
        xx = x.clone().requires_grad_()
        experts.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert moe.row_bucket(xx) == bucket
            y = experts(xx, w, idx, counts)
        y.float().square().sum().backward()
        return y.detach().float(), xx.grad, [p.grad.clone() for p in experts.parameters()]

    y16, gx16, gw16 = run(16)
    y1, gx1, gw1 = run(1)
    torch.testing.assert_close(y16, y1, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(gx16, gx1, rtol=1e-2, atol=1e-3)
    for a, b in zip(gw16, gw1):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    assert moe.row_bucket(x) == 1  # fp32 outside autocast: MKL, no padding
