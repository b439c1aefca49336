"""Fine-tune a checkpoint on chat samples: data -> packed shards -> the shared Trainer -> HF export.

Output directory layout:
    data/           best-fit packed shards (index.json holds the sample counts)
    checkpoints/    the trainer's resumable checkpoints (model, optimizer, schedule, loader, RNG)
    metrics.jsonl   one record per optimizer step (loss, mtp_loss, aux_loss, lr, tokens/s, ...)
    plots/          the trainer's PNG plots
    summary.json    the trainer's summary plus the data counts and where the model is
    model/          the fine-tuned model as a Hugging Face directory with tokenizer.json and
                    tokenizer_config.json (chat template included): `glm45 serve --model OUT/model`

Everything but the data is the pre-training machinery (glm45.train): `Trainer` (autocast by
glm45.runtime.compute_dtype, gradient accumulation, clipping, loss-free balance update, metrics,
progress bar, atomic checkpoints and exact resume, DDP / FSDP2 under torchrun), the Muon + AdamW
optimizer, the LR schedule over tokens (linear warm-up, cosine to `min_lr_ratio`) and `LMLoss`,
whose token-mean cross-entropy over labels != -100 is the assistant-only SFT loss on packed rows
(plus the MTP loss, cut at sample boundaries, and the sequence balance loss).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from glm45.data.document import Document
from glm45.data.loader import PackedLoader
from glm45.data.shards import load_index
from glm45.runtime import check_dtype_name, dtype_name, resolve_dtype
from glm45.sft.dataset import SFTDataConfig, build_sft_dataset
from glm45.sft.records import SFTError
from glm45.train.checkpoint import latest_checkpoint
from glm45.train.distributed import init_distributed, parallelize
from glm45.train.loss import LMLoss
from glm45.train.metrics import read_metrics
from glm45.train.optim import build_optimizer
from glm45.train.schedules import ScheduleConfig
from glm45.train.trainer import TrainConfig, Trainer


@dataclass
class SFTTrainConfig:
    epochs: float = 3.0  # passes over the packed rows (ignored when max_steps is set)
    max_steps: int | None = None
    batch_size: int = 8  # packed rows per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.0
    mtp_weight: float = 0.3  # 0: the MTP head is not trained
    aux_loss_weight: float = 1e-4  # sequence balance loss
    bias_rate: float = 0.0  # loss-free balance update; routing is left as pre-training set it
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # compute dtype: auto (bf16 where fast, runtime.compute_dtype) | bfloat16 | float32
    parallel: str = "auto"  # auto | none | ddp | fsdp
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    resume: bool = False  # continue the run in the output directory from its newest checkpoint
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.lr <= 0:
            raise SFTError("batch_size and grad_accum must be >= 1 and lr > 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise SFTError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_steps is None and not self.epochs > 0:
            raise SFTError(f"epochs must be > 0, got {self.epochs}")
        try:
            check_dtype_name(self.dtype, "dtype")
        except ValueError as e:
            raise SFTError(str(e)) from None


def load_base(base_dir: str | os.PathLike):
    """Model (fp32 weights; the trainer's autocast decides the compute dtype) and tokenizer."""
    from glm45.model import GLM45ForCausalLM
    from glm45.tokenizer import GLMTokenizer, TokenizerError

    base = Path(base_dir)
    if not (base / "config.json").is_file():
        raise SFTError(f"base {base}: not a checkpoint directory (no config.json)")
    try:
        tokenizer = GLMTokenizer.from_pretrained(base)
    except TokenizerError as e:
        raise SFTError(f"base {base}: {e} (SFT needs the checkpoint's tokenizer)") from None
    model = GLM45ForCausalLM.from_pretrained(base, dtype=torch.float32)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise SFTError(f"tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}")
    return model, tokenizer


def _schedule(config: SFTTrainConfig, steps: int, step_tokens: int, seq_len: int) -> ScheduleConfig:
    return ScheduleConfig(total_tokens=steps * step_tokens, warmup_tokens=min(config.warmup_steps, steps) * step_tokens,
                          peak_lr=config.lr, min_lr_ratio=config.min_lr_ratio, batch_tokens=step_tokens,
                          batch_start_tokens=step_tokens, batch_warmup_tokens=0, seq_len=seq_len,
                          bias_rate=config.bias_rate, mtp_weight=config.mtp_weight,
                          mtp_weight_late=config.mtp_weight)


def finetune(base_dir: str | os.PathLike, samples: Iterable[Document], out_dir: str | os.PathLike,
             train: SFTTrainConfig | None = None, data: SFTDataConfig | None = None) -> dict[str, Any]:
    """Build the data, fine-tune the base checkpoint, export `out_dir/model`; returns the summary
    (also in `out_dir/summary.json`). Under torchrun every process calls this; the main one
    builds the data."""
    train, data = train or SFTTrainConfig(), data or SFTDataConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    info = init_distributed(train.device)
    found = latest_checkpoint(out / "checkpoints")
    if found is not None and not train.resume:
        raise SFTError(f"{out} already holds a training run (checkpoint {found.name}); resume it or choose a new "
                       "output directory")
    model, tokenizer = load_base(base_dir)
    if data.seq_len > model.config.max_position_embeddings:
        raise SFTError(f"seq_len {data.seq_len} exceeds the model's {model.config.max_position_embeddings} positions")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if found is None or not (out / "data" / "index.json").is_file():
            build_sft_dataset(samples, tokenizer, out / "data", data)
    info.barrier()
    index = load_index(out / "data")
    torch.manual_seed(train.seed)
    model = parallelize(model, train.parallel, info)
    dtype = resolve_dtype(train.dtype, info.device)
    optimizer = build_optimizer(model, train.lr, train.weight_decay, ns_dtype=dtype_name(dtype))
    loader = PackedLoader(out / "data", train.batch_size, seed=train.seed, rank=info.rank, world_size=info.world_size)
    rows_per_step = train.batch_size * train.grad_accum * info.world_size
    steps = train.max_steps or max(1, math.ceil(train.epochs * index["num_rows"] / rows_per_step))
    schedule = _schedule(train, steps, rows_per_step * data.seq_len, data.seq_len)
    config = TrainConfig(grad_clip=train.grad_clip, checkpoint_every=train.checkpoint_every,
                         progress=train.progress, name="sft", autocast_dtype=dtype_name(dtype))
    trainer = Trainer(model, optimizer, schedule, loader, config, out, info=info, stage="sft",
                      loss_fn=LMLoss(aux_weight=train.aux_loss_weight, mtp=train.mtp_weight > 0))
    if found is not None:
        trainer.resume(found)
    trainer.train(max_steps=steps, write_summary=False)
    model_dir = out / "model"
    if info.is_main:
        shutil.rmtree(model_dir, ignore_errors=True)  # save_pretrained would keep files of an old export
    info.barrier()
    trainer.export_pretrained(model_dir, tokenizer=tokenizer)
    rows = read_metrics(trainer.metrics_path)
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    k = max(1, len(losses) // 10)
    summary = trainer.write_summary(
        base=os.fspath(base_dir), model_dir=os.fspath(model_dir), data=index["sft"], packing=index["stats"],
        rows=index["num_rows"], first_loss=sum(losses[:k]) / k if losses else None,
        final_loss=sum(losses[-k:]) / k if losses else None, seconds=round(time.perf_counter() - t0, 1),
        train_config=asdict(train), data_config=asdict(data))
    return summary
