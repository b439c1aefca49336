"""The GLM-4.5 model in pure PyTorch (no I/O, no distributed code)."""

from glm45.model.glm45 import CausalLMOutput, GLM45ForCausalLM, GLM45Model, build_attention_mask
from glm45.model.moe import RouterStats
from glm45.model.params import count_parameters

__all__ = ["GLM45ForCausalLM", "GLM45Model", "CausalLMOutput", "RouterStats", "count_parameters",
           "build_attention_mask"]
