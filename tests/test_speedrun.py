import json

import pytest

from glm45 import runtime
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


@pytest.mark.parametrize("bf16_fast", [True, False])
def test_auto_dtype_is_resolved_once_recorded_and_given_to_every_stage(tmp_path, monkeypatch, bf16_fast):
    probes = []

    def probe(device_type="cpu"):
        probes.append(device_type)
        return bf16_fast

    monkeypatch.setattr(runtime, "bf16_is_fast", probe)
    seen = []
    stages = [Stage(name, lambda cfg, out: seen.append(cfg.dtype) or {"tokens": 1}) for name in ("a", "b")]
    report = run_speedrun(SpeedrunConfig(out=str(tmp_path)), stages, log=lambda *_: None).read_text()
    want = "bfloat16" if bf16_fast else "float32"
    assert seen == [want, want] and len(probes) == 1
    assert json.loads((tmp_path / "speedrun.json").read_text())["dtype"] == want
    assert report.startswith(f"# glm45 speedrun (nano, {want})")


def test_a_bad_speedrun_dtype_is_named():
    with pytest.raises(ValueError, match="speedrun dtype.*float16"):
        SpeedrunConfig(dtype="float16")


def test_heldout_split_removes_whole_modules_from_training(tmp_path):
    from glm45.data.document import Document, read_documents, write_documents
    from glm45.pipeline.heldout import HELDOUT_FILE, is_heldout, module_key, split_heldout

    modules = [f"mod{i}" for i in range(200)]
    held = {m for m in modules if is_heldout(m, 0.1)}
    assert 5 < len(held) < 40  # about a tenth
    web = [Document(text=f"docs of {m}", source="web", meta={"path": f"{m}/__init__.py"}) for m in modules]
    code = [Document(text=f"code of {m}", source="code", meta={"path": f"{m}.py"}) for m in modules]
    code.append(Document(text="a generated task", source="code_tasks", meta={"language": "python"}))
    repo = [Document(text=f"repo {m}", source="repo", meta={"repo": f"cpython/{m}"}) for m in modules]
    for name, docs in (("web", web), ("code", code), ("repo", repo)):
        write_documents(docs, tmp_path / f"{name}.jsonl")
    counts = split_heldout(tmp_path, 0.1, n_math=5)
    assert counts == {"web": len(held), "code": len(held), "math": 5}
    for name in ("web", "code", "repo"):
        kept = {module_key(d) for d in read_documents(tmp_path / f"{name}.jsonl")}
        assert not kept & held and len(kept - {None}) == 200 - len(held)
    assert module_key(code[-1]) is None and "a generated task" in (tmp_path / "code.jsonl").read_text()
    out = list(read_documents(tmp_path / HELDOUT_FILE))
    assert {d.source for d in out} == {"web", "code", "math"}


def test_unigram_baseline():
    import math

    import numpy as np

    from glm45.pipeline.heldout import unigram_cross_entropy, unigram_entropy

    counts = np.array([0, 10, 10, 20])
    assert unigram_entropy(counts) == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.5)))
    assert unigram_cross_entropy(counts, [3, 3]) == pytest.approx(-math.log(20.5 / 42))


def test_text_loglik_matches_engine_scores(monkeypatch):
    import torch

    from glm45.config import ModelConfig
    from glm45.infer import Engine
    from glm45.model import GLM45ForCausalLM
    from glm45.pipeline import evals

    model = GLM45ForCausalLM(ModelConfig.preset("tiny"))
    model.init_weights(0)
    model.eval()
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(1, model.config.vocab_size, (n,), generator=g).tolist() for n in (23, 6))
    engine = Engine(model)
    want = [sum(engine.score(x[:1], x[1:])) for x in (a, b)]
    assert evals.text_loglik(model, [a, b], pad_id=0) == pytest.approx(want, abs=1e-3)
    # windows overlap by one token, so every token is scored once, with a shorter context
    monkeypatch.setattr(evals, "WINDOW", 4)
    windows = [a[s:s + 5] for s in range(0, len(a) - 1, 4)]
    want_a = sum(sum(engine.score(w[:1], w[1:])) for w in windows)
    assert evals.text_loglik(model, [a], pad_id=0)[0] == pytest.approx(want_a, abs=1e-3)
