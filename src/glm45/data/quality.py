"""Quality scoring and quality-bucket sampling (paper §2.2, after Nemotron-CC).

Scorers map a batch of texts to one float per text (higher = better):
  * `QualityClassifier` — a small classifier trained on labelled examples: hashed word
    n-gram features and logistic regression, in numpy. It is also how an LLM judge is
    distilled: score a sample with `LLMJudgeScorer`, threshold the scores into labels, train
    the classifier, and apply that to the whole corpus (the paper's math & science recipe).
  * `PerplexityScorer` — wraps any callable returning per-document loss (e.g. a small
    reference LM); score = −loss.
  * `LLMJudgeScorer` — asks any OpenAI-compatible chat endpoint for the educational value of
    a document for mathematics and science on a 0–5 scale.
Scores are cut at percentiles into buckets, and each bucket has a sampling weight: the
expected number of epochs its documents contribute (0 drops the bucket, 3.2 is the paper's
top-bucket figure). A weight w gives floor(w) copies plus one more with probability w − floor(w).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from glm45.data.dedup import doc_key_text
from glm45.data.document import DataError, Document
from glm45.data.hashing import SparseRows, hash_features, ngram_counts

Scorer = Callable[[list[str]], Sequence[float]]


@dataclass
class QualityClassifier:
    dim: int = 1 << 18
    word_ngrams: tuple[int, ...] = (1, 2)
    l2: float = 1e-4
    lr: float = 0.05
    steps: int = 200
    weights: np.ndarray | None = None
    bias: float = 0.0

    def features(self, texts: list[str]) -> SparseRows:
        return SparseRows([hash_features(ngram_counts(t, self.word_ngrams), self.dim) for t in texts], self.dim)

    def fit(self, texts: list[str], labels: Sequence[int | bool]) -> "QualityClassifier":
        """Binary logistic regression (label 1 = high quality), full-batch Adam on the class-balanced loss.

        Adam rather than plain gradient descent: hashed n-gram features are sparse and nearly
        orthogonal across documents, so the loss is badly conditioned per coordinate and a
        single global step size either crawls or diverges.
        """
        y = np.asarray(labels, np.float64)
        if len(texts) != len(y) or len(y) == 0:
            raise DataError(f"need one label per text (got {len(texts)} texts, {len(y)} labels)")
        if not set(np.unique(y)) <= {0.0, 1.0} or len(np.unique(y)) < 2:
            raise DataError("labels must be 0/1 with both classes present")
        X = self.features(texts)
        pos = y.mean()
        sw = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)) / len(y)  # sums to 1, classes weigh the same
        theta = np.zeros(self.dim + 1)  # weights, then bias
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        b1, b2, lr = 0.9, 0.999, self.lr
        for t in range(1, self.steps + 1):
            z = X.matvec(theta[:-1]) + theta[-1]
            g = sw * (1.0 / (1.0 + np.exp(-z)) - y)
            grad = np.append(X.rmatvec(g) + self.l2 * theta[:-1], g.sum())
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            theta -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + 1e-8)
        self.weights, self.bias = theta[:-1].astype(np.float32), float(theta[-1])
        return self

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Probability of high quality for each text."""
        if self.weights is None:
            raise DataError("QualityClassifier is not trained: call fit() or load()")
        z = self.features(texts).matvec(self.weights.astype(np.float64)) + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str | Path) -> None:
        if self.weights is None:
            raise DataError("nothing to save: the classifier is not trained")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "weights.npy", self.weights)
        meta = {"dim": self.dim, "word_ngrams": list(self.word_ngrams), "bias": self.bias}
        (path / "quality.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "QualityClassifier":
        path = Path(path)
        if not (path / "quality.json").is_file():
            raise DataError(f"{path}: no quality.json (not a saved QualityClassifier)")
        meta = json.loads((path / "quality.json").read_text())
        return cls(dim=meta["dim"], word_ngrams=tuple(meta["word_ngrams"]),
                   weights=np.load(path / "weights.npy"), bias=meta["bias"])


@dataclass
class PerplexityScorer:
    """Any per-document loss function as a quality score (lower loss = higher score)."""

    loss_fn: Callable[[list[str]], Sequence[float]]

    def __call__(self, texts: list[str]) -> np.ndarray:
        losses = np.asarray(self.loss_fn(texts), np.float64)
        if losses.shape != (len(texts),):
            raise DataError(f"loss function returned shape {losses.shape} for {len(texts)} texts")
        return -losses


JUDGE_PROMPT = (
    "Rate the following document for its educational value for learning mathematics and science, "
    "on a scale from 0 (none: unrelated, spam, or boilerplate) to 5 (excellent: clear, correct, "
    "in-depth explanations, worked derivations or problems). Reply with the number only.\n\n"
    "Document:\n{document}"
)


@dataclass
class LLMJudgeScorer:
    """Scores documents with an OpenAI-compatible `/chat/completions` endpoint (via httpx)."""

    base_url: str
    model: str
    api_key: str | None = None
    prompt: str = JUDGE_PROMPT
    max_chars: int = 6000
    timeout: float = 60.0
    transport: object | None = None  # an httpx transport, for tests or custom routing

    def __post_init__(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        kw = {"transport": self.transport} if self.transport is not None else {}
        self._client = httpx.Client(base_url=self.base_url.rstrip("/"), headers=headers, timeout=self.timeout, **kw)

    def score_one(self, text: str) -> float:
        body = {"model": self.model, "temperature": 0.0, "max_tokens": 8,
                "messages": [{"role": "user", "content": self.prompt.format(document=text[: self.max_chars])}]}
        resp = self._client.post("/chat/completions", json=body)
        if resp.status_code != 200:
            raise DataError(f"LLM judge at {self.base_url} answered HTTP {resp.status_code}: {resp.text[:200]}")
        content = resp.json()["choices"][0]["message"].get("content") or ""
        m = re.search(r"\d+(?:\.\d+)?", content)
        if m is None:
            raise DataError(f"LLM judge reply has no score: {content[:100]!r}")
        return min(5.0, max(0.0, float(m.group())))

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.array([self.score_one(t) for t in texts])


def percentile_edges(scores: Sequence[float], n_buckets: int) -> np.ndarray:
    """The n_buckets − 1 score cut points at equal percentiles."""
    if n_buckets < 1:
        raise DataError(f"n_buckets must be >= 1, got {n_buckets}")
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        raise DataError("cannot compute percentile buckets from zero scores")
    return np.quantile(s, np.arange(1, n_buckets) / n_buckets)


def assign_buckets(scores: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """Bucket per score: 0 is the lowest-quality bucket, len(edges) the highest."""
    return np.searchsorted(edges, np.asarray(scores, np.float64), side="right")


def repetitions(weight: float, rng: np.random.Generator) -> int:
    """Copies of one document for an expected `weight` epochs."""
    if weight < 0 or not math.isfinite(weight):
        raise DataError(f"bucket weights must be finite and >= 0, got {weight}")
    base = math.floor(weight)
    return base + int(rng.random() < weight - base)


# Five buckets, low to high: drop the lowest, keep the middle once, up-sample the top
# (3.2 epochs for the top bucket, as in the paper).
DEFAULT_BUCKET_WEIGHTS: tuple[float, ...] = (0.0, 1.0, 1.0, 2.0, 3.2)


@dataclass
class QualitySampler:
    """Streams documents with their quality bucket in `meta` and repeated per bucket weight.

    Percentile edges come from `edges` if given, else from the scores of the first
    `calibration_docs` documents (held in memory once, then streaming continues).
    """

    scorer: Scorer
    weights: tuple[float, ...] = DEFAULT_BUCKET_WEIGHTS
    edges: np.ndarray | None = None
    calibration_docs: int = 10_000
    batch_size: int = 256
    seed: int = 0
    bucket_in: list[int] = field(default_factory=list)
    bucket_out: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.edges is not None and len(self.edges) != len(self.weights) - 1:
            raise DataError(f"{len(self.weights)} bucket weights need {len(self.weights) - 1} edges, got {len(self.edges)}")
        self.bucket_in = [0] * len(self.weights)
        self.bucket_out = [0] * len(self.weights)
        self._rng = np.random.default_rng(self.seed)

    def apply(self, docs: Iterable[Document]) -> Iterator[Document]:
        pending: list[tuple[Document, float]] = []
        batch: list[Document] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == self.batch_size:
                pending.extend(self._score(batch))
                batch = []
                if self.edges is not None or len(pending) >= self.calibration_docs:
                    yield from self._emit(pending)
                    pending = []
        pending.extend(self._score(batch))
        yield from self._emit(pending)

    def _score(self, batch: list[Document]) -> list[tuple[Document, float]]:
        if not batch:
            return []
        scores = np.asarray(self.scorer([doc_key_text(d) for d in batch]), np.float64)
        if scores.shape != (len(batch),):
            raise DataError(f"quality scorer returned shape {scores.shape} for {len(batch)} documents")
        return list(zip(batch, scores.tolist()))

    def _emit(self, scored: list[tuple[Document, float]]) -> Iterator[Document]:
        if not scored:
            return
        if self.edges is None:
            self.edges = percentile_edges([s for _, s in scored], len(self.weights))
        buckets = assign_buckets([s for _, s in scored], self.edges)
        for (doc, score), b in zip(scored, buckets.tolist()):
            copies = repetitions(self.weights[b], self._rng)
            self.bucket_in[b] += 1
            self.bucket_out[b] += copies
            doc.meta = {**doc.meta, "quality": round(score, 6), "quality_bucket": b}
            for _ in range(copies):
                yield doc

    def summary(self) -> dict:
        return {"edges": None if self.edges is None else [float(e) for e in self.edges],
                "weights": list(self.weights), "docs_in_per_bucket": self.bucket_in, "docs_out_per_bucket": self.bucket_out}
