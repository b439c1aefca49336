"""glm45: the GLM-4.5 system — model, data, training, post-training, inference, serving, evaluation."""

from glm45.config import ModelConfig

__version__ = "0.1.0"
__all__ = ["ModelConfig", "__version__"]
