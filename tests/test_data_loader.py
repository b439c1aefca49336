"""Token shards and the training loader: contract, determinism, exact resume, rank splitting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glm45.data.document import DataError, Document
from glm45.data.loader import PackedLoader
from glm45.data.packing import Packer, TokenizedDoc
from glm45.data.shards import PackedDataset, ShardWriter, load_index
from glm45.data.tokenize import DocumentTokenizer
from glm45.tokenizer import train_tokenizer

T = 32


def _build(path, mode: str = "best_fit", n_docs: int = 150, rows_per_shard: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = [TokenizedDoc(rng.integers(1, 5000, size=int(rng.integers(3, 80)))) for _ in range(n_docs)]
    packer = Packer(mode, T, pad_id=0)
    writer = ShardWriter(path, mode=mode, seq_len=T, vocab_size=5000, pad_id=0, rows_per_shard=rows_per_shard)
    rows = []
    for row in packer.pack(docs):
        writer.add(row)
        rows.append(row)
    writer.close(stats=packer.stats.as_dict())
    return rows


@pytest.mark.parametrize("mode", ["best_fit", "concat"])
def test_shards_roundtrip(tmp_path, mode):
    rows = _build(tmp_path, mode)
    index = load_index(tmp_path)
    assert index["num_rows"] == len(rows) and len(index["shards"]) == -(-len(rows) // 16)
    assert index["dtype"] == "uint16" and index["row_width"] == (T + 1 if mode == "concat" else T)
    assert np.load(tmp_path / "shard_00000.tokens.npy").dtype == np.uint16
    ds = PackedDataset(tmp_path)
    for i in (0, 17, len(rows) - 1):
        assert np.array_equal(ds.row(i).tokens, rows[i].tokens) and ds.row(i).chunk_lens == rows[i].chunk_lens
    assert not list(tmp_path.glob(".tmp-*"))  # every file renamed into place


def test_batches_follow_the_contract(tmp_path):
    _build(tmp_path)
    batch = next(iter(PackedLoader(tmp_path, batch_size=4, seed=0)))
    assert set(batch) == {"input_ids", "labels", "position_ids", "segment_ids"}
    for v in batch.values():
        assert v.shape == (4, T) and v.dtype == torch.long
    seg, pos, lab, ids = batch["segment_ids"], batch["position_ids"], batch["labels"], batch["input_ids"]
    new_doc = torch.ones_like(seg, dtype=torch.bool)
    new_doc[:, 1:] = seg[:, 1:] != seg[:, :-1]
    assert (pos[new_doc] == 0).all() and (pos[~new_doc] == pos.roll(1, dims=1)[~new_doc] + 1).all()
    same = seg[:, :-1] == seg[:, 1:]
    trained = lab[:, :-1] != -100
    assert (lab[:, :-1][trained] == ids[:, 1:][trained]).all() and not (trained & ~same).any()


def test_same_seed_same_batches_and_exact_resume(tmp_path):
    _build(tmp_path)
    a = PackedLoader(tmp_path, batch_size=5, seed=3)
    it = iter(a)
    first = [next(it) for _ in range(7)]
    state = json.loads(json.dumps(a.state_dict()))  # what goes into a checkpoint
    rest = [next(it) for _ in range(10)]  # crosses the epoch boundary (rows/5 < 17)
    again = list(_take(PackedLoader(tmp_path, batch_size=5, seed=3), 7))
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(first, again))
    b = PackedLoader(tmp_path, batch_size=5, seed=3)
    b.load_state_dict(state)
    resumed = list(_take(b, 10))
    for x, y in zip(rest, resumed):
        for k in x:
            assert torch.equal(x[k], y[k])
    other = next(iter(PackedLoader(tmp_path, batch_size=5, seed=4)))
    assert not torch.equal(other["input_ids"], first[0]["input_ids"])


def _take(loader, n):
    it = iter(loader)
    for _ in range(n):
        yield next(it)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_cover_every_row_once_per_epoch(tmp_path, world_size):
    _build(tmp_path)
    n = len(PackedDataset(tmp_path))
    seen = []
    for rank in range(world_size):
        loader = PackedLoader(tmp_path, batch_size=4, seed=1, rank=rank, world_size=world_size, epochs=1)
        rows = [tuple(r.tolist()) for b in loader for r in b["input_ids"]]
        assert len(rows) == loader.rows_per_epoch
        seen.extend(rows)
    ds = PackedDataset(tmp_path)
    all_rows = sorted(tuple(ds.example(i)["input_ids"].tolist()) for i in range(n))
    assert sorted(seen) == all_rows  # the union over ranks is every row exactly once


def test_finite_epochs_length_and_drop_last(tmp_path):
    _build(tmp_path)
    n = len(PackedDataset(tmp_path))
    loader = PackedLoader(tmp_path, batch_size=8, epochs=2)
    assert len(loader) == -(-2 * n // 8) == len(list(loader))
    loader = PackedLoader(tmp_path, batch_size=8, epochs=2, drop_last=True)
    assert len(loader) == 2 * n // 8 == len(list(loader))
    with pytest.raises(TypeError):
        len(PackedLoader(tmp_path, batch_size=8))


def test_resume_rejects_a_different_setup(tmp_path):
    _build(tmp_path)
    state = PackedLoader(tmp_path, batch_size=4, seed=0, world_size=2).state_dict()
    with pytest.raises(DataError, match="world_size"):
        PackedLoader(tmp_path, batch_size=4, seed=0, world_size=4).load_state_dict(state)
    with pytest.raises(DataError, match="rank"):
        PackedLoader(tmp_path, batch_size=4, rank=2, world_size=2)
    with pytest.raises(DataError, match="no index.json"):
        PackedLoader(tmp_path / "nowhere", batch_size=4)


def test_chat_samples_train_only_on_assistant_tokens(tmp_path):
    tok = train_tokenizer(["The answer is 4. What is 2 + 2? Let me add the numbers."] * 20, 400)
    chat = Document(text="", messages=[{"role": "user", "content": "What is 2 + 2?"},
                                       {"role": "assistant", "reasoning_content": "add", "content": "4"}])
    plain = Document(text="The answer is 4.")
    dt = DocumentTokenizer(tok)
    tokenized = list(dt.apply([chat, plain]))
    assert tokenized[1].mask is None and tokenized[1].ids[-1] == tok.eos_token_id
    writer = ShardWriter(tmp_path, mode="best_fit", seq_len=64, vocab_size=tok.vocab_size, pad_id=tok.pad_token_id)
    for row in Packer("best_fit", 64, pad_id=tok.pad_token_id).pack(tokenized):
        writer.add(row)
    writer.close()
    batch = next(iter(PackedLoader(tmp_path, batch_size=1, shuffle=False)))
    ids, labels, seg = batch["input_ids"][0], batch["labels"][0], batch["segment_ids"][0]
    chat_seg = seg[ids == tok.token_to_id("<|user|>")][0]
    targets = [int(t) for t, s in zip(labels, seg) if s == chat_seg and t != -100]
    text = tok.decode(targets)
    assert text == "\n<think>add</think>\n4<|endoftext|>"  # reasoning, answer and the stop token
    assert "What is" not in text  # the prompt is never a target
    plain_targets = [int(t) for t, s in zip(labels, seg) if s != chat_seg and t != -100]
    assert tok.decode(plain_targets) == tok.decode(tokenized[1].ids[1:].tolist())  # plain text: every next token


def test_raw_hf_tokenizer_is_wrapped_and_checked():
    from tokenizers import Tokenizer, models

    tok = train_tokenizer(["plain text for the tokenizer"] * 10, 300)
    dt = DocumentTokenizer(tok.backend)  # a raw `tokenizers.Tokenizer` with the GLM special tokens
    [t] = list(dt.apply([Document(text="plain text")]))
    assert t.ids.tolist() == tok.encode("plain text") + [tok.eos_token_id]
    with pytest.raises(DataError, match="special tokens"):
        DocumentTokenizer(Tokenizer(models.BPE()))
