"""Fill-in-the-Middle (Bavarian et al., 2022) for code documents (paper §2.2).

A document is cut at two character positions drawn uniformly, into prefix / middle / suffix,
and rearranged so the model learns to write the middle given both sides:
  PSM: <|code_prefix|>prefix<|code_suffix|>suffix<|code_middle|>middle
  SPM: <|code_suffix|>suffix<|code_prefix|>prefix<|code_middle|>middle
Both keep prefix and middle adjacent in the order they are written at inference. Splitting at
characters (not tokens) means the model also sees middles that start or end inside a token.
The transform is reversible (`fim_unpermute`); documents that already contain one of the
three sentinel strings are left untouched so that stays true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from glm45.data.document import DataError, Document
from glm45.data.filters import PROSE_LANGUAGES

PREFIX, MIDDLE, SUFFIX = "<|code_prefix|>", "<|code_middle|>", "<|code_suffix|>"


def fim_permute(text: str, rng: np.random.Generator, *, spm: bool) -> str:
    a, b = sorted(rng.integers(0, len(text) + 1, size=2).tolist())
    prefix, middle, suffix = text[:a], text[a:b], text[b:]
    if spm:
        return f"{SUFFIX}{suffix}{PREFIX}{prefix}{MIDDLE}{middle}"
    return f"{PREFIX}{prefix}{SUFFIX}{suffix}{MIDDLE}{middle}"


def fim_unpermute(text: str) -> str:
    """The original document of a FIM-permuted one (either mode); other text is returned as is."""
    if text.startswith(PREFIX):
        prefix, _, rest = text[len(PREFIX):].partition(SUFFIX)
        suffix, _, middle = rest.partition(MIDDLE)
    elif text.startswith(SUFFIX):
        suffix, _, rest = text[len(SUFFIX):].partition(PREFIX)
        prefix, _, middle = rest.partition(MIDDLE)
    else:
        return text
    return prefix + middle + suffix


def has_sentinels(text: str) -> bool:
    return PREFIX in text or MIDDLE in text or SUFFIX in text


@dataclass
class FimTransform:
    """Applies FIM to a `rate` share of code documents, SPM for `spm_rate` of those, PSM otherwise.

    Only code documents (meta `language` outside prose) are permuted; chat samples and prose
    pass through. Randomness comes from one seeded generator consumed in stream order, so the
    output is a function of (seed, input order).
    """

    rate: float = 0.5
    spm_rate: float = 0.5
    seed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"seen": 0, "psm": 0, "spm": 0})

    def __post_init__(self) -> None:
        if not (0.0 <= self.rate <= 1.0 and 0.0 <= self.spm_rate <= 1.0):
            raise DataError(f"FIM rates must be in [0, 1] (rate={self.rate}, spm_rate={self.spm_rate})")
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, doc: Document) -> Document:
        self.counts["seen"] += 1
        if doc.is_chat or doc.meta.get("language") in PROSE_LANGUAGES or has_sentinels(doc.text):
            return doc
        if self._rng.random() >= self.rate:
            return doc
        spm = bool(self._rng.random() < self.spm_rate)
        self.counts["spm" if spm else "psm"] += 1
        meta = {**doc.meta, "fim": "spm" if spm else "psm"}
        return Document(text=fim_permute(doc.text, self._rng, spm=spm), id=doc.id, source=doc.source, meta=meta)

    def apply(self, docs: Iterable[Document]) -> Iterator[Document]:
        return (self(d) for d in docs)
