"""Feature hashing of word and character n-grams into a fixed number of dimensions.

Shared by the cheap embedder (SemDedup fallback) and the quality classifier. Hashes come
from CRC32, not Python's `hash`, so features are identical across processes and runs.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter

import numpy as np

_WORDS = re.compile(r"\w+", re.UNICODE)


def ngram_counts(text: str, word_ngrams: tuple[int, ...] = (1, 2), char_ngrams: tuple[int, ...] = (),
                 max_chars: int = 20_000) -> Counter:
    """Counts of word n-grams (lowercased) and, optionally, character n-grams of the text."""
    text = text[:max_chars].lower()
    words = _WORDS.findall(text)
    counts: Counter = Counter()
    for n in word_ngrams:
        counts.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    for n in char_ngrams:
        squeezed = " ".join(words)
        counts.update("#" + squeezed[i:i + n] for i in range(len(squeezed) - n + 1))
    return counts


def hash_features(counts: Counter, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed feature hashing with sublinear term frequency: (indices, values), L2-normalised.

    The sign bit (from a second part of the hash) makes collisions cancel in expectation
    instead of always adding up.
    """
    acc: dict[int, float] = {}
    for gram, c in counts.items():
        h = zlib.crc32(gram.encode("utf-8", "surrogatepass"))
        idx, sign = h % dim, 1.0 if (h >> 31) & 1 else -1.0
        acc[idx] = acc.get(idx, 0.0) + sign * (1.0 + math.log(c))
    if not acc:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = np.fromiter(acc.keys(), np.int64, len(acc))
    val = np.fromiter(acc.values(), np.float32, len(acc))
    norm = float(np.linalg.norm(val))
    return idx, val / norm if norm > 0 else val


class SparseRows:
    """A CSR matrix of hashed feature rows with the two products logistic regression needs."""

    def __init__(self, rows: list[tuple[np.ndarray, np.ndarray]], dim: int):
        self.dim = dim
        self.n = len(rows)
        lens = np.array([len(r[0]) for r in rows], np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(lens)])
        self.indices = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
        self.data = np.concatenate([r[1] for r in rows]).astype(np.float64) if rows else np.zeros(0)
        self.row_of = np.repeat(np.arange(self.n), lens)

    def matvec(self, w: np.ndarray) -> np.ndarray:
        """X @ w."""
        return np.bincount(self.row_of, weights=self.data * w[self.indices], minlength=self.n)

    def rmatvec(self, g: np.ndarray) -> np.ndarray:
        """X.T @ g."""
        return np.bincount(self.indices, weights=self.data * g[self.row_of], minlength=self.dim)
