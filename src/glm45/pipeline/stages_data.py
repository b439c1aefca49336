"""The speedrun's data stages: corpus → tokenizer → shards (paper §2.1–2.3 at toy scale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from glm45.pipeline.heldout import split_heldout, token_counts, unigram_entropy


def stage_corpus(cfg, out: Path) -> dict[str, Any]:
    """The built-in offline corpus (glm45.data.builtin), minus the held-out modules."""
    from glm45.data.builtin import build_corpus

    budget = cfg.budget
    result = build_corpus(out, budget_chars=budget.corpus_chars, seed=cfg.seed)
    held = split_heldout(out, budget.heldout_fraction, n_math=200, seed=cfg.seed)
    counts = result["counts"]
    metrics: dict[str, Any] = {f"docs_{k}": v["docs"] for k, v in counts.items()}
    metrics.update({f"heldout_docs_{k}": v for k, v in held.items()})
    return {"metrics": metrics,
            "note": ", ".join(f"{k}: {v['chars'] / 1e6:.1f}M chars" for k, v in counts.items())}


def _texts(corpus: Path):
    from glm45.data.document import read_documents

    for path in sorted(corpus.glob("*.jsonl")):
        if path.name == "heldout.jsonl":
            continue
        for doc in read_documents(path):
            yield doc.text if doc.text else json.dumps(doc.messages, ensure_ascii=False)


def stage_tokenizer(cfg, out: Path) -> dict[str, Any]:
    from glm45.tokenizer import train_tokenizer

    corpus = out.parent / "corpus"
    tok = train_tokenizer(_texts(corpus), cfg.vocab_size)
    tok.save(out)
    sample = next(_texts(corpus))[:20000]
    ids = tok.encode(sample)
    return {"metrics": {"vocab_size": tok.vocab_size, "chars_per_token": round(len(sample) / max(1, len(ids)), 3)}}


def stage_shards(cfg, out: Path) -> dict[str, Any]:
    """Tokenised, packed shards for every pre/mid-training stage (concat for pre-training,
    best-fit for mid-training), and the pre-training data's unigram counts (the baseline)."""
    from glm45.data.builtin import API_DOC_FILTER
    from glm45.data.stages import build_stage, load_stages, preset_stages
    from glm45.tokenizer import GLMTokenizer

    corpus = out.parent / "corpus"
    tokenizer = GLMTokenizer.from_pretrained(out.parent / "tokenizer")
    sets = {src.name: src.path for stage in load_stages(corpus / "stages.json") for src in stage.sources}
    pre, mid, long = cfg.budget.seq_lens
    metrics, tokens, concat = {}, 0, []
    for spec in preset_stages(sets, seq_len=pre, mid_seq_len=mid, long_seq_len=long, seed=cfg.seed):
        for src in spec.sources:  # API docs repeat names by nature: the corpus's looser web limits
            if src.name == "web":
                src.text_filter = dict(API_DOC_FILTER)
        summary = build_stage(spec, tokenizer, out / spec.name, progress=True)
        metrics[f"tokens_{spec.name}"] = summary["tokens"]
        tokens += summary["tokens"]
        if spec.packing == "concat":
            concat.append(out / spec.name)
    counts = token_counts(concat, tokenizer.vocab_size)
    np.save(out / "unigram_counts.npy", counts)
    metrics["unigram_entropy"] = unigram_entropy(counts)
    return {"tokens": tokens, "metrics": metrics}
