"""Exact and MinHash near-duplicate removal: recall on planted duplicates of real documents."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import pytest

from glm45.data.builtin import docstring_document, stdlib_files
from glm45.data.dedup import ExactDedup, MinHashDedup, shingles
from glm45.data.document import DataError, Document

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _real_docs(n: int, min_words: int = 400) -> list[str]:
    out = []
    for p in stdlib_files():
        text = docstring_document(p.read_text(encoding="utf-8", errors="replace"), p.stem)
        if text and len(text.split()) >= min_words:
            out.append(text)
        if len(out) == n:
            break
    return out


DOCS = _real_docs(60)


def _near_copy(text: str, rng: random.Random, frac: float = 0.01) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(frac * len(words)))):
        words[i] = rng.choice(["alpha", "beta", "gamma", "delta"])
    return " ".join(words) + "\nThis page was last edited on a Tuesday."


def test_exact_dedup_ignores_case_and_whitespace():
    docs = [Document(text=t) for t in DOCS]
    dups = [Document(text="  " + t.upper().replace(" ", "   ") + "\n") for t in DOCS[:20]]
    d = ExactDedup()
    kept = list(d.apply(docs + dups))
    assert [k.text for k in kept] == DOCS  # every original kept, every planted copy gone
    assert d.stats.as_dict() == {"in": 80, "out": 60, "removed": 20}


def test_minhash_recall_on_planted_near_duplicates():
    rng = random.Random(0)
    originals = [Document(text=t, id=f"orig{i}") for i, t in enumerate(DOCS)]
    planted = [Document(text=_near_copy(t, rng), id=f"dup{i}") for i, t in enumerate(DOCS[:40])]
    stream = originals + planted
    rng.shuffle(planted)
    d = MinHashDedup(threshold=0.8)
    kept_ids = {doc.id for doc in d.apply(stream)}
    recall = sum(p.id not in kept_ids for p in planted) / len(planted)
    assert recall >= 0.9, recall
    assert all(o.id in kept_ids for o in originals)  # no distinct real document is lost


def test_minhash_keeps_the_first_and_separates_distinct_docs():
    rng = random.Random(1)
    a, b = DOCS[0], DOCS[1]
    d = MinHashDedup()
    assert d(Document(text=a)) and d(Document(text=b))
    assert not d(Document(text=_near_copy(a, rng)))
    sa, sb = d.signature(a), d.signature(_near_copy(a, rng))
    assert sa.jaccard(sb) > 0.8 > sa.jaccard(d.signature(b))


def test_shingles_are_word_ngrams():
    assert shingles("The cat sat on the mat today", 5) == {
        b"the cat sat on the", b"cat sat on the mat", b"sat on the mat today"}
    assert shingles("too short", 5) == {b"too short"}


def test_bad_parameters():
    with pytest.raises(DataError, match="threshold"):
        MinHashDedup(threshold=1.5)
