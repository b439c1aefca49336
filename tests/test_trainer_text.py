"""A tiny pre-training run on real text (Python standard-library source) learns: its loss
falls well below the unigram entropy of the token stream, i.e. it uses context."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from glm45.data.packing import Packer, TokenizedDoc
from glm45.data.shards import ShardWriter
from glm45.tokenizer import train_tokenizer
from glm45.train.metrics import read_metrics
from helpers_train import VOCAB, schedule, tiny_trainer


def stdlib_sources(max_chars: int) -> list[str]:
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
        total += len(texts[-1])
        if total >= max_chars:
            break
    return texts


def unigram_entropy(stream: np.ndarray) -> float:
    """Entropy (nats) of the token frequency distribution: the best loss without context."""
    p = np.bincount(stream)
    p = p[p > 0] / len(stream)
    return float(-(p * np.log(p)).sum())


@pytest.mark.slow
def test_pretraining_on_python_source_beats_the_unigram_entropy(tmp_path):
    torch.set_num_threads(1)
    texts = stdlib_sources(200_000)
    tok = train_tokenizer(texts, VOCAB)
    docs = [np.append(np.asarray(ids, np.int64), tok.eos_token_id) for ids in tok.encode_batch(texts)]
    H = unigram_entropy(np.concatenate(docs))
    assert 4.5 < H < 6.2  # a 512-token BPE over code: far from uniform (ln 512 = 6.24)
    writer = ShardWriter(tmp_path / "shards", mode="concat", seq_len=64, vocab_size=VOCAB, pad_id=tok.eos_token_id)
    for row in Packer("concat", 64, pad_id=tok.eos_token_id).pack(TokenizedDoc(d) for d in docs):
        writer.add(row)
    writer.close()
    steps = 80
    sched = schedule(total_tokens=steps * 512, warmup_tokens=5 * 512, batch_tokens=512, seq_len=64, peak_lr=1e-2)
    tiny_trainer(tmp_path / "run", tmp_path / "shards", micro_batch=8, sched=sched).train(max_steps=steps)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    final = float(np.mean([r["loss"] for r in rows[-10:]]))
    assert rows[0]["loss"] > H  # starts near uniform
    assert final < H - 1.0, (final, H)
    assert float(np.mean([r["mtp_loss"] for r in rows[-10:]])) < H  # the MTP head learns too (t+2 is harder)
