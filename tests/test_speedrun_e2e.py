"""`glm45 speedrun --quick` end to end: every stage runs, the report card has its table and plots,
the metrics are sane, and a second run skips everything."""

from __future__ import annotations

import json

import pytest

from glm45.cli import main
from glm45.pipeline.speedrun import STAGES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun")
    assert main(["speedrun", "--quick", "--out", str(out)]) == 0
    return out


def _summary(run, stage):
    return json.loads((run / stage / "summary.json").read_text())


def _metrics(run, stage):
    return _summary(run, stage)["metrics"]


def test_every_stage_is_done_and_the_report_has_table_and_plots(run):
    for stage in STAGES:
        s = _summary(run, stage.name)
        assert s["status"] == "done", (stage.name, s.get("note"))
        assert s["wall_s"] > 0
    report = (run / "report.md").read_text()
    for stage in STAGES:
        assert f"| {stage.name} | done |" in report
    assert "## Metrics by stage" in report and "| heldout_bpb |" in report and "| valid_call |" in report
    for png in ("loss.png", "mtp_loss.png", "balance.png", "reward.png", "mtp_acceptance.png"):
        assert (run / "plots" / png).stat().st_size > 1000 and f"plots/{png}" in report
    final = run / "final"
    assert (final / "config.json").is_file() and (final / "tokenizer.json").is_file()
    assert final.resolve() == (run / "rl" / "train" / "model").resolve()


def test_pretraining_learns_beyond_token_frequencies(run):
    rows = [json.loads(line) for line in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    m = _metrics(run, "pretrain")
    assert m["heldout_loss"] < m["unigram_heldout_loss"]
    assert 0 < m["heldout_bpb"] < 8
    for stage in ("pretrain", "midtrain", "sft", "rl"):
        assert 0.0 <= _metrics(run, stage)["mtp_acceptance"] <= 1.0
        assert _summary(run, stage)["tokens_per_s"] > 0
    # mid-training moved RoPE's base as its longer sequences started
    assert "RoPE base 1e+06" in _summary(run, "midtrain")["note"]


def test_chat_stages_report_task_metrics(run):
    sft = _metrics(run, "sft")
    assert sft["no_think_when_off"] >= 0.8  # thinking off: no reasoning emitted
    for stage in ("sft", "rl"):
        m = _metrics(run, stage)
        for key in ("accuracy_thinking_on", "accuracy_thinking_off", "reasoning_when_on", "valid_call"):
            assert 0.0 <= m[key] <= 1.0, (stage, key)
    rl = _metrics(run, "rl")
    assert rl["rl_heldout_reward_before"] is not None and rl["rl_heldout_reward_after"] is not None
    rows = [json.loads(line) for line in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward_mean" in r] == [1, 2]


def test_a_second_run_skips_every_stage(run, capsys):
    before = {s.name: (run / s.name / "summary.json").stat().st_mtime_ns for s in STAGES}
    capsys.readouterr()
    assert main(["speedrun", "--quick", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"[{stage.name}] done already, skipped" in out
    assert "glm45 chat --model" in out and "glm45 serve --model" in out
    assert before == {s.name: (run / s.name / "summary.json").stat().st_mtime_ns for s in STAGES}
