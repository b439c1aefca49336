"""Repo-level documents and issue/PR/commit contexts for mid-training."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from glm45.data.code import event_documents, read_events, repo_documents
from glm45.data.document import DataError
from glm45.data.sources import read_code_tree

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def test_repo_document_concatenates_files_with_path_headers(tmp_path):
    shutil.copytree(STDLIB / "json", tmp_path / "json")
    (tmp_path / "json" / "README.md").write_text("# json\nThe json package.\n")
    files = list(read_code_tree(tmp_path / "json"))
    [doc] = list(repo_documents(files))
    assert doc.text.startswith('<repo name="json">\n<file path="README.md">\n# json')  # README leads
    for f in files:
        block = f'<file path="{f.meta["path"]}">\n{f.text.rstrip(chr(10))}\n</file>\n'
        assert block in doc.text
    assert doc.meta["files"][0] == "README.md" and doc.meta["files"][1:] == sorted(doc.meta["files"][1:])
    assert doc.meta["language"] == "python"  # a code repository, though its README is markdown


def test_large_repositories_split_at_file_boundaries(tmp_path):
    files = list(read_code_tree(STDLIB / "json"))
    docs = list(repo_documents(files, max_chars=15_000))
    assert len(docs) > 1
    seen = [p for d in docs for p in d.meta["files"]]
    assert sorted(seen) == sorted(f.meta["path"] for f in files)  # every file exactly once
    for d in docs:
        assert d.text.count("<file path=") == len(d.meta["files"]) == d.text.count("</file>")
        assert len(d.text) <= 15_000 + 100 or len(d.meta["files"]) == 1


def test_repo_documents_need_repo_metadata():
    from glm45.data.document import Document

    with pytest.raises(DataError, match="meta 'repo'"):
        list(repo_documents([Document(text="x = 1")]))


def _write(tmp_path: Path, records: list[dict]) -> Path:
    p = tmp_path / "events.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return p


def test_related_issues_prs_and_commits_become_one_context(tmp_path):
    records = [
        {"type": "issue", "repo": "a/b", "number": 12, "title": "Crash on empty input", "body": "Steps: run with ''.",
         "comments": [{"author": "maint", "body": "Confirmed."}]},
        {"type": "pr", "repo": "a/b", "number": 15, "title": "Handle empty input", "body": "Fixes #12.",
         "diff": "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-x\n+y"},
        {"type": "commit", "repo": "a/b", "sha": "abc123", "message": "Guard empty input (#15)",
         "diff": "diff --git a/x.py b/x.py\n-x\n+y"},
        {"type": "issue", "repo": "a/b", "number": 20, "title": "Docs typo", "body": "Unrelated."},
        {"type": "pr", "repo": "c/d", "number": 12, "title": "Other repo", "body": "Mentions #12 of its own repo."},
    ]
    docs = list(event_documents(read_events(_write(tmp_path, records))))
    assert len(docs) == 3
    ctx = next(d for d in docs if 12 in d.meta["items"] and d.meta["repo"] == "a/b")
    assert ctx.meta["items"] == [12, 15, "abc123"]
    t = ctx.text
    assert t.index("Issue #12: Crash") < t.index("Pull request #15") < t.index("commit abc123")
    assert "Comment by maint:\nConfirmed." in t and "+y" in t and "Guard empty input" in t
    assert "Docs typo" not in t and "Other repo" not in t


def test_event_records_are_validated(tmp_path):
    with pytest.raises(DataError, match="'type' must be"):
        list(read_events(_write(tmp_path, [{"type": "wiki"}])))
    with pytest.raises(DataError, match="needs 'sha'"):
        list(read_events(_write(tmp_path, [{"type": "commit"}])))
    with pytest.raises(DataError, match="integer 'number'"):
        list(read_events(_write(tmp_path, [{"type": "issue", "number": "7"}])))
