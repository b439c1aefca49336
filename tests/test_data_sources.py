"""Sources: JSONL, Parquet, text directories, code trees, git history — streamed, with metadata."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from glm45.data.document import DataError, Document, read_documents, write_documents
from glm45.data.sources import (
    detect_format, read_code_tree, read_git_commits, read_jsonl, read_parquet, read_source, read_text_dir,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def test_jsonl_roundtrip_gzip_and_metadata(tmp_path):
    docs = [Document(text=f"doc {i}", source="s", meta={"lang": "en"}) for i in range(5)]
    docs.append(Document(text="", messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function"}]))
    for name in ("a.jsonl", "b.jsonl.gz"):
        assert write_documents(docs, tmp_path / name) == 6
    back = list(read_jsonl(tmp_path))  # a directory: every .jsonl(.gz) file, sorted
    assert len(back) == 12
    assert [d.text for d in back[:5]] == [f"doc {i}" for i in range(5)]
    assert back[0].meta == {"lang": "en"} and back[0].id == docs[0].id
    assert back[5].is_chat and back[5].tools == [{"type": "function"}]
    with gzip.open(tmp_path / "b.jsonl.gz", "rt") as f:  # really gzip
        assert json.loads(f.readline())["text"] == "doc 0"


def test_jsonl_streams_and_reports_bad_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "fine", "url": "http://a"}\n{not json}\n')
    it = read_documents(p)
    first = next(it)  # the good line is yielded before the bad one is even parsed
    assert first.text == "fine" and first.meta["url"] == "http://a"  # unknown fields become metadata
    with pytest.raises(DataError, match=r"x.jsonl:2: not valid JSON"):
        next(it)
    p.write_text('{"content": "no text field"}\n')
    with pytest.raises(DataError, match="neither a 'text' field"):
        list(read_documents(p))
    assert [d.text for d in read_documents(p, text_field="content")] == ["no text field"]


def test_parquet_streams_record_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"content": [f"row {i}" for i in range(2500)], "lang": ["en"] * 2500})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    docs = list(read_parquet(tmp_path / "t.parquet", text_field="content", batch_size=300))
    assert len(docs) == 2500 and docs[1234].text == "row 1234" and docs[0].meta["lang"] == "en"
    with pytest.raises(DataError, match="no column 'text'"):
        next(read_parquet(tmp_path / "t.parquet"))
    assert detect_format(tmp_path / "t.parquet") == "parquet"


def test_text_dir_reads_prose_and_skips_binary(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.md").write_text("beta")
    (tmp_path / "c.bin.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "d.rst.gz").write_bytes(gzip.compress(b"gamma"))
    docs = list(read_text_dir(tmp_path))
    assert sorted(d.text for d in docs) == ["alpha", "beta", "gamma"]
    assert {d.meta["path"] for d in docs} == {"a.txt", os.path.join("sub", "b.md"), "d.rst.gz"}


def test_code_tree_on_real_stdlib_package(tmp_path):
    shutil.copytree(STDLIB / "json", tmp_path / "json")
    (tmp_path / "json" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "json" / "__pycache__" / "x.py").write_text("skipped = True\n")
    (tmp_path / "json" / "logo.png").write_bytes(b"\x89PNG\x00\x00")
    docs = list(read_code_tree(tmp_path / "json"))
    paths = [d.meta["path"] for d in docs]
    assert "__init__.py" in paths and "decoder.py" in paths
    assert not any("__pycache__" in p or p.endswith(".png") for p in paths)
    assert all(d.meta["repo"] == "json" and d.meta["language"] == "python" for d in docs)
    assert docs[paths.index("decoder.py")].text == (STDLIB / "json" / "decoder.py").read_text()


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_repo_tracked_files_and_commits(tmp_path):
    repo = tmp_path / "proj"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("ignored.py\n")
    (repo / "main.py").write_text("print('v1')\n")
    (repo / "ignored.py").write_text("secret = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "Add main")
    (repo / "main.py").write_text("print('v2')\n")
    _git(repo, "commit", "-q", "-am", "Fix #3: print v2\n\nLonger body.")
    files = list(read_source(repo))  # auto: a git work tree is a code source
    assert [d.meta["path"] for d in files] == ["main.py"]  # .gitignore'd file is not tracked
    commits = list(read_git_commits(repo))
    assert len(commits) == 2
    newest = commits[0]
    assert newest.text.startswith("commit ") and "Fix #3: print v2" in newest.text and "Longer body." in newest.text
    assert "-print('v1')" in newest.text and "+print('v2')" in newest.text
    assert newest.meta["kind"] == "commit" and len(newest.meta["sha"]) == 40
    assert len(list(read_git_commits(repo, max_commits=1))) == 1


def test_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(read_source(tmp_path / "missing"))
    with pytest.raises(DataError, match="not a git repository"):
        list(read_git_commits(tmp_path))
    with pytest.raises(DataError, match="unknown source format"):
        read_source(tmp_path, "xml")
