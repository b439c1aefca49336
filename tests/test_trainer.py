"""The Trainer: schedules applied per step, records, checkpoints and exact resume, accumulation,
balance updates, hooks and pluggable losses, HF export."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from glm45.data.loader import PackedLoader
from glm45.model import GLM45ForCausalLM
from glm45.train.balance import router_bias_buffers
from glm45.train.checkpoint import latest_checkpoint, list_checkpoints
from glm45.train.loss import LMLoss
from glm45.train.metrics import read_metrics
from glm45.train.optim import build_optimizer
from glm45.train.trainer import TrainConfig, Trainer, TrainerError, TrainerHook, micro_batches_per_step
from helpers_train import schedule, synthetic_shards, tiny_model, tiny_trainer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("shards") / "concat")


def test_a_run_follows_the_schedules_and_writes_records_summary_plots_checkpoints(tmp_path, shards):
    sched = schedule(total_tokens=2048, batch_tokens=256, batch_start_tokens=128, batch_warmup_tokens=768,
                     warmup_tokens=300)
    tr = tiny_trainer(tmp_path, shards, sched=sched, checkpoint_every=4, plots=True)
    summary = tr.train(until_tokens=1536)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    before = 0
    for r in rows:
        assert r["lr"] == pytest.approx(sched.lr_at(before))
        want = micro_batches_per_step(sched.batch_tokens_at(before, 32), 32, 4, 1) * 128
        assert r["batch_tokens"] == want and r["micro_batches"] == want // 128
        before += r["batch_tokens"]
        assert r["tokens"] == before
        assert len(r["max_violation"]) == 3 and all(v >= 0 for v in r["max_violation"])
        assert all(math.isfinite(r[k]) for k in ("loss", "mtp_loss", "aux_loss", "grad_norm", "tokens_per_s"))
    assert rows[0]["batch_tokens"] == 128 and rows[-1]["batch_tokens"] == 256  # the batch-size warm-up
    assert rows[-1]["tokens"] >= 1536 > rows[-2]["tokens"]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert summary["status"] == "done" and summary["tokens"] == rows[-1]["tokens"]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == len(rows)
    for name in ("loss.png", "lr.png", "batch_size.png", "balance.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    steps = [int(p.name.split("_")[1]) for p in list_checkpoints(tmp_path / "checkpoints")]
    assert steps == sorted({*range(4, len(rows) + 1, 4), len(rows)})
    assert {p.name for p in latest_checkpoint(tmp_path / "checkpoints").iterdir()} == {
        "model.pt", "optimizer.pt", "trainer.json", "rank00000.pt"}


def test_resume_after_a_crash_continues_the_same_curve(tmp_path, shards):
    sched = schedule(total_tokens=2048, batch_tokens=256, batch_start_tokens=128, batch_warmup_tokens=512)
    tiny_trainer(tmp_path / "full", shards, sched=sched).train(until_tokens=1536)
    tiny_trainer(tmp_path / "cut", shards, sched=sched, checkpoint_every=3).train(max_steps=7)
    # The crash: step 7's checkpoint half-written (only a .tmp dir), metrics past step 6 on disk.
    ckpts = tmp_path / "cut" / "checkpoints"
    shutil.move(ckpts / "step_00000007", ckpts / ".tmp-step_00000007")
    assert latest_checkpoint(ckpts).name == "step_00000006"
    fresh = tiny_trainer(tmp_path / "cut", shards, sched=schedule(), model=tiny_model(seed=5), checkpoint_every=3)
    assert fresh.resume().name == "step_00000006"
    assert fresh.state.step == 6 and fresh.schedule == sched  # the schedule comes from the checkpoint
    fresh.train(until_tokens=1536)
    full, cut = read_metrics(tmp_path / "full" / "metrics.jsonl"), read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in cut] == [r["step"] for r in full]
    for key in ("loss", "mtp_loss", "aux_loss", "grad_norm", "lr", "batch_tokens", "max_violation", "tokens"):
        assert [r[key] for r in cut] == [r[key] for r in full], key
    assert not list(ckpts.glob(".tmp-*"))  # the next save cleared the stale temp dir


def test_gradient_accumulation_matches_one_big_batch(tmp_path, shards):
    big = tiny_trainer(tmp_path / "big", shards, micro_batch=4)
    small = tiny_trainer(tmp_path / "small", shards, micro_batch=2)
    big.train(max_steps=3)
    small.train(max_steps=3)
    a, b = read_metrics(tmp_path / "big" / "metrics.jsonl"), read_metrics(tmp_path / "small" / "metrics.jsonl")
    assert [r["micro_batches"] for r in b] == [2, 2, 2] and [r["micro_batches"] for r in a] == [1, 1, 1]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
    # fp32 summation order differs; AdamW normalises near-zero gradients (e.g. embedding rows
    # touched only through the tiny balance loss), so a few entries may move by ~1% of an update.
    for (name, p), q in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-4, msg=name)


def test_balance_bias_moves_by_the_rate_until_the_switch(tmp_path, shards):
    tr = tiny_trainer(tmp_path, shards, sched=schedule(bias_rate=0.01, bias_rate_until_tokens=256))
    biases = router_bias_buffers(tr.model)
    before = {k: v.clone() for k, v in biases.items()}
    tr.train(max_steps=1)
    for k, v in biases.items():
        step = (v - before[k]).abs()
        assert torch.all(((step - 0.01).abs() < 1e-6) | (step == 0)) and step.max() > 0, k
    tr.train(max_steps=2)  # tokens seen 128 < 256: still updating
    mid = {k: v.clone() for k, v in biases.items()}
    tr.train(max_steps=4)  # from 256 tokens on the rate is 0
    assert all(torch.equal(v, mid[k]) for k, v in biases.items())
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["bias_rate"] for r in rows] == [0.01, 0.01, 0.0, 0.0]


def test_mtp_weight_switches_with_tokens_seen(tmp_path, shards):
    tr = tiny_trainer(tmp_path, shards, sched=schedule(mtp_weight=0.3, mtp_weight_late=0.1, mtp_switch_tokens=256))
    tr.train(max_steps=4)
    assert [r["mtp_weight"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0.3, 0.3, 0.1, 0.1]


class _Recorder(TrainerHook):
    def __init__(self):
        self.records, self.checkpoints, self.ended = [], [], 0

    def on_step_end(self, trainer, record):
        self.records.append(record)

    def on_checkpoint(self, trainer, path):
        self.checkpoints.append(path.name)

    def on_train_end(self, trainer, summary):
        self.ended += 1


class _PoisonedLoss(LMLoss):
    """LM loss without MTP whose second step has a NaN gradient."""

    def __call__(self, model, batch, ctx):
        out = super().__call__(model, batch, ctx)
        if ctx.step == 1:
            out.loss = out.loss * float("nan")
        return out


def test_pluggable_loss_hooks_and_nonfinite_steps_are_skipped(tmp_path, shards):
    model = tiny_model()

    hook = _Recorder()
    tr = Trainer(model, build_optimizer(model, 3e-3, ns_dtype="float32"), schedule(),
                 PackedLoader(shards, batch_size=4), TrainConfig(progress=False), tmp_path,
                 loss_fn=_PoisonedLoss(mtp=False), hooks=[hook])
    tr.train(max_steps=1)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    tr.train(max_steps=2)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())  # step 2 was skipped
    tr.train(max_steps=3)
    assert not all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert "mtp_loss" not in rows[0] and rows[1].get("skipped") and not rows[2].get("skipped")
    assert [r["step"] for r in hook.records] == [1, 2, 3] and hook.ended == 3
    assert hook.checkpoints == ["step_00000001", "step_00000002", "step_00000003"]


def test_gradient_checkpointing_gives_the_same_step(tmp_path, shards):
    plain = tiny_trainer(tmp_path / "a", shards)
    ckpt = tiny_trainer(tmp_path / "b", shards, gradient_checkpointing=True)
    assert ckpt.inner.gradient_checkpointing
    plain.train(max_steps=1)
    ckpt.train(max_steps=1)
    ra, rb = read_metrics(tmp_path / "a" / "metrics.jsonl")[0], read_metrics(tmp_path / "b" / "metrics.jsonl")[0]
    assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)
    assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)


def test_bf16_autocast_step_runs_and_stays_close_to_fp32(tmp_path, shards):
    fp32 = tiny_trainer(tmp_path / "a", shards, autocast_dtype="float32")
    bf16 = tiny_trainer(tmp_path / "b", shards, autocast_dtype="bfloat16")
    assert bf16.autocast_dtype == torch.bfloat16 and fp32.autocast_dtype == torch.float32
    fp32.train(max_steps=1)
    bf16.train(max_steps=1)
    ra, rb = read_metrics(tmp_path / "a" / "metrics.jsonl")[0], read_metrics(tmp_path / "b" / "metrics.jsonl")[0]
    assert rb["loss"] != ra["loss"] and rb["loss"] == pytest.approx(ra["loss"], rel=2e-2)


def test_export_writes_a_loadable_hf_directory(tmp_path, shards):
    tr = tiny_trainer(tmp_path, shards)
    tr.train(max_steps=1)
    tr.inner.set_rope_theta(1e6)
    tr.export_pretrained(tmp_path / "hf")
    loaded = GLM45ForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    assert loaded.config.rope_theta == 1e6
    ids = torch.randint(24, 512, (1, 12))
    tr.model.eval()
    torch.testing.assert_close(loaded(ids).logits, tr.model(ids).logits)
    for name, b in router_bias_buffers(tr.model).items():
        torch.testing.assert_close(dict(loaded.named_buffers())[name], b)


def test_bad_settings_and_calls_raise_clear_errors(tmp_path):
    with pytest.raises(TrainerError, match="autocast_dtype"):
        TrainConfig(autocast_dtype="float16")
    with pytest.raises(TrainerError, match="grad_clip"):
        TrainConfig(grad_clip=-1)
    tr = tiny_trainer(tmp_path, None)
    with pytest.raises(TrainerError, match="no data"):
        tr.train(max_steps=1)
    with pytest.raises(TrainerError, match="at least one micro-batch"):
        tr.train_step([])
    assert tr.resume() is None  # nothing to resume from
