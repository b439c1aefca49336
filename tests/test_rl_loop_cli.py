"""`glm45 rl`: arguments, errors, and a one-step run."""

from __future__ import annotations

import json

import pytest

from glm45.cli import main
from rl_helpers import parity_tasks, tiny_dir


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["rl", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--task", "--out", "--mode", "--fp8-rollout", "--rollout-url", "--agent-port",
                 "--loss-agg", "--distill-rounds", "--backend", "--kl-coef"):
        assert flag in out


def test_bad_arguments(tmp_path, capsys):
    assert main(["rl", "--model", tiny_dir(), "--out", str(tmp_path), "--agent-port", "9", "--mode", "sync"]) == 2
    assert "--mode async" in capsys.readouterr().err
    assert main(["rl", "--model", tiny_dir(), "--out", str(tmp_path), "--difficulty", "easy"]) == 2
    assert "--difficulty" in capsys.readouterr().err
    assert main(["rl", "--model", tiny_dir(), "--out", str(tmp_path), "--task", "chess"]) == 2
    assert "unknown task set" in capsys.readouterr().err
    assert main(["rl", "--model", tiny_dir(), "--out", str(tmp_path), "--kl-coef", "-1"]) == 2
    assert "kl_coef" in capsys.readouterr().err
    assert main(["rl", "--model", tiny_dir(), "--out", str(tmp_path), "--eval-samples", "4"]) == 2
    assert "eval_temperature > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["rl", "--model", tiny_dir(), "--out", str(tmp_path), "--threads", "0"])
    assert e.value.code == 2 and "--threads: must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_one_step_run(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in parity_tasks(6)))
    out = tmp_path / "run"
    code = main(["rl", "--model", tiny_dir(), "--task", f"jsonl:{tasks}", "--out", str(out), "--steps", "1",
                 "--prompts-per-step", "2", "--group-size", "2", "--max-tokens", "6", "--max-seq-len", "96",
                 "--no-dynamic-sampling", "--overlong", "keep", "--n-eval", "2", "--threads", "1",
                 "--kl-coef", "0.05"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("kl_ref" in m for m in metrics)  # the penalty ran against a reference model
    assert summary["steps"] == 1 and summary["eval_last"]["step"] == 1
    assert (out / "model" / "tokenizer.json").is_file() and (out / "reward_curve.png").is_file()
