"""FP8 weights: quantisation error bounds, FP8 checkpoints, running and updating FP8 models."""

import copy
import json

import pytest
import torch
from safetensors import safe_open

from glm45.checkpoint.fp8 import BLOCK, FP8_MAX, dequantize_blockwise
from glm45.infer import (Engine, FP8Experts, FP8Linear, SamplingParams, fp8_logit_error, is_fp8_model,
                         load_fp8_pretrained, quantize_model_fp8, save_fp8_pretrained)
from glm45.infer.fp8 import FP8Error, is_fp8_checkpoint
from glm45.model import GLM45ForCausalLM
from glm45.model.moe import Router
from helpers_model import randomize, tiny_config

FP8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def pair():
    ref = randomize(GLM45ForCausalLM(tiny_config(hidden_size=160, moe_intermediate_size=48)), seed=31).eval()
    return ref, quantize_model_fp8(copy.deepcopy(ref))


def test_only_linear_weights_become_fp8(pair):
    ref, q = pair
    assert is_fp8_model(q) and not is_fp8_model(ref)
    n_lin = sum(isinstance(m, FP8Linear) for m in q.modules())
    assert n_lin == 4 * 4 + 3 + 3 * 3 + 1  # attention (3 layers + MTP), dense MLP, 3 shared experts, eh_proj
    assert sum(isinstance(m, FP8Experts) for m in q.modules()) == 3
    kept = dict(q.named_parameters())
    for name in ("lm_head.weight", "mtp.shared_head.head.weight", "model.embed_tokens.weight",
                 "mtp.embed_tokens.weight", "model.norm.weight", "model.layers.1.mlp.gate.weight"):
        assert kept[name].dtype == torch.float32
    assert isinstance(q.model.layers[1].mlp.gate, Router)
    lin = q.model.layers[0].mlp.down_proj  # 160 x 128: a full and a partial block of rows
    assert lin.weight.dtype == FP8 and lin.weight_scale_inv.shape == (2, 1)
    assert q.model.layers[1].mlp.experts.gate_proj_scale_inv.shape == (8, 1, 2)


def test_blockwise_error_bound_and_scale_definition(pair):
    ref, q = pair
    w = ref.model.layers[0].mlp.up_proj.weight
    lin = q.model.layers[0].mlp.up_proj
    # scale_inv = block amax / 448, so each block's largest magnitude maps to 448 exactly.
    amax = w.detach().abs()[:BLOCK, :BLOCK].max()
    assert lin.weight_scale_inv[0, 0].item() == pytest.approx(amax.item() / FP8_MAX, rel=1e-6)
    deq = lin.dequantized(torch.float32)
    scale = lin.weight_scale_inv.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:w.shape[0], :w.shape[1]]
    # e4m3: 3 mantissa bits (relative step 2^-3, so rounding error <= 2^-4) and subnormal step 2^-9.
    bound = w.detach().abs() * 2 ** -4 + scale * 2 ** -10 + 1e-12
    assert ((w - deq).abs() <= bound).all()


def test_logit_error_against_source_weights(pair):
    ref, q = pair
    ids = torch.randint(0, ref.config.vocab_size, (2, 24))
    err = fp8_logit_error(ref, q, ids)
    assert err["rms_relative_error"] < 0.08
    assert err["kl_mean"] < 1e-3
    assert err["top1_agreement"] > 0.8
    assert fp8_logit_error(ref, ref, ids)["max_abs_error"] == 0.0


