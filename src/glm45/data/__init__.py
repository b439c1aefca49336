"""Data pipeline (paper §2.2–2.3): sources → filters → dedup → quality buckets → FIM → packing → shards.

Modules, one job each:
  document   Document, JSONL read/write, DataError
  sources    JSONL / Parquet / text dirs / code trees / git commits, streamed
  filters    rule-based cleaning and filtering for text and code
  dedup      exact hash and MinHash-LSH near-dedup (datasketch)
  semdedup   embedding + k-means SemDedup, pluggable embedders
  quality    quality classifier, perplexity and LLM-judge scorers, percentile buckets
  fim        fill-in-the-middle (PSM / SPM)
  code       repo-level documents and issue/PR/commit contexts
  tokenize   documents → token ids (+ loss masks for chat samples)
  packing    concat (pre-training) and best-fit (mid-training) packing
  shards     token shards on disk + the batch contract (row_to_example)
  loader     deterministic, resumable, rank-split loader
  stages     declarative stage specs, presets, build_stage
  builtin    the offline speedrun corpus
Names below are imported lazily, so `import glm45.data` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataError": "document", "Document": "document", "read_documents": "document", "write_documents": "document",
    "read_source": "sources", "read_jsonl": "sources", "read_parquet": "sources", "read_text_dir": "sources",
    "read_code_tree": "sources", "read_git_commits": "sources",
    "DocumentFilter": "filters", "TextFilterConfig": "filters", "CodeFilterConfig": "filters",
    "ExactDedup": "dedup", "MinHashDedup": "dedup",
    "SemDedup": "semdedup", "HashedNgramEmbedder": "semdedup", "MiniLMEmbedder": "semdedup",
    "default_embedder": "semdedup", "semdedup_keep": "semdedup",
    "QualityClassifier": "quality", "PerplexityScorer": "quality", "LLMJudgeScorer": "quality",
    "QualitySampler": "quality", "percentile_edges": "quality", "assign_buckets": "quality",
    "FimTransform": "fim", "fim_permute": "fim", "fim_unpermute": "fim",
    "repo_documents": "code", "event_documents": "code", "read_events": "code",
    "DocumentTokenizer": "tokenize",
    "Packer": "packing", "TokenizedDoc": "packing", "PackedRow": "packing", "pack_best_fit": "packing",
    "ShardWriter": "shards", "PackedDataset": "shards", "row_to_example": "shards", "load_index": "shards",
    "PackedLoader": "loader",
    "StageSpec": "stages", "SourceSpec": "stages", "build_stage": "stages", "load_stages": "stages",
    "preset_stages": "stages",
    "build_corpus": "builtin",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'glm45.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"glm45.data.{_EXPORTS[name]}"), name)
