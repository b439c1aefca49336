"""Throughput of the data pipeline: documents/s and tokens/s through tokenise + pack (+ shard write).

Runs on the built-in corpus (standard-library prose and code plus synthetic tasks), so it
needs nothing but this machine. The peer is the raw `tokenizers` batch encoder on the same
texts in the same process: `ratio_vs_raw_tokenizer` says how much of the raw encoding speed
the full tokenise → pack → write path keeps. Prints one JSON object.

    python benchmarks/data_pipeline.py [--budget-chars 4000000] [--seq-len 1024] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from glm45.data.builtin import build_corpus
from glm45.data.document import read_documents
from glm45.data.packing import Packer
from glm45.data.shards import ShardWriter
from glm45.data.tokenize import DocumentTokenizer
from glm45.tokenizer import train_tokenizer


def run_pack(docs, tokenizer, mode: str, seq_len: int, out: Path) -> dict:
    t0 = time.perf_counter()
    tok = DocumentTokenizer(tokenizer)
    packer = Packer(mode, seq_len, pad_id=tok.eos_id)
    writer = ShardWriter(out, mode=mode, seq_len=seq_len, vocab_size=tokenizer.vocab_size, pad_id=tok.eos_id)
    for row in packer.pack(tok.apply(docs)):
        writer.add(row)
    writer.close()
    dt = time.perf_counter() - t0
    stats = packer.stats.as_dict()
    return {"seconds": round(dt, 3), "docs_per_s": round(tok.docs / dt, 1), "tokens_per_s": round(tok.tokens / dt),
            "rows": stats["rows"], "padding_rate": round(stats["padding_rate"], 4),
            "truncation_rate": round(stats["truncation_rate"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-chars", type=int, default=4_000_000)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=8192)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_corpus(tmp / "corpus", budget_chars=args.budget_chars, seed=0)
        text_docs = [d for n in ("web", "code", "math") for d in read_documents(tmp / "corpus" / f"{n}.jsonl")]
        chat_docs = [d for n in ("reasoning", "agent") for d in read_documents(tmp / "corpus" / f"{n}.jsonl")]
        tokenizer = train_tokenizer((d.text for d in text_docs), args.vocab)

        texts = [d.text for d in text_docs]
        tokenizer.encode_batch(texts[:500])  # warm-up, so neither side pays first-call costs
        t0 = time.perf_counter()
        n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
        raw_dt = time.perf_counter() - t0
        raw = {"docs_per_s": round(len(texts) / raw_dt, 1), "tokens_per_s": round(n_tokens / raw_dt)}

        concat = run_pack(text_docs, tokenizer, "concat", args.seq_len, tmp / "concat")
        best_fit = run_pack(text_docs, tokenizer, "best_fit", args.seq_len, tmp / "best_fit")
        chat = run_pack(chat_docs, tokenizer, "best_fit", args.seq_len, tmp / "chat")
    print(json.dumps({
        "benchmark": "data_pipeline", "text_docs": len(text_docs), "chat_docs": len(chat_docs),
        "text_tokens": n_tokens, "seq_len": args.seq_len, "vocab": tokenizer.vocab_size,
        "raw_tokenizer_encode_batch": raw,
        "tokenise_pack_concat": concat, "tokenise_pack_best_fit": best_fit, "tokenise_pack_chat_best_fit": chat,
        "ratio_vs_raw_tokenizer": {"concat": round(concat["tokens_per_s"] / raw["tokens_per_s"], 3),
                                   "best_fit": round(best_fit["tokens_per_s"] / raw["tokens_per_s"], 3)},
    }, indent=2))


if __name__ == "__main__":
    main()
