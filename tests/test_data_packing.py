"""Packing: concat with random truncation, best-fit that never splits a chunk, and the batch contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glm45.data.document import DataError
from glm45.data.packing import (
    Packer, TokenizedDoc, best_fit_decreasing, first_fit_decreasing, pack_best_fit, split_into_chunks,
)
from glm45.data.shards import IGNORE_INDEX, row_to_example


def _docs(lengths: list[int]) -> list[TokenizedDoc]:
    # token = doc * 100000 + position: every token says where it came from
    return [TokenizedDoc(np.arange(n, dtype=np.int64) + 100000 * (i + 1)) for i, n in enumerate(lengths)]


def test_split_into_chunks():
    assert split_into_chunks(10, 16) == [10]
    assert split_into_chunks(16, 16) == [16]
    assert split_into_chunks(40, 16) == [16, 16, 8]
    assert split_into_chunks(32, 16) == [16, 16]


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 100), min_size=1, max_size=60), cap=st.integers(8, 100))
def test_packers_are_valid_and_best_fit_never_uses_more_rows_than_ffd(lengths, cap):
    items = [min(n, cap) for n in lengths]
    for pack in (best_fit_decreasing, first_fit_decreasing, pack_best_fit):
        rows = pack(items, cap)
        assert sorted(i for r in rows for i in r) == list(range(len(items)))  # every item exactly once
        assert all(sum(items[i] for i in r) <= cap for r in rows)
    assert len(pack_best_fit(items, cap)) <= len(first_fit_decreasing(items, cap))
    assert len(pack_best_fit(items, cap)) <= len(best_fit_decreasing(items, cap))
    assert len(pack_best_fit(items, cap)) >= -(-sum(items) // cap)  # no packing beats the volume bound


def test_best_fit_beats_ffd_where_ffd_is_worse_and_vice_versa():
    # FFD is worse here: it puts 3 beside 10 (free 4 → 1), BFD beside 6 + 5 (free 3 → 0), leaving room for 2 + 2.
    assert len(best_fit_decreasing([10, 6, 5, 3, 2, 2], 14)) == 2 and len(first_fit_decreasing([10, 6, 5, 3, 2, 2], 14)) == 3
    worse_for_bfd = [26, 25, 20, 18, 16, 15, 15, 14, 13, 13, 9, 8, 6, 5, 2, 2, 2]
    assert len(best_fit_decreasing(worse_for_bfd, 35)) == 7 and len(first_fit_decreasing(worse_for_bfd, 35)) == 6
    assert len(pack_best_fit(worse_for_bfd, 35)) == 6


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 150), min_size=1, max_size=40), window=st.integers(1, 400))
def test_best_fit_rows_never_split_a_chunk(lengths, window):
    T = 64
    packer = Packer("best_fit", T, pad_id=0, window_tokens=window)
    rows = list(packer.pack(_docs(lengths)))
    seen: dict[int, list[tuple[int, int]]] = {}
    for row in rows:
        assert len(row.tokens) == T and sum(row.chunk_lens) <= T
        assert (row.tokens[sum(row.chunk_lens):] == 0).all()  # padding after the chunks
        pos = 0
        for c in row.chunk_lens:
            chunk = row.tokens[pos:pos + c]
            doc, start = divmod(int(chunk[0]), 100000)
            assert (chunk == chunk[0] + np.arange(c)).all()  # contiguous slice of one document
            assert start % T == 0  # chunks start only at multiples of seq_len: short docs are whole
            seen.setdefault(doc, []).append((start, c))
            pos += c
    for i, n in enumerate(lengths):  # every document is covered exactly, split only if longer than T
        pieces = sorted(seen[i + 1])
        assert [c for _, c in pieces] == split_into_chunks(n, T)
    stats = packer.stats.as_dict()
    assert stats["split_docs"] == sum(n > T for n in lengths)
    assert stats["pad_tokens"] == len(rows) * T - sum(lengths)
    assert stats["dropped_tokens"] == 0


def test_concat_rows_are_consecutive_windows_of_the_stream():
    lengths = [30, 5, 70, 12, 100, 3]
    T = 16
    packer = Packer("concat", T)
    rows = list(packer.pack(_docs(lengths)))
    stream = np.concatenate([d.ids for d in _docs(lengths)])
    n_rows = (len(stream) - 1) // T
    assert len(rows) == n_rows
    for k, row in enumerate(rows):
        assert np.array_equal(row.tokens, stream[k * T:k * T + T + 1])  # T + 1 tokens: the last is the next's first
    stats = packer.stats.as_dict()
    assert stats["dropped_tokens"] == len(stream) - n_rows * T
    starts = np.cumsum([0] + lengths[:-1])
    crossing = sum(s // T != (s + n - 1) // T for s, n in zip(starts, lengths))
    assert stats["split_docs"] == crossing and stats["truncation_rate"] == crossing / len(lengths)
    assert stats["padding_rate"] == 0.0


def test_example_contract_best_fit():
    from glm45.data.packing import PackedRow

    tokens = np.array([11, 12, 13, 21, 22, 31, 0, 0])
    mask = np.array([1, 1, 1, 0, 1, 1, 0, 0], np.uint8)
    ex = row_to_example(PackedRow(tokens, mask, [3, 2, 1]), "best_fit", 8)
    assert ex["segment_ids"].tolist() == [0, 0, 0, 1, 1, 2, 3, 3]
    assert ex["position_ids"].tolist() == [0, 1, 2, 0, 1, 0, 0, 1]
    # next token within a segment, where the target is trained; never across documents or into padding
    assert ex["labels"].tolist() == [12, 13, -100, 22, -100, -100, -100, -100]
    assert ex["input_ids"].tolist() == tokens.tolist()
    full = row_to_example(PackedRow(tokens[:6], None, [3, 2, 1]), "best_fit", 6)
    assert full["labels"].tolist() == [12, 13, -100, 22, -100, -100]


def test_example_contract_concat():
    from glm45.data.packing import PackedRow

    tokens = np.arange(9)
    mask = np.array([1, 1, 0, 0, 1, 1, 1, 1, 0], np.uint8)
    ex = row_to_example(PackedRow(tokens, mask), "concat", 8)
    assert ex["input_ids"].tolist() == list(range(8))
    assert ex["labels"].tolist() == [1, IGNORE_INDEX, IGNORE_INDEX, 4, 5, 6, 7, IGNORE_INDEX]
    assert ex["position_ids"].tolist() == list(range(8)) and not ex["segment_ids"].any()


def test_masks_travel_with_tokens_through_packing():
    docs = [TokenizedDoc(np.arange(10) + 100, None), TokenizedDoc(np.arange(6) + 200, np.array([0, 0, 1, 1, 1, 1], np.uint8))]
    [row] = list(Packer("best_fit", 20).pack(docs))
    pos = 0
    for c in row.chunk_lens:
        piece, m = row.tokens[pos:pos + c], row.mask[pos:pos + c]
        assert m.tolist() == ([1] * 10 if piece[0] == 100 else [0, 0, 1, 1, 1, 1])
        pos += c


def test_bad_arguments():
    with pytest.raises(DataError, match="packing mode"):
        Packer("greedy", 16)
    with pytest.raises(DataError, match="cannot be packed"):
        best_fit_decreasing([17], 16)
