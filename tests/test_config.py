import json

import pytest

from glm45.config import ConfigError, ModelConfig


def test_presets_match_paper_table1():
    c = ModelConfig.preset("glm-4.5")
    assert (c.hidden_size, c.num_hidden_layers, c.first_k_dense_replace) == (5120, 92, 3)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (96, 8, 128)
    assert (c.n_routed_experts, c.num_experts_per_tok, c.routed_scaling_factor) == (160, 8, 2.5)
    assert c.use_qk_norm and c.attention_bias and c.num_nextn_predict_layers == 1
    assert c.eos_token_id == [151329, 151336, 151338] and c.vocab_size == 151552
    a = ModelConfig.preset("glm-4.5-air")
    assert (a.hidden_size, a.num_hidden_layers, a.n_routed_experts, a.first_k_dense_replace) == (4096, 46, 128, 1)
    assert not a.use_qk_norm and a.routed_scaling_factor == 1.0 and a.rotary_dim == 64


def test_reads_released_layout_and_transformers5_layout():
    released = ModelConfig.preset("glm-4.5").to_hf()
    released.pop("rope_parameters")
    released["rope_theta"], released["partial_rotary_factor"] = 1e6, 0.5
    assert ModelConfig.from_hf(released) == ModelConfig.preset("glm-4.5")
    t5 = ModelConfig.preset("glm-4.5").to_hf()
    for k in ("rope_theta", "partial_rotary_factor"):
        t5.pop(k)
    t5["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5, "partial_rotary_factor": 0.25}
    c = ModelConfig.from_hf(t5)
    assert c.rope_theta == 5e5 and c.rotary_dim == 32


def test_to_hf_is_read_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = ModelConfig.preset("glm-4.5-air")
    cfg.save(tmp_path)
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.model_type == "glm4_moe" and hf.head_dim == 128
    assert hf.rope_parameters["rope_theta"] == 1e6 and hf.rope_parameters["partial_rotary_factor"] == 0.5
    assert hf.num_nextn_predict_layers == 1
    assert ModelConfig.from_hf(json.loads((tmp_path / "config.json").read_text())) == cfg


@pytest.mark.parametrize("bad, msg", [
    ({"model_type": "llama", "hidden_size": 8}, "glm4_moe"),
    ({"model_type": "glm4_moe", "hidden_size": 8}, "missing"),
    (dict(ModelConfig.preset("tiny").to_hf(), num_key_value_heads=3), "multiple"),
    (dict(ModelConfig.preset("tiny").to_hf(), topk_group=5), "topk_group"),
    (dict(ModelConfig.preset("tiny").to_hf(), tie_word_embeddings=True), "tie"),
])
def test_bad_configs_are_named(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        ModelConfig.from_hf(bad)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        ModelConfig.from_hf(tmp_path)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_hf(tmp_path)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        ModelConfig.preset("glm-9")
