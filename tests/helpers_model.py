"""Shared builders for model tests: random tiny configs and transformers twins."""

from __future__ import annotations

import torch

from glm45.config import ModelConfig
from glm45.model import GLM45ForCausalLM


def tiny_config(**overrides) -> ModelConfig:
    base = dict(torch_dtype="float32")
    base.update(overrides)
    return ModelConfig.preset("tiny", **base)


def randomize(model: GLM45ForCausalLM, seed: int = 0) -> GLM45ForCausalLM:
    """Non-trivial weights everywhere: norms and biases off their init, a non-zero balance bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if name.endswith("norm.weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
    return model
