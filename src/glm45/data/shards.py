"""Token shards on disk: numpy arrays plus a JSON index, and random access to training examples.

Layout of a shard directory:
  index.json                  format, mode, seq_len, row width, dtype, vocab size, pad id,
                              per-shard row counts, packing statistics, the stage spec
  shard_00000.tokens.npy      [rows, width] uint16 (vocab <= 65536) or uint32
  shard_00000.chunks.npy      best_fit only: int32 chunk lengths of all rows, concatenated
  shard_00000.chunk_ptr.npy   best_fit only: int64 [rows + 1] offsets into chunks.npy
  shard_00000.mask.npy        only when some row has a loss mask: uint8 [rows, width]
Every file is written under a temporary name and renamed; index.json comes last, so a
directory with an index is complete.

`row_to_example` is the batch contract for the trainer (labels are next tokens, −100 where no
loss is taken; segment ids isolate packed documents; positions restart per document in
best_fit mode).
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glm45.data.document import DataError
from glm45.data.packing import PACKING_MODES, PackedRow

FORMAT = "glm45-packed-v1"
IGNORE_INDEX = -100


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(".tmp-" + path.name)
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


class ShardWriter:
    def __init__(self, out_dir: str | os.PathLike, *, mode: str, seq_len: int, vocab_size: int, pad_id: int,
                 rows_per_shard: int = 8192, meta: dict[str, Any] | None = None):
        if mode not in PACKING_MODES:
            raise DataError(f"packing mode must be one of {PACKING_MODES}, got {mode!r}")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "index.json").unlink(missing_ok=True)  # the directory is incomplete until close()
        for old in self.out.glob("shard_*.npy"):
            old.unlink()
        self.mode, self.seq_len, self.vocab_size, self.pad_id = mode, seq_len, vocab_size, pad_id
        self.width = seq_len + 1 if mode == "concat" else seq_len
        self.dtype = token_dtype(vocab_size)
        self.rows_per_shard = rows_per_shard
        self.meta = meta or {}
        self.shards: list[dict[str, Any]] = []
        self.total_tokens = 0
        self._rows: list[PackedRow] = []

    def add(self, row: PackedRow) -> None:
        if len(row.tokens) != self.width:
            raise DataError(f"row has {len(row.tokens)} tokens, expected {self.width} for {self.mode} rows")
        self._rows.append(row)
        if len(self._rows) == self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        name = f"shard_{len(self.shards):05d}"
        tokens = np.stack([r.tokens for r in self._rows])
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise DataError(f"token ids outside [0, {self.vocab_size}) in {name}")
        _save_npy(self.out / f"{name}.tokens.npy", tokens.astype(self.dtype))
        has_mask = any(r.mask is not None for r in self._rows)
        if has_mask:
            mask = np.stack([np.ones(self.width, np.uint8) if r.mask is None else r.mask for r in self._rows])
            _save_npy(self.out / f"{name}.mask.npy", mask.astype(np.uint8))
        if self.mode == "best_fit":
            lens = [r.chunk_lens for r in self._rows]
            _save_npy(self.out / f"{name}.chunks.npy", np.array([c for l in lens for c in l], np.int32))
            _save_npy(self.out / f"{name}.chunk_ptr.npy", np.cumsum([0] + [len(l) for l in lens]).astype(np.int64))
            used = sum(sum(l) for l in lens)
        else:
            used = len(self._rows) * self.seq_len
        self.shards.append({"name": name, "rows": len(self._rows), "mask": has_mask, "tokens": int(used)})
        self.total_tokens += used
        self._rows = []

    def close(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        self._flush()
        index = {
            "format": FORMAT, "mode": self.mode, "seq_len": self.seq_len, "row_width": self.width,
            "dtype": self.dtype.name, "vocab_size": self.vocab_size, "pad_id": self.pad_id,
            "num_rows": sum(s["rows"] for s in self.shards), "num_tokens": self.total_tokens,
            "shards": self.shards, "stats": stats or {}, **self.meta,
        }
        tmp = self.out / ".tmp-index.json"
        tmp.write_text(json.dumps(index, indent=2))
        os.replace(tmp, self.out / "index.json")
        return index


def load_index(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path) / "index.json"
    if not p.is_file():
        raise DataError(f"{path}: no index.json (not a finished shard directory)")
    index = json.loads(p.read_text())
    if index.get("format") != FORMAT:
        raise DataError(f"{p}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


@dataclass
class _Shard:
    tokens: np.ndarray
    mask: np.ndarray | None
    chunks: np.ndarray | None
    chunk_ptr: np.ndarray | None


class PackedDataset:
    """Random access to the packed rows of a shard directory (memory-mapped)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.index = load_index(path)
        self.mode: str = self.index["mode"]
        self.seq_len: int = self.index["seq_len"]
        self.shards: list[_Shard] = []
        starts = [0]
        for s in self.index["shards"]:
            base = self.path / s["name"]
            load = lambda suffix: np.load(f"{base}.{suffix}.npy", mmap_mode="r")  # noqa: E731
            self.shards.append(_Shard(
                tokens=load("tokens"), mask=load("mask") if s["mask"] else None,
                chunks=load("chunks") if self.mode == "best_fit" else None,
                chunk_ptr=load("chunk_ptr") if self.mode == "best_fit" else None))
            starts.append(starts[-1] + s["rows"])
        self._starts = starts

    def __len__(self) -> int:
        return self._starts[-1]

    def row(self, i: int) -> PackedRow:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        k = bisect_right(self._starts, i) - 1
        sh, j = self.shards[k], i - self._starts[k]
        chunk_lens = [] if sh.chunks is None else sh.chunks[sh.chunk_ptr[j]:sh.chunk_ptr[j + 1]].tolist()
        return PackedRow(np.asarray(sh.tokens[j], np.int64), None if sh.mask is None else np.asarray(sh.mask[j]),
                         chunk_lens)

    def example(self, i: int) -> dict[str, np.ndarray]:
        return row_to_example(self.row(i), self.mode, self.seq_len)


def row_to_example(row: PackedRow, mode: str, seq_len: int) -> dict[str, np.ndarray]:
    """input_ids, labels, position_ids, segment_ids (int64 [seq_len] each) of one packed row."""
    T = seq_len
    if mode == "concat":
        input_ids = row.tokens[:-1]
        labels = row.tokens[1:].copy()
        if row.mask is not None:
            labels[row.mask[1:] == 0] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "position_ids": np.arange(T, dtype=np.int64),
                "segment_ids": np.zeros(T, np.int64)}
    lens = np.asarray(row.chunk_lens, np.int64)
    used = int(lens.sum())
    pad = T - used
    all_lens = np.append(lens, pad) if pad else lens
    segment_ids = np.repeat(np.arange(len(all_lens), dtype=np.int64), all_lens)
    starts = np.repeat(np.cumsum(all_lens) - all_lens, all_lens)
    position_ids = np.arange(T, dtype=np.int64) - starts
    labels = np.full(T, IGNORE_INDEX, np.int64)
    same = (segment_ids[:-1] == segment_ids[1:]) & (segment_ids[:-1] < len(lens))
    if row.mask is not None:
        same &= row.mask[1:] == 1
    labels[:-1][same] = row.tokens[1:][same]
    return {"input_ids": row.tokens, "labels": labels, "position_ids": position_ids, "segment_ids": segment_ids}
