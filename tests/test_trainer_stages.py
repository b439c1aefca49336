"""Stages: discovery and order of shard directories, budgets, the RoPE base change at the first
long stage, the schedule running on across stages, and resuming inside a later stage."""

from __future__ import annotations

import shutil

import pytest

from glm45.train.checkpoint import list_checkpoints
from glm45.train.metrics import read_metrics
from glm45.train.stages import StageError, discover_stages, plan_stages, run_stages, select_stages
from helpers_train import schedule, synthetic_shards, tiny_model, tiny_trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    synthetic_shards(root / "mid_reasoning", mode="best_fit", seq_len=64, n_docs=80, seed=2)
    synthetic_shards(root / "pretrain_upsample", mode="concat", seq_len=32, n_docs=60, seed=1)
    synthetic_shards(root / "pretrain_general", mode="concat", seq_len=32, n_docs=120, seed=0)
    return root


def test_discovery_orders_stages_and_selects_by_packing(data, tmp_path):
    found = discover_stages(data)
    assert [s.name for s in found] == ["pretrain_general", "pretrain_upsample", "mid_reasoning"]
    assert [(s.seq_len, s.packing) for s in found] == [(32, "concat"), (32, "concat"), (64, "best_fit")]
    assert [s.name for s in select_stages(found, packing="best_fit")] == ["mid_reasoning"]
    assert [s.name for s in select_stages(found, ["mid_reasoning", "pretrain_general"])] == [
        "mid_reasoning", "pretrain_general"]
    assert [s.name for s in discover_stages(data / "pretrain_general")] == ["pretrain_general"]
    with pytest.raises(StageError, match="no stage data named"):
        select_stages(found, ["nope"])
    with pytest.raises(StageError, match="neither a shard directory"):
        discover_stages(tmp_path)


def test_plan_budgets_and_rope_bases(data):
    found = discover_stages(data)
    epochs = plan_stages(found)
    assert [p.tokens for p in epochs] == [s.rows * s.seq_len for s in found]
    assert [p.rope_theta for p in epochs] == [None, None, 1e6]  # moves at the first longer stage
    split = plan_stages(found, tokens=10_000, long_rope_theta=5e5)
    sizes = [s.epoch_tokens for s in found]
    assert [p.tokens for p in split] == [round(10_000 * n / sum(sizes)) for n in sizes]
    assert split[-1].rope_theta == 5e5
    mid_only = plan_stages(found[2:], base_seq_len=0)  # mid-training: every stage is long
    assert mid_only[0].rope_theta == 1e6


def _run(out, data, model=None, resume=False, checkpoint_every=0):
    from glm45.data.loader import PackedLoader

    sched = schedule(total_tokens=1536, warmup_tokens=128, batch_tokens=128)
    tr = tiny_trainer(out, None, sched=sched, model=model or tiny_model(), checkpoint_every=checkpoint_every)
    if resume:
        tr.resume()
    plan = plan_stages(discover_stages(data), tokens=1024)
    plan = [p for p in plan if p.name != "pretrain_upsample"]  # two stages: 32 concat, 64 best-fit
    plan[0].tokens, plan[1].tokens = 512, 512
    run_stages(tr, plan, lambda s: PackedLoader(s.data, batch_size=4 * 32 // s.seq_len, seed=0))
    return tr, tr.write_summary(stages=[s.name for s in plan])


def test_stages_switch_data_length_and_rope_base_while_the_schedule_runs_on(data, tmp_path):
    tr, summary = _run(tmp_path, data)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    stages = [r["stage"] for r in rows]
    assert stages == ["pretrain_general"] * 4 + ["mid_reasoning"] * 4
    assert [r["seq_len"] for r in rows] == [32] * 4 + [64] * 4
    assert [r["rope_theta"] for r in rows] == [10000.0] * 4 + [1e6] * 4
    assert tr.inner.model.rotary.theta == 1e6 and tr.inner.config.rope_theta == 1e6
    before = 0
    for r in rows:  # LR follows the one schedule of tokens seen, across the boundary
        assert r["lr"] == pytest.approx(tr.schedule.lr_at(before))
        before = r["tokens"]
    assert rows[-1]["tokens"] == 1024 and summary["current_stage"] == "mid_reasoning"
    assert summary["stages"] == ["pretrain_general", "mid_reasoning"]
    assert summary["metrics"]["loss"] < summary["metrics"]["first_loss"]
    # Positions restart per packed document in the best-fit stage.
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_resuming_inside_the_long_stage_restores_its_rope_base_and_data(data, tmp_path):
    _run(tmp_path / "full", data)
    _run(tmp_path / "cut", data, checkpoint_every=6)
    ckpts = list_checkpoints(tmp_path / "cut" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000004", "step_00000006", "step_00000008"]
    shutil.rmtree(ckpts[-1])  # killed after step 6, inside mid_reasoning
    model = tiny_model()
    assert model.config.rope_theta == 10000.0
    tr, _ = _run(tmp_path / "cut", data, model=model, resume=True)
    assert model.config.rope_theta == 1e6
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [(r["stage"], r["loss"], r["rope_theta"]) for r in cut] == [
        (r["stage"], r["loss"], r["rope_theta"]) for r in full]
