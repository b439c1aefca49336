"""Quality scoring: the classifier, the perplexity and LLM-judge hooks, percentile buckets, weights."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from glm45.data.document import DataError, Document
from glm45.data.quality import (
    LLMJudgeScorer, PerplexityScorer, QualityClassifier, QualitySampler, assign_buckets, percentile_edges,
    repetitions,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_data_dedup import _real_docs  # noqa: E402

GOOD = [" ".join(t.split()[:250]) for t in _real_docs(80, min_words=120)]
SPAM_WORDS = ["buy", "cheap", "best", "price", "free", "shipping", "click", "deal", "offer", "discount", "now",
              "casino", "bonus", "win", "online", "pills", "sale", "limited", "hot", "top"]


def _spam(rng: random.Random) -> str:
    return " ".join(rng.choice(SPAM_WORDS) for _ in range(rng.randint(80, 200))) + " " + rng.choice(GOOD).split(".")[0]


MENU = ["Home", "About us", "Contact", "Login", "Sign up", "Cart", "Privacy", "Terms", "Sitemap", "Careers", "FAQ",
        "Newsletter", "Follow us", "Share", "Tweet", "Like", "Next page", "Previous", "Copyright 2024"]


def _chrome(rng: random.Random) -> str:
    return " | ".join(rng.choice(MENU) for _ in range(rng.randint(40, 120)))


def test_classifier_separates_held_out_good_from_junk(tmp_path):
    rng = random.Random(0)
    bad = [_spam(rng) if i % 2 else _chrome(rng) for i in range(80)]
    train_x, train_y = GOOD[:60] + bad[:60], [1] * 60 + [0] * 60
    clf = QualityClassifier(dim=1 << 16).fit(train_x, train_y)
    p_good, p_bad = clf(GOOD[60:]), clf(bad[60:])
    acc = (np.sum(p_good > 0.5) + np.sum(p_bad < 0.5)) / 40
    assert acc >= 0.9, acc
    assert np.median(p_good) > np.median(p_bad) + 0.3
    clf.save(tmp_path / "q")
    again = QualityClassifier.load(tmp_path / "q")
    assert np.allclose(again(GOOD[60:]), p_good, atol=1e-6)


def test_classifier_rejects_bad_labels(tmp_path):
    with pytest.raises(DataError, match="both classes"):
        QualityClassifier().fit(["a", "b"], [1, 1])
    with pytest.raises(DataError, match="not trained"):
        QualityClassifier()(["a"])
    with pytest.raises(DataError, match="quality.json"):
        QualityClassifier.load(tmp_path)


def test_percentile_buckets():
    scores = np.arange(100, dtype=float)
    edges = percentile_edges(scores, 5)
    assert np.allclose(edges, [19.8, 39.6, 59.4, 79.2])
    buckets = assign_buckets(scores, edges)
    assert np.bincount(buckets).tolist() == [20, 20, 20, 20, 20]
    assert buckets[0] == 0 and buckets[-1] == 4


def test_repetitions_match_expected_epochs():
    rng = np.random.default_rng(0)
    for w in (0.0, 0.5, 1.0, 3.2):
        reps = [repetitions(w, rng) for _ in range(20000)]
        assert abs(np.mean(reps) - w) < 0.03 and set(reps) <= {int(w), int(w) + 1}
    with pytest.raises(DataError):
        repetitions(-1.0, rng)


def test_sampler_drops_lowest_and_upsamples_top_bucket():
    docs = [Document(text=f"doc {i}", meta={"score": i}) for i in range(1000)]
    sampler = QualitySampler(lambda texts: [float(t.split()[1]) for t in texts], weights=(0.0, 1.0, 1.0, 2.0, 3.2),
                             batch_size=64, seed=0)
    out = list(sampler.apply(docs))
    by_doc = {}
    for d in out:
        by_doc[d.id] = by_doc.get(d.id, 0) + 1
    assert sampler.bucket_in == [200] * 5
    assert all(d.meta["score"] >= 200 for d in out)  # the lowest bucket is gone
    top = [by_doc.get(d.id, 0) for d in docs[800:]]
    assert set(top) <= {3, 4} and abs(np.mean(top) - 3.2) < 0.12  # 3.2 epochs for the best bucket
    assert all(by_doc[d.id] == 1 for d in docs[200:600])
    assert all(by_doc[d.id] == 2 for d in docs[600:800])
    assert out[0].meta["quality_bucket"] in range(5)
    again = list(QualitySampler(sampler.scorer, weights=sampler.weights, batch_size=64, seed=0).apply(docs))
    assert [d.id for d in again] == [d.id for d in out]  # deterministic under the seed


def test_sampler_with_fixed_edges_streams():
    seen = []

    def scorer(texts):
        seen.append(len(texts))
        return [1.0] * len(texts)

    sampler = QualitySampler(scorer, weights=(0.0, 1.0), edges=np.array([0.5]), batch_size=10)
    it = sampler.apply(Document(text=str(i)) for i in range(10_000))
    first = [next(it) for _ in range(10)]
    assert len(first) == 10 and sum(seen) == 10  # only one batch was scored: no calibration buffering


def test_perplexity_scorer_prefers_low_loss():
    s = PerplexityScorer(lambda texts: [len(t) / 10 for t in texts])
    assert s(["short", "a much longer text"]).tolist() == [-0.5, -1.8]
    with pytest.raises(DataError, match="shape"):
        PerplexityScorer(lambda texts: [1.0])(["a", "b"])


def test_llm_judge_over_openai_compatible_endpoint():
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append((request.url.path, request.headers.get("authorization"), body))
        doc = body["messages"][0]["content"]
        score = "4" if "theorem" in doc else "Score: 1"
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": score}}]})

    judge = LLMJudgeScorer("http://judge.local/v1", "judge-model", api_key="k", transport=httpx.MockTransport(handler))
    assert judge(["A theorem about primes, proved step by step.", "Buy now!"]).tolist() == [4.0, 1.0]
    path, auth, body = requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "judge-model"
    assert "mathematics and science" in body["messages"][0]["content"]

    bad = LLMJudgeScorer("http://judge.local/v1", "m", transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(DataError, match="HTTP 500"):
        bad(["x"])
