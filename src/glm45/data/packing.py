"""Packing tokenised documents into fixed-length training rows (paper §2.3).

Pre-training (`concat`): documents, each ending in <|endoftext|>, are concatenated into one
stream and cut every `seq_len` tokens, wherever that falls — random truncation, which the
paper keeps as data augmentation. A row holds seq_len + 1 tokens (the last one is the next
row's first) so every position has a next-token label; attention runs across document
boundaries, positions run 0..T−1. The incomplete tail is dropped.

Mid-training (`best_fit`): nothing is truncated. A document longer than `seq_len` is split
into chunks of exactly `seq_len` tokens plus a remainder; every other document is one chunk.
Chunks are packed with best-fit decreasing (each chunk, longest first, goes into the open row
whose free space it fills most tightly) into rows of `seq_len`, never splitting a chunk. BFD
and first-fit decreasing both have worst case 11/9·OPT + 6/9 but neither dominates on every
input (e.g. capacity 35, sizes 26 25 20 18 16 15 15 14 13 13 9 8 6 5 2 2 2: FFD 6 rows, BFD 7),
so both run and the packing with fewer rows is kept (BFD on ties): never more rows than FFD.
Rows keep their chunk boundaries. The loader turns them into segment ids and positions that
restart at 0 per chunk, and the trainer masks attention per segment. We reset both, because
the whole point of best-fit packing is that a reasoning trace or a repository is seen whole
and on its own: attending into an unrelated neighbour would leak context the model never has
at inference, and restarting positions makes a packed document look exactly like an
unpacked one (also what lets one row mix short and long documents without position
offsets acting as noise). The last token of each chunk gets no label (its successor is
elsewhere); padding fills the rest of a row, with its own segment and no labels.

Best-fit needs all chunks before packing, so it packs one window of `window_tokens` at a
time; larger windows pad less.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from glm45.data.document import DataError

PACKING_MODES = ("concat", "best_fit")


@dataclass
class TokenizedDoc:
    ids: np.ndarray  # int64 token ids, ending with <|endoftext|> for text documents
    mask: np.ndarray | None = None  # uint8, 1 = this token is a training target; None = all are
    source: str = ""


@dataclass
class PackedRow:
    tokens: np.ndarray  # concat: seq_len + 1 tokens; best_fit: seq_len tokens (padded)
    mask: np.ndarray | None  # uint8 per token, None = all ones
    chunk_lens: list[int] = field(default_factory=list)  # best_fit: lengths of the packed chunks, in order


@dataclass
class PackStats:
    docs: int = 0
    doc_tokens: int = 0
    rows: int = 0
    row_tokens: int = 0  # capacity of the rows written (seq_len each)
    pad_tokens: int = 0
    dropped_tokens: int = 0  # concat: the incomplete tail
    split_docs: int = 0  # documents cut across rows (concat) or into several chunks (best_fit)
    chunks: int = 0

    def as_dict(self) -> dict:
        return {
            "docs": self.docs, "doc_tokens": self.doc_tokens, "rows": self.rows, "chunks": self.chunks,
            "pad_tokens": self.pad_tokens, "dropped_tokens": self.dropped_tokens, "split_docs": self.split_docs,
            "padding_rate": self.pad_tokens / self.row_tokens if self.row_tokens else 0.0,
            "truncation_rate": self.split_docs / self.docs if self.docs else 0.0,
            "dropped_rate": self.dropped_tokens / self.doc_tokens if self.doc_tokens else 0.0,
        }


def split_into_chunks(length: int, seq_len: int) -> list[int]:
    """Chunk lengths of one document: itself if it fits, else full rows plus a remainder."""
    if length <= seq_len:
        return [length]
    full, rest = divmod(length, seq_len)
    return [seq_len] * full + ([rest] if rest else [])


class _MinCapacityIndex:
    """Open rows by free space; finds a row with the least free space >= a size in O(log T)."""

    def __init__(self, capacity: int):
        self.size = 1
        while self.size < capacity + 1:
            self.size *= 2
        self.count = [0] * (2 * self.size)  # segment tree: open rows per free-space value
        self.rows: dict[int, list[int]] = {}

    def add(self, free: int, row: int) -> None:
        self.rows.setdefault(free, []).append(row)
        self._update(free, 1)

    def pop_best(self, need: int) -> tuple[int, int] | None:
        """Remove and return (free, row) with the smallest free >= need, or None."""
        free = self._first_at_least(1, 0, self.size - 1, need)
        if free is None:
            return None
        self._update(free, -1)
        return free, self.rows[free].pop()

    def _first_at_least(self, node: int, lo: int, hi: int, need: int) -> int | None:
        if hi < need or self.count[node] == 0:
            return None
        if lo == hi:
            return lo
        mid = (lo + hi) // 2
        hit = self._first_at_least(2 * node, lo, mid, need)
        return hit if hit is not None else self._first_at_least(2 * node + 1, mid + 1, hi, need)

    def _update(self, free: int, delta: int) -> None:
        i = free + self.size
        while i:
            self.count[i] += delta
            i //= 2


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows as lists of item indices; items visited longest first, each into the tightest fit."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    index = _MinCapacityIndex(capacity)
    rows: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if not 0 < n <= capacity:
            raise DataError(f"item of length {n} cannot be packed into rows of {capacity}")
        hit = index.pop_best(n)
        if hit is None:
            rows.append([i])
            free, row = capacity - n, len(rows) - 1
        else:
            free, row = hit
            rows[row].append(i)
            free -= n
        if free > 0:
            index.add(free, row)
    return rows


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows as lists of item indices; items visited longest first, each into the first row with room."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    size = 1
    while size < max(1, len(lengths)):
        size *= 2
    tree = [0] * (2 * size)  # max free space over row ranges; unopened rows have 0
    rows: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if not 0 < n <= capacity:
            raise DataError(f"item of length {n} cannot be packed into rows of {capacity}")
        if tree[1] >= n:
            node = 1
            while node < size:
                node = 2 * node if tree[2 * node] >= n else 2 * node + 1
            row = node - size
            rows[row].append(i)
        else:
            row = len(rows)
            rows.append([i])
            node = row + size
            tree[node] = capacity
        tree[node] -= n
        node //= 2
        while node:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    return rows


def pack_best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """BFD, unless FFD needs fewer rows for this input."""
    bfd = best_fit_decreasing(lengths, capacity)
    ffd = first_fit_decreasing(lengths, capacity)
    return ffd if len(ffd) < len(bfd) else bfd


class Packer:
    """Feeds tokenised documents in, yields `PackedRow`s out; `stats` reports the rates."""

    def __init__(self, mode: str, seq_len: int, *, pad_id: int = 0, window_tokens: int | None = None):
        if mode not in PACKING_MODES:
            raise DataError(f"packing mode must be one of {PACKING_MODES}, got {mode!r}")
        if seq_len < 2:
            raise DataError(f"seq_len must be >= 2, got {seq_len}")
        self.mode, self.seq_len, self.pad_id = mode, seq_len, pad_id
        self.window_tokens = window_tokens or max(64 * seq_len, 1 << 20)
        self.stats = PackStats()
        self._ids: list[np.ndarray] = []  # concat: pending stream pieces; best_fit: pending chunks
        self._masks: list[np.ndarray | None] = []
        self._pending = 0
        self._stream_pos = 0  # concat: tokens fed so far
        self._has_mask = False

    def pack(self, docs: Iterable[TokenizedDoc]) -> Iterator[PackedRow]:
        for doc in docs:
            yield from self.add(doc)
        yield from self.finish()

    def add(self, doc: TokenizedDoc) -> Iterator[PackedRow]:
        n = len(doc.ids)
        if n == 0:
            return
        self.stats.docs += 1
        self.stats.doc_tokens += n
        self._has_mask |= doc.mask is not None
        if self.mode == "concat":
            s, T = self._stream_pos, self.seq_len
            self.stats.split_docs += s // T != (s + n - 1) // T  # this document crosses a row boundary
            self._stream_pos += n
            self._ids.append(np.asarray(doc.ids, np.int64))
            self._masks.append(doc.mask)
            self._pending += n
            if self._pending >= self.seq_len + 1:
                yield from self._emit_concat()
        else:
            chunks = split_into_chunks(n, self.seq_len)
            self.stats.split_docs += len(chunks) > 1
            offset = 0
            for c in chunks:
                self._ids.append(np.asarray(doc.ids[offset:offset + c], np.int64))
                self._masks.append(None if doc.mask is None else doc.mask[offset:offset + c])
                offset += c
            self._pending += n
            if self._pending >= self.window_tokens:
                yield from self._emit_best_fit()

    def finish(self) -> Iterator[PackedRow]:
        if self.mode == "concat":
            yield from self._emit_concat()
            self.stats.dropped_tokens += self._pending
            self._ids, self._masks, self._pending = [], [], 0
        else:
            yield from self._emit_best_fit()

    def _full_mask(self, pieces_ids: list[np.ndarray], pieces_mask: list[np.ndarray | None]) -> np.ndarray | None:
        if not self._has_mask:
            return None
        return np.concatenate([np.ones(len(i), np.uint8) if m is None else np.asarray(m, np.uint8)
                               for i, m in zip(pieces_ids, pieces_mask)])

    def _emit_concat(self) -> Iterator[PackedRow]:
        T = self.seq_len
        if self._pending < T + 1:
            return
        stream = np.concatenate(self._ids)
        mask = self._full_mask(self._ids, self._masks)
        n_rows = (len(stream) - 1) // T
        for r in range(n_rows):
            sl = slice(r * T, r * T + T + 1)
            self.stats.rows += 1
            self.stats.row_tokens += T
            yield PackedRow(stream[sl], None if mask is None else mask[sl])
        rest = n_rows * T  # the next row starts at the token the last row ended on
        self._ids = [stream[rest:]]
        self._masks = [None if mask is None else mask[rest:]]
        self._pending = len(stream) - rest

    def _emit_best_fit(self) -> Iterator[PackedRow]:
        if not self._ids:
            return
        T = self.seq_len
        lengths = [len(c) for c in self._ids]
        for row in pack_best_fit(lengths, T):
            ids = [self._ids[i] for i in row]
            used = sum(len(c) for c in ids)
            tokens = np.full(T, self.pad_id, np.int64)
            tokens[:used] = np.concatenate(ids)
            mask = None
            if self._has_mask:
                mask = np.zeros(T, np.uint8)
                mask[:used] = self._full_mask(ids, [self._masks[i] for i in row])
            self.stats.rows += 1
            self.stats.row_tokens += T
            self.stats.pad_tokens += T - used
            self.stats.chunks += len(row)
            yield PackedRow(tokens, mask, [len(c) for c in ids])
        self._ids, self._masks, self._pending = [], [], 0
