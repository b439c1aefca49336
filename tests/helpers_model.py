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


def apply_partial_rope(x_BHTE: torch.Tensor, cos_BTR: torch.Tensor, sin_BTR: torch.Tensor) -> torch.Tensor:
    """Rotate the first R dims of each head NeoX-style (halves, not interleaved); pass the rest.

    The textbook definition with the usual [B, T, R] tables: the reference the model's `Rope`
    tables are tested against."""
    rot = cos_BTR.shape[-1]
    x_rot, x_pass = x_BHTE[..., :rot], x_BHTE[..., rot:]
    cos, sin = cos_BTR.unsqueeze(1), sin_BTR.unsqueeze(1)
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)
