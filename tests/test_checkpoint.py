import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from glm45.checkpoint.fp8 import dequantize_blockwise, quantize_blockwise
from glm45.checkpoint.hf import CheckpointError
from glm45.model import GLM45ForCausalLM
from helpers_model import randomize, tiny_config


def _model(**kw):
    return randomize(GLM45ForCausalLM(tiny_config(**kw)), seed=7).eval()


def test_round_trip_keeps_every_tensor_including_mtp(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c")
    keys = load_file(tmp_path / "c" / "model.safetensors").keys()
    n = m.config.num_hidden_layers
    for k in ("eh_proj.weight", "enorm.weight", "hnorm.weight", "shared_head.norm.weight",
              "shared_head.head.weight", "embed_tokens.weight", "mlp.experts.7.down_proj.weight",
              "mlp.gate.e_score_correction_bias", "self_attn.q_norm.weight"):
        assert f"model.layers.{n}.{k}" in keys
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" in keys
    r = GLM45ForCausalLM.from_pretrained(tmp_path / "c", dtype=torch.float32)
    a, b = m.state_dict(), r.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_save_and_load(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "c" / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1 and all((tmp_path / "c" / f).exists() for f in files)
    r = GLM45ForCausalLM.from_pretrained(tmp_path / "c", dtype=torch.float32)
    ids = torch.randint(0, 512, (1, 6))
    with torch.no_grad():
        assert torch.equal(m(ids).logits, r(ids).logits)


def test_overwrite_is_atomic_and_keeps_other_files(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "c", max_shard_bytes=200_000)
    (tmp_path / "c" / "tokenizer.json").write_text("{}")
    m.save_pretrained(tmp_path / "c")  # now a single file: old shards must be gone
    names = {p.name for p in (tmp_path / "c").iterdir()}
    assert "tokenizer.json" in names and "model.safetensors" in names
    assert not any(n.startswith("model-") for n in names) and "model.safetensors.index.json" not in names
    assert not any(p.name.startswith(".tmp-ckpt") for p in tmp_path.iterdir())


def _tamper(path, fn):
    f = path / "model.safetensors"
    t = load_file(f)
    fn(t)
    save_file(t, f)


@pytest.mark.parametrize("fn, msg", [
    (lambda t: t.pop("model.layers.1.mlp.experts.3.up_proj.weight"), "missing keys.*experts.3.up_proj"),
    (lambda t: t.__setitem__("model.layers.0.extra.weight", torch.zeros(2)), "unexpected keys.*extra"),
    (lambda t: t.__setitem__("lm_head.weight", torch.zeros(3, 3)), "mis-shaped keys.*lm_head"),
])
def test_broken_checkpoints_name_the_problem(tmp_path, fn, msg):
    _model().save_pretrained(tmp_path)
    _tamper(tmp_path, fn)
    with pytest.raises(CheckpointError, match=msg):
        GLM45ForCausalLM.from_pretrained(tmp_path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        GLM45ForCausalLM.from_pretrained(tmp_path / "nope")
    _model().save_pretrained(tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        GLM45ForCausalLM.from_pretrained(tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        GLM45ForCausalLM.from_pretrained(tmp_path / "c")


def test_fp8_blockwise_round_trip_error_is_small():
    w = torch.randn(300, 200) * 0.02
    q, s = quantize_blockwise(w)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (3, 2)
    back = dequantize_blockwise(q, s)
    rel = ((back - w).norm() / w.norm()).item()
    assert rel < 0.05  # e4m3 has a 3-bit mantissa: ~2-3% relative error


def test_fp8_checkpoint_loads_dequantised(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path)
    t = load_file(tmp_path / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    q, s = quantize_blockwise(t[key])
    t[key], t[key + "_scale_inv"] = q, s
    save_file(t, tmp_path / "model.safetensors")
    r = GLM45ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(r.model.layers[0].self_attn.q_proj.weight, dequantize_blockwise(q, s))
