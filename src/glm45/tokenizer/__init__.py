"""Tokenizer: byte-level BPE training, the GLM-4.5 special tokens, tokenizer.json I/O, streaming decode."""

from glm45.tokenizer.glm import GLMTokenizer, TokenizerError
from glm45.tokenizer.incremental import IncrementalDecoder
from glm45.tokenizer.special import RELEASED_SPECIAL_IDS, SPECIAL_TOKENS, STOP_TOKENS
from glm45.tokenizer.train import train_tokenizer

__all__ = [
    "GLMTokenizer",
    "IncrementalDecoder",
    "RELEASED_SPECIAL_IDS",
    "SPECIAL_TOKENS",
    "STOP_TOKENS",
    "TokenizerError",
    "train_tokenizer",
]
