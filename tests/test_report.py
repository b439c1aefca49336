import json

from glm45.pipeline.report import make_report


def _stage(run, name, summary, rows):
    d = run / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{cut")


def test_report_has_table_metrics_and_plots(tmp_path):
    _stage(tmp_path, "pretrain", {"stage": "pretrain", "status": "done", "wall_s": 12.5, "tokens": 4000,
                                  "tokens_per_s": 320.0, "metrics": {"loss": 3.2, "bits_per_byte": 1.9}},
           [{"step": i, "tokens": 1000 * (i + 1), "loss": 5 - i, "mtp_loss": 6 - i, "max_violation": [1.0 / (i + 1), 0.5]}
            for i in range(4)])
    _stage(tmp_path, "rl", {"stage": "rl", "status": "done", "wall_s": 3.0,
                            "metrics": {"accuracy": 0.5, "mtp_acceptance": 0.7}},
           [{"step": i, "reward": 0.1 * i} for i in range(5)])
    report = make_report(tmp_path, ["pretrain", "sft", "rl"])
    text = report.read_text()
    assert "| pretrain | done | 12.5 | 4000 | 320 |" in text
    assert "| sft | missing |" in text
    assert "| bits_per_byte | 1.9 | – | – |" in text and "| accuracy | – | – | 0.5 |" in text
    assert "Total wall-clock: 16 s" in text
    for png in ("loss.png", "mtp_loss.png", "balance.png", "reward.png", "mtp_acceptance.png"):
        assert (tmp_path / "plots" / png).stat().st_size > 1000
        assert f"plots/{png}" in text


def test_report_of_an_empty_run_lists_every_stage_missing(tmp_path):
    text = make_report(tmp_path, ["corpus", "tokenizer"]).read_text()
    assert "| corpus | missing |" in text and "| tokenizer | missing |" in text and "## Plots" not in text


def test_rl_loop_records_make_the_reward_plot(tmp_path):
    rows = [{"step": 0, "eval_reward": 0.1}] + [{"step": i, "reward_mean": 0.1 * i} for i in range(1, 4)]
    rows[-1]["eval_reward"] = 0.4
    _stage(tmp_path, "rl", {"stage": "rl", "status": "done", "wall_s": 1.0}, rows)
    text = make_report(tmp_path, ["rl"]).read_text()
    assert "plots/reward.png" in text and (tmp_path / "plots" / "reward.png").stat().st_size > 1000
