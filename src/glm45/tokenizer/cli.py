"""`glm45 tokenizer`: train a byte-level BPE with the GLM-4.5 special tokens from text/JSONL files.

Plain-text files are read in paragraphs (runs of lines up to a blank line); JSONL files
(`.jsonl`, `.jsonl.gz`, or `.json` with one object per line) give the string under `--field`
of each record. Gzipped inputs (`.gz`) are read transparently.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from glm45.tokenizer.glm import TokenizerError
from glm45.tokenizer.train import MIN_VOCAB_SIZE, train_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="text (.txt, any other name) or JSONL (.jsonl) files, optionally .gz")
    parser.add_argument("--vocab-size", type=int, required=True, metavar="N",
                        help=f"vocabulary size including the special tokens (>= {MIN_VOCAB_SIZE})")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for tokenizer.json + tokenizer_config.json")
    parser.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    parser.add_argument("--min-frequency", type=int, default=2, help="least count of a pair to merge (default: 2)")


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def _is_jsonl(path: Path) -> bool:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return bool(suffixes) and suffixes[-1] in (".jsonl", ".json")


def iter_texts(paths: list[Path], field: str = "text") -> Iterator[str]:
    """The training texts in `paths`: JSONL records' `field`, or paragraphs of plain text."""
    for path in paths:
        if not path.is_file():
            raise TokenizerError(f"input file not found: {path}")
        with _open(path) as f:
            if _is_jsonl(path):
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise TokenizerError(f"{path}:{n}: not valid JSON ({e.msg})") from e
                    text = record.get(field) if isinstance(record, dict) else None
                    if not isinstance(text, str):
                        raise TokenizerError(f"{path}:{n}: record has no string field {field!r}")
                    yield text
            else:
                paragraph: list[str] = []
                for line in f:
                    paragraph.append(line)
                    if not line.strip():
                        yield "".join(paragraph)
                        paragraph = []
                if paragraph:
                    yield "".join(paragraph)


def run(args: argparse.Namespace) -> int:
    try:
        tok = train_tokenizer(iter_texts([Path(p) for p in args.input], args.field), args.vocab_size,
                              min_frequency=args.min_frequency)
        tok.save(args.out)
    except TokenizerError as e:
        print(f"glm45 tokenizer: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "vocab_size": tok.vocab_size}))
    return 0
