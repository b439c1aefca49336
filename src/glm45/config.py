"""Model configuration: the `ModelConfig` dataclass, its presets, and the mapping to and
from the Hugging Face `glm4_moe` config.json.

One dial (the preset name) scales the whole system: `tiny` for unit tests, `nano` for the
CPU speedrun, `glm-4.5` / `glm-4.5-air` for the released architectures (Table 1 of the paper).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

GLM_EOS_TOKEN_IDS = [151329, 151336, 151338]  # <|endoftext|>, <|user|>, <|observation|>
GLM_PAD_TOKEN_ID = 151329
GLM_VOCAB_SIZE = 151552


class ConfigError(ValueError):
    """A config that is not a valid GLM-4.5 (glm4_moe) configuration."""


@dataclass
class ModelConfig:
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128  # dense MLP width (first `first_k_dense_replace` layers)
    moe_intermediate_size: int = 32  # width of each routed expert and of each shared expert
    num_hidden_layers: int = 3  # main decoder layers, dense + MoE; the MTP layer comes after
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16  # explicit: hidden / heads need not equal it
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2
    n_shared_experts: int = 1
    routed_scaling_factor: float = 1.0
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 1
    use_qk_norm: bool = True
    attention_bias: bool = True  # q/k/v only; o_proj never has a bias
    partial_rotary_factor: float = 0.5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    num_nextn_predict_layers: int = 1  # MTP layers (0 or 1)
    tie_word_embeddings: bool = False
    eos_token_id: list[int] = field(default_factory=lambda: [0])
    pad_token_id: int = 0
    bos_token_id: int | None = None
    torch_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"invalid GLM-4.5 config: {msg}")

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}")
        need(self.num_attention_heads % self.num_key_value_heads == 0,
             f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
             f"num_key_value_heads ({self.num_key_value_heads})")
        need(0 <= self.first_k_dense_replace <= self.num_hidden_layers,
             f"first_k_dense_replace ({self.first_k_dense_replace}) must lie in "
             f"[0, num_hidden_layers={self.num_hidden_layers}]")
        if self.has_moe:
            need(self.n_routed_experts > 0 and self.moe_intermediate_size > 0,
                 "MoE layers need n_routed_experts > 0 and moe_intermediate_size > 0")
            need(1 <= self.num_experts_per_tok <= self.n_routed_experts,
                 f"num_experts_per_tok ({self.num_experts_per_tok}) must lie in "
                 f"[1, n_routed_experts={self.n_routed_experts}]")
            need(self.n_group >= 1 and self.n_routed_experts % self.n_group == 0,
                 f"n_routed_experts ({self.n_routed_experts}) must be divisible by n_group ({self.n_group})")
            need(1 <= self.topk_group <= self.n_group,
                 f"topk_group ({self.topk_group}) must lie in [1, n_group={self.n_group}]")
            per_group = self.n_routed_experts // self.n_group
            need(self.num_experts_per_tok <= self.topk_group * per_group,
                 "num_experts_per_tok exceeds the experts available in the top groups")
            if self.n_group > 1:
                need(per_group >= 2, "group-limited routing scores a group by its top-2 experts; "
                     "each group needs at least 2 experts")
        need(0.0 < self.partial_rotary_factor <= 1.0, "partial_rotary_factor must lie in (0, 1]")
        need(self.rotary_dim % 2 == 0 and self.rotary_dim > 0,
             f"rotary dim head_dim*partial_rotary_factor = {self.rotary_dim} must be a positive even number")
        need(self.num_nextn_predict_layers in (0, 1),
             f"num_nextn_predict_layers must be 0 or 1, got {self.num_nextn_predict_layers}")
        need(not self.tie_word_embeddings, "GLM-4.5 does not tie word embeddings")
        need(self.rope_theta > 0, "rope_theta must be positive")
        if isinstance(self.eos_token_id, int):
            self.eos_token_id = [self.eos_token_id]

    # ------------------------------------------------------------ derived facts
    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def has_moe(self) -> bool:
        return self.first_k_dense_replace < self.num_hidden_layers or self.num_nextn_predict_layers > 0

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Layers at index >= first_k_dense_replace are MoE, including the MTP layer."""
        return layer_idx >= self.first_k_dense_replace

    # ----------------------------------------------------------------- presets
    @staticmethod
    def preset(name: str, **overrides: Any) -> "ModelConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        cfg = PRESETS[name]()
        return replace(cfg, **overrides) if overrides else cfg

    # -------------------------------------------------------------- HF mapping
    @classmethod
    def from_hf(cls, source: str | os.PathLike | dict) -> "ModelConfig":
        """Read a Hugging Face `glm4_moe` config (a dict, a config.json path or a checkpoint dir).

        Accepts the released checkpoints' layout (`rope_theta` and `partial_rotary_factor` at
        top level) and the one `transformers` >= 5 writes (`rope_parameters`).
        """
        if isinstance(source, dict):
            hf = dict(source)
        else:
            path = os.fspath(source)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            if not os.path.exists(path):
                raise ConfigError(f"no config.json at {path}")
            try:
                with open(path, encoding="utf-8") as f:
                    hf = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(hf, dict):
            raise ConfigError("config must be a JSON object")
        model_type = hf.get("model_type")
        if model_type not in (None, "glm4_moe"):
            raise ConfigError(f"model_type is {model_type!r}, expected 'glm4_moe' (GLM-4.5)")
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                               "n_routed_experts", "vocab_size") if k not in hf]
        if missing:
            raise ConfigError(f"config is not GLM-4.5-shaped: missing {missing}")

        rope = hf.get("rope_parameters") or {}
        if hf.get("rope_scaling"):
            raise ConfigError(f"rope_scaling {hf['rope_scaling']!r} is not supported (GLM-4.5 uses plain RoPE)")
        if rope and rope.get("rope_type", "default") != "default":
            raise ConfigError(f"rope_type {rope.get('rope_type')!r} is not supported (GLM-4.5 uses 'default')")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in known}
        kwargs["rope_theta"] = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        kwargs["partial_rotary_factor"] = float(
            rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5)))
        if "head_dim" not in hf or hf["head_dim"] is None:
            kwargs["head_dim"] = hf["hidden_size"] // hf["num_attention_heads"]
        if "num_mtp_layers" in hf and "num_nextn_predict_layers" not in hf:
            kwargs["num_nextn_predict_layers"] = hf["num_mtp_layers"]
        kwargs.setdefault("num_nextn_predict_layers", 0)
        if "dtype" in hf and "torch_dtype" not in hf:
            kwargs["torch_dtype"] = hf["dtype"]
        if isinstance(kwargs.get("torch_dtype"), str) is False:
            kwargs.pop("torch_dtype", None)
        if hf.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act {hf['hidden_act']!r} is not supported (GLM-4.5 uses silu)")
        if kwargs.get("pad_token_id") is None:
            eos = kwargs.get("eos_token_id", [0])
            kwargs["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"bad config field: {e}") from None

    def to_hf(self) -> dict:
        """A config.json that both `transformers` >= 5 and older readers (vLLM, SGLang) load."""
        d = asdict(self)
        dtype = d.pop("torch_dtype")
        d.update(
            architectures=["Glm4MoeForCausalLM"],
            model_type="glm4_moe",
            hidden_act="silu",
            attention_dropout=0.0,
            use_cache=True,
            dtype=dtype,
            # Top level for the released-checkpoint readers, rope_parameters for transformers 5.
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta,
                             "partial_rotary_factor": self.partial_rotary_factor},
        )
        return d

    def save(self, directory: str | os.PathLike) -> None:
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, "config.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_hf(), f, indent=2)
            f.write("\n")
        os.replace(tmp, os.path.join(directory, "config.json"))


