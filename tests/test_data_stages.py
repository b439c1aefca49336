"""Stage specs (dict / JSON / YAML), presets, the built-in corpus, and building a stage into shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glm45.data.builtin import build_corpus
from glm45.data.document import DataError, Document, read_documents, write_documents
from glm45.data.fim import MIDDLE, fim_unpermute
from glm45.data.loader import PackedLoader
from glm45.data.shards import PackedDataset, load_index
from glm45.data.stages import SourceSpec, StageSpec, build_stage, load_stages, preset_stages, save_stages, shuffled
from glm45.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, build_corpus(out, budget_chars=400_000, seed=0, base_seq_len=128)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    out, _ = corpus
    texts = [d.text for name in ("web", "code") for d in read_documents(out / f"{name}.jsonl")]
    return train_tokenizer(texts, 2048)


def test_builtin_corpus_has_every_set_and_five_stages(corpus):
    out, result = corpus
    assert set(result["sets"]) == {"web", "code", "repo", "math", "reasoning", "agent"}
    for name, c in result["counts"].items():
        assert c["docs"] > 0 and c["chars"] > 0, name
    web = list(read_documents(out / "web.jsonl"))
    assert all(d.meta["language"] in ("text", "restructuredtext") for d in web)
    assert any("Return" in d.text for d in web)  # real standard-library prose
    code = list(read_documents(out / "code.jsonl"))
    assert any(d.meta.get("repo") == "cpython-stdlib" and "def " in d.text for d in code)
    agent = next(read_documents(out / "agent.jsonl"))
    assert agent.is_chat and agent.tools and any(m.get("tool_calls") for m in agent.messages)
    reasoning = next(read_documents(out / "reasoning.jsonl"))
    assert reasoning.messages[-1].get("reasoning_content")
    stages = result["stages"]
    assert [s.name for s in stages] == ["pretrain_general", "pretrain_upsample", "mid_repo_code", "mid_reasoning",
                                        "mid_long_agent"]
    assert [s.seq_len for s in stages] == [128, 128, 1024, 1024, 4096]
    assert [s.packing for s in stages] == ["concat", "concat", "best_fit", "best_fit", "best_fit"]
    assert load_stages(out / "stages.json") == stages
    again = build_corpus(out / "again", budget_chars=400_000, seed=0, base_seq_len=128)
    assert (out / "again" / "math.jsonl").read_text() == (out / "math.jsonl").read_text()  # deterministic
    assert again["counts"] == result["counts"]


def test_stage2_upsamples_code_and_math_relative_to_stage1():
    sets = {"web": "w.jsonl", "code": "c.jsonl", "math": "m.jsonl"}
    s1, s2 = preset_stages(sets)[:2]
    w1 = {s.name: s.weight for s in s1.sources}
    w2 = {s.name: s.weight for s in s2.sources}
    assert w2["code"] / w2["web"] > w1["code"] / w1["web"] and w2["math"] / w2["web"] > w1["math"] / w1["web"]
    assert [s.name for s in preset_stages(sets)] == ["pretrain_general", "pretrain_upsample", "mid_reasoning"]
    with pytest.raises(DataError, match="no preset stage"):
        preset_stages({"other": "x.jsonl"})


def test_spec_from_dict_json_and_yaml(tmp_path):
    d = {"name": "s", "seq_len": 64, "packing": "best_fit", "fim_rate": 0.2,
         "sources": [{"name": "a", "path": "a.jsonl", "weight": 2.0, "dedup": "exact"}]}
    spec = StageSpec.from_dict(d, base_dir=tmp_path)
    assert spec.sources[0].path == str(tmp_path / "a.jsonl") and spec.sources[0].weight == 2.0
    (tmp_path / "s.json").write_text(json.dumps({"stages": [d]}))
    assert load_stages(tmp_path / "s.json") == [spec]
    yaml = pytest.importorskip("yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    assert load_stages(tmp_path / "s.yaml") == [spec]
    save_stages([spec], tmp_path / "round.json")
    assert load_stages(tmp_path / "round.json") == [spec]


@pytest.mark.parametrize("bad, message", [
    ({"name": "s", "seq_len": 64, "sources": [{"name": "a", "path": "x"}], "packng": "concat"}, "unknown keys"),
    ({"name": "s", "sources": [{"name": "a", "path": "x"}]}, "missing required keys"),
    ({"name": "s", "seq_len": 64, "packing": "greedy", "sources": [{"name": "a", "path": "x"}]}, "packing must be"),
    ({"name": "s", "seq_len": 64, "sources": [{"name": "a", "path": "x", "dedup": "fuzzy"}]}, "dedup must be"),
    ({"name": "s", "seq_len": 64, "sources": []}, "no sources"),
])
def test_bad_specs_name_the_problem(bad, message):
    with pytest.raises(DataError, match=message):
        StageSpec.from_dict(bad)


def test_shuffle_buffer_is_a_seeded_permutation():
    items = [Document(text=str(i)) for i in range(100)]
    a = [d.text for d in shuffled(items, 10, np.random.default_rng(0))]
    assert sorted(a, key=int) == [str(i) for i in range(100)] and a != [str(i) for i in range(100)]
    assert a == [d.text for d in shuffled(items, 10, np.random.default_rng(0))]


def test_build_pretrain_stage_end_to_end(corpus, tokenizer, tmp_path):
    _, result = corpus
    stage = result["stages"][0]
    summary = build_stage(stage, tokenizer, tmp_path / "s1")
    index = load_index(tmp_path / "s1")
    assert index["mode"] == "concat" and index["num_rows"] == summary["rows"] > 0
    assert summary["tokens"] == sum(summary["tokens_by_source"].values()) > 0
    for name, counts in summary["sources"].items():
        assert counts["read"] > 0 and counts["after_weight"] <= counts["read"] * 1.6, name
    assert summary["packing_stats"]["padding_rate"] == 0.0
    assert json.loads((tmp_path / "s1" / "summary.json").read_text())["rows"] == summary["rows"]
    ds = PackedDataset(tmp_path / "s1")
    text = "".join(tokenizer.decode(ds.row(i).tokens[:-1].tolist()) for i in range(len(ds)))
    assert MIDDLE in text  # code documents went through FIM
    batch = next(iter(PackedLoader(tmp_path / "s1", batch_size=2)))
    assert batch["input_ids"].shape == (2, stage.seq_len)
    build_stage(stage, tokenizer, tmp_path / "again")  # same spec and seed: the same shards, byte for byte
    assert (tmp_path / "again" / "shard_00000.tokens.npy").read_bytes() == (tmp_path / "s1" / "shard_00000.tokens.npy").read_bytes()


def test_build_best_fit_stage_with_quality_buckets_and_fim(tokenizer, tmp_path):
    from glm45.data.quality import QualityClassifier

    docs = [Document(text=("def f%d(x):\n    return x + %d\n" % (i, i)) * (1 + i % 40),
                     meta={"language": "python"}) for i in range(120)]
    write_documents(docs, tmp_path / "code.jsonl")
    clf = QualityClassifier(dim=1 << 12, steps=20).fit(
        [d.text for d in docs[:20]] + ["junk " * 50] * 20, [1] * 20 + [0] * 20)
    clf.save(tmp_path / "q")
    stage = StageSpec(name="mid", seq_len=256, packing="best_fit", fim_rate=1.0, seed=1, sources=[SourceSpec(
        name="code", path=str(tmp_path / "code.jsonl"), filter=False, dedup="exact", quality_model=str(tmp_path / "q"),
        bucket_weights=[0.0, 1.0, 2.0])])
    summary = build_stage(stage, tokenizer, tmp_path / "mid")
    q = summary["sources"]["code"]["quality"]
    assert sum(q["docs_in_per_bucket"]) == 120 and q["docs_in_per_bucket"][0] > 30
    assert q["docs_out_per_bucket"][0] == 0  # lowest bucket dropped
    assert q["docs_out_per_bucket"][2] == 2 * q["docs_in_per_bucket"][2]  # top bucket twice
    ds = PackedDataset(tmp_path / "mid")
    assert summary["packing_stats"]["chunks"] == sum(len(ds.row(i).chunk_lens) for i in range(len(ds)))
    whole = []
    for i in range(len(ds)):  # a chunk holding a whole document is a FIM-permuted source file
        row, pos = ds.row(i), 0
        for c in row.chunk_lens:
            text = tokenizer.decode(row.tokens[pos:pos + c].tolist())
            pos += c
            if text.startswith(("<|code_prefix|>", "<|code_suffix|>")) and text.endswith("<|endoftext|>"):
                whole.append(fim_unpermute(text[:-len("<|endoftext|>")]))
    originals = {d.text for d in docs}
    assert len(whole) == summary["documents"] - summary["packing_stats"]["split_docs"] and set(whole) <= originals


def test_builtin_reads_rest_documentation_when_present(tmp_path):
    import shutil
    import sysconfig

    from glm45.data.builtin import docstring_document

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    small = tmp_path / "stdlib"
    (small / "json").mkdir(parents=True)
    shutil.copy(stdlib / "random.py", small / "random.py")
    for f in ("__init__.py", "decoder.py"):
        shutil.copy(stdlib / "json" / f, small / "json" / f)
    docs = tmp_path / "_sources" / "library"
    docs.mkdir(parents=True)
    prose = docstring_document((stdlib / "fractions.py").read_text(), "fractions")
    (docs / "fractions.rst.txt").write_text(":mod:`fractions` --- Rational numbers\n" + "=" * 38 + "\n\n" + prose)
    result = build_corpus(tmp_path / "out", budget_chars=100_000, mix={"web": 0.5, "code": 0.5}, stdlib=str(small),
                          doc_dir=str(tmp_path / "_sources"))
    web = list(read_documents(result["sets"]["web"]))
    rest = [d for d in web if d.meta["language"] == "restructuredtext"]
    assert [d.meta["path"] for d in rest] == [str(Path("library") / "fractions.rst.txt")]
    assert {d.meta.get("module") for d in web} >= {"random"}
    code = list(read_documents(result["sets"]["code"]))
    assert {d.meta["path"] for d in code if d.source == "code"} == {"random.py", "json/__init__.py", "json/decoder.py"}
