"""Shared builders for trainer tests: small learnable token shards and tiny trainers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glm45.config import ModelConfig
from glm45.data.loader import PackedLoader
from glm45.data.packing import Packer, TokenizedDoc
from glm45.data.shards import ShardWriter
from glm45.model import GLM45ForCausalLM
from glm45.train.optim import build_optimizer
from glm45.train.schedules import ScheduleConfig
from glm45.train.trainer import TrainConfig, Trainer

VOCAB = 512
EOS = 0


def synthetic_shards(path: str | Path, *, mode: str = "concat", seq_len: int = 32, n_docs: int = 300,
                     seed: int = 0) -> Path:
    """Arithmetic progressions mod the vocabulary (learnable), each ending in EOS, packed."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n, step, start = int(rng.integers(5, 3 * seq_len)), int(rng.integers(1, 7)), int(rng.integers(0, 500))
        docs.append(TokenizedDoc(np.append((np.arange(n) * step + start) % (VOCAB - 24) + 24, EOS)))
    writer = ShardWriter(path, mode=mode, seq_len=seq_len, vocab_size=VOCAB, pad_id=EOS, rows_per_shard=64)
    for row in Packer(mode, seq_len, pad_id=EOS).pack(docs):
        writer.add(row)
    writer.close()
    return Path(path)


def tiny_model(seed: int = 0, **overrides) -> GLM45ForCausalLM:
    torch.manual_seed(seed)
    model = GLM45ForCausalLM(ModelConfig.preset("tiny", **overrides))
    model.init_weights(seed)
    return model


def schedule(total_tokens: int = 4096, batch_tokens: int = 128, batch_start_tokens: int | None = None,
             batch_warmup_tokens: int = 0, seq_len: int = 32, **kw) -> ScheduleConfig:
    return ScheduleConfig(total_tokens=total_tokens, warmup_tokens=kw.pop("warmup_tokens", 256),
                          peak_lr=kw.pop("peak_lr", 3e-3), batch_tokens=batch_tokens,
                          batch_start_tokens=batch_start_tokens or batch_tokens,
                          batch_warmup_tokens=batch_warmup_tokens, seq_len=seq_len, **kw)


def tiny_trainer(out: str | Path, shards: str | Path | None, *, micro_batch: int = 4, sched: ScheduleConfig | None = None,
                 model: GLM45ForCausalLM | None = None, rank: int = 0, world_size: int = 1, info=None,
                 **config) -> Trainer:
    model = model if model is not None else tiny_model()
    opt = build_optimizer(model, 3e-3, ns_dtype="float32")
    loader = None if shards is None else PackedLoader(shards, batch_size=micro_batch, seed=0, rank=rank,
                                                      world_size=world_size)
    # fp32 by default: these tests compare runs number for number, and bf16 is picked where fast
    cfg = TrainConfig(**{"progress": False, "keep_checkpoints": 0, "plots": False, "autocast_dtype": "float32",
                         **config})
    return Trainer(model, opt, sched or schedule(), loader, cfg, out, info=info)
