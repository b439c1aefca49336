"""Numerical parity with transformers' Glm4MoeForCausalLM through real checkpoint files."""

import pytest
import torch
import transformers

from glm45.model import GLM45ForCausalLM
from helpers_model import randomize, tiny_config

CASES = {
    "qknorm_groups_scaled": dict(use_qk_norm=True, n_group=2, topk_group=1, routed_scaling_factor=2.5),
    "no_qknorm_unnormed": dict(use_qk_norm=False, norm_topk_prob=False, routed_scaling_factor=1.0),
    "many_dense_layers": dict(num_hidden_layers=4, first_k_dense_replace=2, n_group=4, topk_group=2,
                              n_routed_experts=8, num_experts_per_tok=3),
    "head_dim_not_hidden_over_heads": dict(head_dim=24, num_attention_heads=6, num_key_value_heads=3),
}


def _hf_from_dir(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_glm45_checkpoint_loads_in_transformers(case, tmp_path):
    cfg = tiny_config(**CASES[case])
    ours = randomize(GLM45ForCausalLM(cfg), seed=1).eval()
    ours.save_pretrained(tmp_path / "ckpt")
    hf = _hf_from_dir(tmp_path / "ckpt")
    ids = torch.randint(0, cfg.vocab_size, (2, 17))
    with torch.no_grad():
        a = ours(ids).logits
        b = hf(input_ids=ids).logits
    assert (a - b).abs().max().item() <= 1e-4


@pytest.mark.parametrize("case", sorted(CASES))
def test_transformers_checkpoint_loads_in_glm45(case, tmp_path):
    cfg = tiny_config(**CASES[case])
    hf_cfg = transformers.Glm4MoeConfig(**{k: v for k, v in cfg.to_hf().items()
                                           if k not in ("architectures", "model_type")})
    torch.manual_seed(3)
    hf = transformers.Glm4MoeForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # transformers inits biases, norms and the balance bias to constants
        for name, p in hf.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
        for name, b in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn_like(b))
    hf.save_pretrained(tmp_path / "hf")
    with pytest.warns(UserWarning, match="no model.layers"):
        ours = GLM45ForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (2, 13))
    with torch.no_grad():
        assert (ours(ids).logits - hf(input_ids=ids).logits).abs().max().item() <= 1e-4


def test_left_padded_batch_matches_transformers_and_unpadded_rows(tmp_path):
    cfg = tiny_config()
    ours = randomize(GLM45ForCausalLM(cfg), seed=2).eval()
    ours.save_pretrained(tmp_path / "ckpt")
    hf = _hf_from_dir(tmp_path / "ckpt")
    ids = torch.randint(1, cfg.vocab_size, (3, 12))
    attn = torch.ones_like(ids)
    attn[1, :4] = 0
    attn[2, :7] = 0
    ids = ids.masked_fill(attn == 0, cfg.pad_token_id)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = ours(ids, attention_mask=attn).logits
        b = hf(input_ids=ids, attention_mask=attn, position_ids=pos).logits
        real = attn.bool()
        assert (a[real] - b[real]).abs().max().item() <= 1e-4
        for row in range(3):  # a padded row equals the same tokens run alone
            alone = ours(ids[row:row + 1, real[row]]).logits[0]
            assert (a[row, real[row]] - alone).abs().max().item() <= 1e-4


def test_bf16_forward_close_to_transformers(tmp_path):
    cfg = tiny_config()
    ours = randomize(GLM45ForCausalLM(cfg), seed=4).eval()
    ours.save_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    ours_bf16 = GLM45ForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert ours_bf16.lm_head.weight.dtype == torch.bfloat16
    assert ours_bf16.model.layers[1].mlp.gate.e_score_correction_bias.dtype == torch.float32
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        a, b = ours_bf16(ids).logits.float(), hf(input_ids=ids).logits.float()
    assert (a - b).abs().max().item() <= 0.1 * b.abs().max().item()


def test_training_gradients_match_transformers(tmp_path):
    """Backward parity: the same loss gives the same gradients in every parameter (experts
    through transformers' fused gate_up_proj layout), so glm45 trains what transformers trains."""
    import torch.nn.functional as F

    cfg = tiny_config(n_group=2, topk_group=1, routed_scaling_factor=2.5)
    ours = randomize(GLM45ForCausalLM(cfg), seed=4).train()
    ours.save_pretrained(tmp_path / "ckpt")
    hf = _hf_from_dir(tmp_path / "ckpt").train()
    ids = torch.randint(0, cfg.vocab_size, (2, 15))

    def loss(logits):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())

    loss(ours(ids).logits).backward()
    loss(hf(input_ids=ids).logits).backward()
    theirs = dict(hf.named_parameters())
    checked = 0
    for name, p in ours.named_parameters():
        if name.startswith("mtp."):
            continue  # transformers does not run the MTP layer
        if name.endswith("experts.gate_proj") or name.endswith("experts.up_proj"):
            fused = theirs[name.rsplit(".", 1)[0] + ".gate_up_proj"].grad
            ref = fused.chunk(2, dim=1)[0 if name.endswith("gate_proj") else 1]
        else:
            ref = theirs[name].grad
        assert p.grad is not None and ref is not None, name
        assert (p.grad - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item()), name
        checked += 1
    assert checked > 20
