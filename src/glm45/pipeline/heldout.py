"""Held-out text for the speedrun's base-model metrics, and the unigram baseline.

The built-in corpus draws prose (docstrings) and code from the same standard-library modules, and
its repo-level documents are those modules again, so holding out random documents would leave
their text in training. Whole top-level modules are held out instead: every web, code and repo
document of a held-out module leaves the training sets. Arithmetic text from the `test` split of
`glm45.tasks` (which never shares a question with the training split) completes the set.

The unigram baseline is the entropy of the pre-training tokens' frequency distribution: a model
must get below it to have learnt anything beyond token frequencies.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from glm45.data.document import Document, read_documents, write_documents

SPLIT_SETS = ("web", "code", "repo")  # sets drawn from standard-library modules
HELDOUT_FILE = "heldout.jsonl"


def module_key(doc: Document) -> str | None:
    """The top-level standard-library module a document comes from (None: not from one)."""
    repo = doc.meta.get("repo")
    if doc.source == "repo" and isinstance(repo, str) and "/" in repo:
        return repo.split("/", 1)[1]
    path = doc.meta.get("path")
    if isinstance(path, str) and path.endswith(".py"):
        return Path(path).parts[0].removesuffix(".py")
    return None


def is_heldout(key: str | None, fraction: float) -> bool:
    return key is not None and zlib.crc32(key.encode()) % 10_000 < fraction * 10_000


def split_heldout(corpus: Path, fraction: float, n_math: int, seed: int = 0) -> dict[str, int]:
    """Move held-out modules' documents out of the corpus's sets into `heldout.jsonl` (web and
    code only: repo documents repeat the code) plus `n_math` test-split arithmetic documents.
    Returns the held-out document count per source."""
    from glm45.tasks import generate_arithmetic
    from glm45.tasks.arithmetic import to_document

    held: list[Document] = []
    for name in SPLIT_SETS:
        path = corpus / f"{name}.jsonl"
        if not path.is_file():
            continue
        keep = []
        for doc in read_documents(path):
            if not is_heldout(module_key(doc), fraction):
                keep.append(doc)
            elif name != "repo":
                held.append(doc)
        write_documents(keep, path)
    held += [Document(text=to_document(p), source="math", meta={"task": p.id})
             for p in generate_arithmetic(n_math, seed + 7, [1, 2, 3, 4, 5], split="test", unique=True)]
    write_documents(held, corpus / HELDOUT_FILE)
    counts: dict[str, int] = {}
    for d in held:
        counts[d.source] = counts.get(d.source, 0) + 1
    return counts


def heldout_texts(corpus: Path, tokenizer: Any, max_tokens: int) -> list[str]:
    """Held-out texts up to about `max_tokens` tokens, shared equally between sources (web,
    code, math) so that no source dominates the figure."""
    by_source: dict[str, list[str]] = {}
    for doc in read_documents(corpus / HELDOUT_FILE):
        by_source.setdefault(doc.source, []).append(doc.text)
    share = max_tokens // max(1, len(by_source))
    out = []
    for texts in by_source.values():
        used = 0
        for text in texts:
            if used >= share:
                break
            n = len(tokenizer.encode(text))
            if used + n > share:  # cut the last document to the share (at a character boundary)
                text = text[: max(1, len(text) * (share - used) // n)]
                n = share - used
            out.append(text)
            used += n
    return out


def token_counts(shard_dirs: Iterable[Path], vocab_size: int) -> np.ndarray:
    """Token frequencies over shard directories' rows (concat rows hold no padding but the tail)."""
    from glm45.data.shards import load_index

    counts = np.zeros(vocab_size, dtype=np.int64)
    for d in shard_dirs:
        index = load_index(d)
        pad = index["pad_id"]
        for shard in index["shards"]:
            tokens = np.load(Path(d) / f"{shard['name']}.tokens.npy", mmap_mode="r")
            c = np.bincount(np.asarray(tokens).ravel(), minlength=vocab_size)[:vocab_size]
            tail = np.asarray(tokens[-1])  # the last row alone may end in padding
            c[pad] -= int((tail == pad).sum())
            counts += c
    return counts


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy (nats per token) of the frequency distribution `counts`."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def unigram_cross_entropy(counts: np.ndarray, ids: Iterable[int]) -> float:
    """Loss (nats per token) of the add-½-smoothed unigram model of `counts` on `ids`."""
    logp = np.log((counts + 0.5) / (counts.sum() + 0.5 * len(counts)))
    ids = np.fromiter(ids, dtype=np.int64)
    return float(-logp[ids].mean()) if len(ids) else math.nan
