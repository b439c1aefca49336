"""The model's inference fast paths compute what the reference formulations compute."""

import pytest
import torch
import torch.nn.functional as F

from glm45.infer import Engine
from glm45.model import GLM45ForCausalLM
from glm45.model.layers import RMSNorm, RotaryEmbedding
from glm45.model.moe import Experts
from helpers_model import apply_partial_rope, randomize, tiny_config


@pytest.mark.parametrize("rotary, head", [(16, 32), (8, 8), (64, 128)])
def test_rope_tables_equal_the_definition_bitwise(rotary, head):
    emb = RotaryEmbedding(rotary, 10000.0, head)
    pos = torch.randint(0, 600, (2, 5))
    half = torch.arange(0, rotary, 2, dtype=torch.float64)
    angles = pos.double()[..., None] / 10000.0 ** (half / rotary)
    angles = torch.cat([angles, angles], -1)
    x = torch.randn(2, 3, 5, head)
    expected = apply_partial_rope(x, angles.cos().float(), angles.sin().float())
    assert torch.equal(emb(pos, torch.float32).apply(x), expected)


def test_rmsnorm_fp32_path_equals_the_generic_formula_bitwise():
    norm = RMSNorm(48, 1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 7, 48)
    with torch.no_grad():
        assert torch.equal(norm(x), norm.weight * F.rms_norm(x, (48,), None, 1e-5))
    # With autograd recording, torch decomposes the fused op: equal up to rounding.
    assert torch.allclose(norm(x), norm.weight * F.rms_norm(x, (48,), None, 1e-5), atol=1e-6)
    assert norm.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16  # the generic path


def test_grouped_expert_path_equals_the_loop(monkeypatch):
    m = randomize(GLM45ForCausalLM(tiny_config()), seed=61).eval()
    ids = torch.randint(0, 512, (3, 9))
    with torch.no_grad():
        grouped = m(ids).logits
        monkeypatch.setattr(Experts, "use_grouped_mm", lambda self, x: False)
        loop = m(ids).logits
    assert torch.allclose(grouped, loop, atol=1e-6)
    assert m.model.layers[1].mlp.experts.use_grouped_mm(torch.zeros(1, 1)) is False  # patched
    monkeypatch.undo()
    x = torch.zeros(2, 4)
    with torch.no_grad():
        assert m.model.layers[1].mlp.experts.use_grouped_mm(x) == hasattr(torch, "_grouped_mm")
    assert not m.model.layers[1].mlp.experts.use_grouped_mm(x)  # training keeps the loop (no CPU backward)


def test_engine_relayout_of_heads_keeps_values():
    m = randomize(GLM45ForCausalLM(tiny_config()), seed=62).eval()
    ids = torch.randint(0, 512, (2, 6))
    with torch.no_grad():
        before = m(ids).logits
        Engine(m)
        assert not m.lm_head.weight.is_contiguous() and m.lm_head.weight.t().is_contiguous()
        assert torch.allclose(m(ids).logits, before, atol=1e-5)
    assert all(t.is_contiguous() or name.endswith("head.weight") for name, t in m.state_dict().items())
