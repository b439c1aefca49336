"""Inference: continuous-batching engine over a pre-allocated KV cache, sampling, MTP
speculative decoding, FP8 weights, and an asyncio wrapper for servers."""

from glm45.infer.async_engine import AsyncEngine
from glm45.infer.engine import Engine, InferenceError
from glm45.infer.fp8 import (FP8Experts, FP8Linear, fp8_logit_error, is_fp8_model, load_fp8_pretrained,
                             quantize_model_fp8, save_fp8_pretrained)
from glm45.infer.outputs import GenerationResult, RequestOutput
from glm45.infer.params import SamplingParams, SamplingParamsError
from glm45.infer.weights import WeightsError, assign_weights

__all__ = [
    "AsyncEngine",
    "Engine",
    "FP8Experts",
    "FP8Linear",
    "GenerationResult",
    "InferenceError",
    "RequestOutput",
    "SamplingParams",
    "SamplingParamsError",
    "WeightsError",
    "assign_weights",
    "fp8_logit_error",
    "is_fp8_model",
    "load_fp8_pretrained",
    "quantize_model_fp8",
    "save_fp8_pretrained",
]