# ---------------------------------------------------------------------- presets
def _glm45() -> ModelConfig:
    return ModelConfig(
        vocab_size=GLM_VOCAB_SIZE, hidden_size=5120, intermediate_size=12288, moe_intermediate_size=1536,
        num_hidden_layers=92, num_attention_heads=96, num_key_value_heads=8, head_dim=128,
        n_routed_experts=160, num_experts_per_tok=8, n_shared_experts=1, routed_scaling_factor=2.5,
        n_group=1, topk_group=1, norm_topk_prob=True, first_k_dense_replace=3, use_qk_norm=True,
        attention_bias=True, partial_rotary_factor=0.5, rope_theta=1_000_000.0,
        max_position_embeddings=131072, rms_norm_eps=1e-5, num_nextn_predict_layers=1,
        eos_token_id=list(GLM_EOS_TOKEN_IDS), pad_token_id=GLM_PAD_TOKEN_ID)


def _glm45_air() -> ModelConfig:
    return replace(_glm45(), hidden_size=4096, intermediate_size=10944, moe_intermediate_size=1408,
                   num_hidden_layers=46, n_routed_experts=128, routed_scaling_factor=1.0,
                   first_k_dense_replace=1, use_qk_norm=False)


def _tiny() -> ModelConfig:
    """Unit tests: every mechanism present (dense + MoE layers, groups, MTP), milliseconds per step."""
    return ModelConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, routed_scaling_factor=2.5,
        n_group=2, topk_group=1, first_k_dense_replace=1, use_qk_norm=True,
        max_position_embeddings=1024, rope_theta=10000.0, num_nextn_predict_layers=1,
        eos_token_id=[0, 7, 9], pad_token_id=0, torch_dtype="float32")


def _nano() -> ModelConfig:
    """The CPU speedrun: small vocabulary, 4 layers, 16 experts (top-4) so routing is real."""
    return ModelConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
        n_routed_experts=16, num_experts_per_tok=4, n_shared_experts=1, routed_scaling_factor=2.5,
        n_group=1, topk_group=1, first_k_dense_replace=1, use_qk_norm=True,
        max_position_embeddings=2048, rope_theta=10000.0, num_nextn_predict_layers=1,
        eos_token_id=[0, 7, 9], pad_token_id=0, torch_dtype="bfloat16")


def _micro() -> ModelConfig:
    """GPU-sized speedrun step up from nano (~0.5B total)."""
    return replace(_nano(), vocab_size=32768, hidden_size=1024, intermediate_size=2816,
                   moe_intermediate_size=384, num_hidden_layers=12, num_attention_heads=16,
                   num_key_value_heads=4, head_dim=64, n_routed_experts=32, num_experts_per_tok=4,
                   max_position_embeddings=8192)


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "glm-4.5": _glm45,
    "glm-4.5-air": _glm45_air,
    "tiny": _tiny,
    "nano": _nano,
    "micro": _micro,
}