def test_fp8_checkpoint_round_trip(pair, tmp_path):
    ref, q = pair
    save_fp8_pretrained(q, tmp_path / "fp8")
    assert is_fp8_checkpoint(tmp_path / "fp8")
    cfg = json.loads((tmp_path / "fp8" / "config.json").read_text())
    assert cfg["quantization_config"]["weight_block_size"] == [BLOCK, BLOCK]
    with safe_open(str(tmp_path / "fp8" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == FP8
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight_scale_inv").dtype == torch.float32
        assert f.get_tensor("model.layers.1.mlp.experts.3.down_proj.weight").dtype == FP8
        assert "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv" in keys
        assert "model.layers.3.eh_proj.weight_scale_inv" in keys  # the MTP layer, as on disk
        assert f.get_tensor("lm_head.weight").dtype == torch.float32
        assert "lm_head.weight_scale_inv" not in keys
    loaded = load_fp8_pretrained(tmp_path / "fp8")
    for (n1, t1), (n2, t2) in zip(q.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and t1.dtype == t2.dtype
        assert torch.equal(t1.float(), t2.float()), n1
    # The plain loader dequantises the same values: identical logits to the FP8 model.
    plain = GLM45ForCausalLM.from_pretrained(tmp_path / "fp8")
    ids = torch.randint(0, ref.config.vocab_size, (1, 10))
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, loaded(ids).logits, atol=1e-5)
    with pytest.raises(FP8Error, match="quantize_model_fp8"):
        save_fp8_pretrained(ref, tmp_path / "nope")


def test_engine_runs_fp8_and_requantises_pushed_weights(pair, tmp_path):
    ref, q = pair
    save_fp8_pretrained(q, tmp_path / "fp8")
    engine = Engine.from_pretrained(tmp_path / "fp8", speculative=True, max_seq_len=64)
    assert is_fp8_model(engine.model)
    p = [3, 14, 15, 92, 65]
    out = engine.generate([p], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))[0].token_ids
    ids = list(p)
    with torch.no_grad():
        for _ in range(8):
            ids.append(int(q(torch.tensor([ids])).logits[0, -1].argmax()))
    assert out == ids[len(p):]
    # RL pushes high-precision weights: the FP8 engine quantises them on arrival.
    other = randomize(GLM45ForCausalLM(tiny_config(hidden_size=160, moe_intermediate_size=48)), seed=32).eval()
    engine.update_weights(other)
    expect = quantize_model_fp8(copy.deepcopy(other))
    for (n, a), b in zip(engine.model.state_dict().items(), expect.state_dict().values()):
        assert torch.equal(a.float(), b.float()), n
    # ... or FP8 weights with their scales, taken as they are.
    engine.update_weights(q.state_dict())
    for (n, a), b in zip(engine.model.state_dict().items(), q.state_dict().values()):
        assert torch.equal(a.float(), b.float()), n


def test_dtype_casts_keep_fp8_storage(pair):
    _, q = pair
    m = copy.deepcopy(q).to(torch.bfloat16)
    lin = m.model.layers[0].self_attn.q_proj
    assert lin.weight.dtype == FP8 and lin.weight_scale_inv.dtype == torch.float32
    assert lin.bias.dtype == torch.bfloat16
    experts = m.model.layers[1].mlp.experts
    assert experts.gate_proj.dtype == FP8 and experts.compute_dtype == torch.bfloat16
    assert experts.expert_weights(0)[0].dtype == torch.bfloat16
    with torch.no_grad():
        out = m(torch.tensor([[1, 2, 3]])).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_bad_fp8_inputs_raise(pair):
    _, q = pair
    lin = q.model.layers[0].self_attn.q_proj
    with pytest.raises(FP8Error, match="weight_scale_inv"):
        lin.set_weight(torch.zeros(64, 160, dtype=FP8))
    with pytest.raises(FP8Error, match="shape"):
        lin.set_weight(torch.zeros(3, 3))
    deq = dequantize_blockwise(lin.weight, lin.weight_scale_inv)
    assert deq.shape == (64, 160)


def test_corrupt_weights_file_is_named_in_the_error(pair, tmp_path):
    model, _ = pair
    model.save_pretrained(tmp_path)
    shard = next(tmp_path.glob("*.safetensors"))
    shard.write_bytes(b"not safetensors at all")
    with pytest.raises(FP8Error, match=shard.name):
        is_fp8_checkpoint(tmp_path)
