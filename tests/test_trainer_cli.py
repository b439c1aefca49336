"""`glm45 pretrain` / `glm45 midtrain`: help, clear errors, and pre-training handing over to
mid-training (schedule and tokens carried on, RoPE base moved, HF export with tokenizer)."""

from __future__ import annotations

import json

import pytest

from glm45.cli import main
from glm45.model import GLM45ForCausalLM
from glm45.train.metrics import read_metrics
from helpers_train import synthetic_shards


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    synthetic_shards(root / "pretrain_general", mode="concat", seq_len=32, n_docs=80)
    synthetic_shards(root / "mid_reasoning", mode="best_fit", seq_len=64, n_docs=60, seed=1)
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from glm45.checkpoint.init_cli import stdlib_docstrings
    from glm45.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(stdlib_docstrings(max_chars=50_000), 512).save(out)
    return out


COMMON = ["--preset", "tiny", "--batch-tokens", "128", "--micro-batch", "4", "--quiet", "--checkpoint-every", "2"]


@pytest.mark.parametrize("command", ["pretrain", "midtrain"])
def test_help_lists_the_flags(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--out", "--tokens", "--seq-len", "--batch-tokens", "--lr", "--resume", "--rope-theta",
                 "--parallel", "--autocast"):
        assert flag in text
    assert ("--preset" in text) == (command == "pretrain") and ("--init" in text) == (command == "midtrain")


def test_bad_inputs_give_one_clear_line(tmp_path, data, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), *COMMON]) == 2
    assert "no such data directory" in capsys.readouterr().err
    assert main(["midtrain", "--data", str(data), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "pass --init" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "o"), "--seq-len", "64", *COMMON]) == 2
    assert "does not match the shards" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "o"), "--stages", "x", *COMMON]) == 2
    assert "no stage data named ['x']" in capsys.readouterr().err


@pytest.mark.slow
def test_pretrain_then_midtrain_carry_the_run_on(tmp_path, data, tokenizer_dir, capsys):
    pre, mid = tmp_path / "pre", tmp_path / "mid"
    assert main(["pretrain", "--data", str(data), "--out", str(pre), "--tokens", "512", "--total-tokens", "1024",
                 "--tokenizer", str(tokenizer_dir), *COMMON]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tokens"] == 512 and printed["steps"] == 4
    rows = read_metrics(pre / "metrics.jsonl")
    assert {r["stage"] for r in rows} == {"pretrain_general"} and rows[-1]["rope_theta"] == 10000.0
    assert (pre / "hf" / "tokenizer.json").is_file() and (pre / "plots" / "loss.png").is_file()
    assert GLM45ForCausalLM.from_pretrained(pre / "hf").config.rope_theta == 10000.0
    run = json.loads((pre / "run.json").read_text())
    assert run["schedule"]["total_tokens"] == 1024

    # A second pretrain into the same directory must not silently overwrite it...
    assert main(["pretrain", "--data", str(data), "--out", str(pre), *COMMON]) == 2
    assert "--resume" in capsys.readouterr().err
    # ...and --resume of a finished run has nothing left to do.
    assert main(["pretrain", "--data", str(data), "--out", str(pre), "--tokens", "512", "--resume", *COMMON]) == 0
    assert len(read_metrics(pre / "metrics.jsonl")) == 4

    assert main(["midtrain", "--init", str(pre), "--data", str(data), "--out", str(mid), "--tokens", "512",
                 "--micro-batch", "2", "--quiet"]) == 0
    mrows = read_metrics(mid / "metrics.jsonl")
    assert [r["stage"] for r in mrows] == ["mid_reasoning"] * 4
    assert mrows[0]["step"] == 5 and mrows[0]["tokens"] == 512 + 128  # steps and tokens carry over
    assert all(r["rope_theta"] == 1e6 and r["seq_len"] == 64 for r in mrows)
    pre_sched = json.loads((pre / "run.json").read_text())["schedule"]
    from glm45.train.schedules import ScheduleConfig

    sched = ScheduleConfig(**pre_sched)
    assert mrows[0]["lr"] == pytest.approx(sched.lr_at(512))  # the cosine continues
    assert mrows[-1]["tokens"] == 1024 and mrows[-1]["lr"] == pytest.approx(sched.lr_at(1024 - 128))
    exported = GLM45ForCausalLM.from_pretrained(mid / "hf")
    assert exported.config.rope_theta == 1e6 and (mid / "hf" / "tokenizer.json").is_file()


def test_a_stage_spec_is_built_into_shards_at_the_requested_length(tmp_path, tokenizer_dir):
    from glm45.checkpoint.init_cli import stdlib_docstrings

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in stdlib_docstrings(max_chars=30_000)))
    spec = tmp_path / "stages.json"
    spec.write_text(json.dumps({"stages": [{"name": "pre", "seq_len": 64, "packing": "concat", "sources": [
        {"name": "docs", "path": "docs.jsonl", "filter": False, "dedup": "none"}]}]}))
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(spec), "--out", str(out), "--tokenizer", str(tokenizer_dir),
                 "--seq-len", "16", "--tokens", "256", "--batch-tokens", "64", "--preset", "tiny", "--quiet",
                 "--no-export"]) == 0
    index = json.loads((out / "data" / "pre" / "index.json").read_text())
    assert index["seq_len"] == 16 and index["mode"] == "concat"
    rows = read_metrics(out / "metrics.jsonl")
    assert rows and all(r["seq_len"] == 16 for r in rows) and not (out / "hf").exists()
