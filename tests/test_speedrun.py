import json

from glm45.pipeline.speedrun import SpeedrunConfig, Stage, StageUnavailable, run_speedrun


def test_stages_run_resume_and_report_missing_ones(tmp_path):
    calls = []

    def ok(cfg, out):
        calls.append("ok")
        (out / "metrics.jsonl").write_text(json.dumps({"step": 0, "tokens": 10, "loss": 2.0}) + "\n")
        return {"tokens": 10, "metrics": {"loss": 2.0}}

    def missing(cfg, out):
        raise StageUnavailable("no RL yet")

    def broken(cfg, out):
        raise RuntimeError("boom")

    stages = [Stage("a", ok), Stage("b", missing, needs=("a",)), Stage("c", ok, needs=("b",)), Stage("d", broken)]
    cfg = SpeedrunConfig(out=str(tmp_path), quick=True)
    report = run_speedrun(cfg, stages, log=lambda *_: None).read_text()
    assert "| a | done |" in report and "| b | missing |" in report
    assert "| c | skipped |" in report and "| d | failed |" in report and "boom" in report
    assert (tmp_path / "d" / "error.txt").exists()
    run_speedrun(cfg, stages, log=lambda *_: None)
    assert calls == ["ok"]  # a is done and skipped on the second run
