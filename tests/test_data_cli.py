"""`glm45 data ...`: each step as a subcommand, chained through JSONL, and a whole stage spec."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from glm45.cli import main
from glm45.data.document import read_documents
from glm45.tokenizer import train_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _run(capsys, *argv: str) -> dict:
    assert main(["data", *argv, "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["data", "builtin", "--out", str(d / "corpus"), "--budget-chars", "300000", "--base-seq-len", "64",
                 "--quiet"]) == 0
    texts = [doc.text for n in ("web", "code") for doc in read_documents(d / "corpus" / f"{n}.jsonl")]
    train_tokenizer(texts, 1024).save(d / "tok")
    return d


def test_document_steps_chain(workdir, capsys, tmp_path):
    c = workdir / "corpus"
    s = _run(capsys, "filter", str(c / "web.jsonl"), str(c / "code.jsonl"), "--out", str(tmp_path / "f.jsonl"))
    assert s["in"] >= s["out"] > 0
    s = _run(capsys, "dedup", str(tmp_path / "f.jsonl"), str(tmp_path / "f.jsonl"), "--out", str(tmp_path / "d.jsonl"))
    assert s["in"] == 2 * s["out"]  # the second copy of every document is a duplicate
    s = _run(capsys, "dedup", str(tmp_path / "d.jsonl"), "--method", "semdedup", "--embedder", "hashed",
             "--out", str(tmp_path / "sd.jsonl"))
    assert 0 < s["out"] <= s["in"]
    s = _run(capsys, "fim", str(c / "code.jsonl"), "--rate", "1.0", "--out", str(tmp_path / "fim.jsonl"))
    assert s["psm"] + s["spm"] == s["in"]
    s = _run(capsys, "quality-train", "--pos", str(c / "web.jsonl"), "--neg", str(c / "math.jsonl"),
             "--out", str(tmp_path / "q"))
    assert s["train_accuracy"] > 0.9
    s = _run(capsys, "quality", str(c / "web.jsonl"), "--model", str(tmp_path / "q"), "--weights", "0,1,2",
             "--out", str(tmp_path / "qual.jsonl"))
    assert s["docs_out_per_bucket"][0] == 0 and s["docs_out_per_bucket"][2] == 2 * s["docs_in_per_bucket"][2]
    assert all("quality_bucket" in d.meta for d in read_documents(tmp_path / "qual.jsonl"))


def test_pack_and_inspect(workdir, capsys, tmp_path):
    c = workdir / "corpus"
    s = _run(capsys, "pack", str(c / "reasoning.jsonl"), str(c / "math.jsonl"), "--tokenizer", str(workdir / "tok"),
             "--seq-len", "256", "--mode", "best_fit", "--out", str(tmp_path / "shards"))
    assert s["rows_written"] > 0 and s["dropped_tokens"] == 0 and 0 <= s["padding_rate"] < 0.2
    s = _run(capsys, "inspect", str(tmp_path / "shards"), "--decode", "1", "--tokenizer", str(workdir / "tok"))
    assert s["mode"] == "best_fit" and s["num_rows"] > 0 and s["rows"][0]


def test_stage_spec_and_read_and_repo(workdir, capsys, tmp_path):
    s = _run(capsys, "stage", str(workdir / "corpus" / "stages.json"), "--tokenizer", str(workdir / "tok"),
             "--out", str(tmp_path / "stages"), "--only", "pretrain_general", "mid_reasoning")
    assert set(s["stages"]) == {"pretrain_general", "mid_reasoning"}
    assert all(v["tokens"] > 0 and v["rows"] > 0 for v in s["stages"].values())
    assert (tmp_path / "stages" / "mid_reasoning" / "index.json").is_file()
    shutil.copytree(STDLIB / "json", tmp_path / "json")
    s = _run(capsys, "read", str(tmp_path / "json"), "--format", "code", "--out", str(tmp_path / "files.jsonl"))
    assert s["out"] >= 4
    s = _run(capsys, "repo", str(tmp_path / "json"), "--out", str(tmp_path / "repo.jsonl"))
    assert s["repo_docs"] == 1


def test_errors_exit_2_with_a_message(workdir, capsys, tmp_path):
    assert main(["data", "filter", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--quiet"]) == 2
    assert "no such JSONL file" in capsys.readouterr().err
    assert main(["data", "stage", str(workdir / "corpus" / "stages.json"), "--tokenizer", str(workdir / "tok"),
                 "--out", str(tmp_path), "--only", "nope", "--quiet"]) == 2
    assert "no stages named ['nope']" in capsys.readouterr().err
