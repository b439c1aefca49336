"""Mid-training code documents (paper §2.3): repo-level concatenations and issue/PR/commit contexts.

Repo-level: a repository's files concatenated into one document, each preceded by a header
line with its path, so the model learns cross-file dependencies. README-like files come
first (they describe the rest), then the others in path order. Repositories larger than
`max_chars` become several documents, cut at file boundaries.

Issues / PRs / commits: records given as JSONL (one object per line) with
  {"type": "issue" | "pr" | "commit", "repo": str, "number": int (issues, PRs), "sha": str (commits),
   "title": str, "body": str, "message": str (commits), "state": str, "author": str,
   "comments": [{"author": str, "body": str}], "diff": str (PRs, commits),
   "links": [int] (issue/PR numbers this record refers to)}
Related records — linked explicitly via "links" or by "#N" references in titles, bodies and
commit messages ("fixes #12") — are grouped (union-find) into one context: issues, then PRs,
then commits, each commit in a diff-like format. A repository's records are held in memory
while it is grouped; records are expected to arrive grouped by repository.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable, Iterator

from glm45.data.document import DataError, Document
from glm45.data.filters import PROSE_LANGUAGES

README_NAMES = ("readme", "contributing", "architecture", "design")
_REF = re.compile(r"(?<![\w&])#(\d+)\b")


def file_header(path: str) -> str:
    return f"<file path=\"{path}\">\n"


def _file_order(doc: Document) -> tuple[int, str]:
    path = doc.meta.get("path", "")
    stem = Path(path).name.lower()
    return (0 if stem.startswith(README_NAMES) else 1, path)


def repo_documents(files: Iterable[Document], *, max_chars: int = 400_000) -> Iterator[Document]:
    """One (or more) documents per repository from a stream of file documents.

    Files must carry meta `repo` and `path`; consecutive files with the same repo form one
    repository (what `read_code_tree` yields).
    """
    for repo, group in groupby(files, key=lambda d: d.meta.get("repo")):
        if repo is None:
            raise DataError("repo-level documents need file documents with meta 'repo' (and 'path')")
        docs = sorted(group, key=_file_order)
        code_langs = Counter(d.meta.get("language") for d in docs if d.meta.get("language") not in PROSE_LANGUAGES)
        language = code_langs.most_common(1)[0][0] if code_langs else "code"  # the repo is code, even if its README leads
        parts: list[str] = []
        paths: list[str] = []
        size = 0
        for d in docs:
            block = file_header(d.meta.get("path", "?")) + d.text.rstrip("\n") + "\n</file>\n"
            if parts and size + len(block) > max_chars:
                yield _repo_doc(repo, parts, paths, language)
                parts, paths, size = [], [], 0
            parts.append(block)
            paths.append(d.meta.get("path", "?"))
            size += len(block)
        if parts:
            yield _repo_doc(repo, parts, paths, language)


def _repo_doc(repo: str, parts: list[str], paths: list[str], language: str) -> Document:
    text = f"<repo name=\"{repo}\">\n" + "".join(parts) + "</repo>\n"
    return Document(text=text, source="repo", meta={"repo": repo, "files": paths, "kind": "repo", "language": language})


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such issues/PRs/commits JSONL file")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if rec.get("type") not in ("issue", "pr", "commit"):
                raise DataError(f"{path}:{lineno}: 'type' must be issue, pr or commit (got {rec.get('type')!r})")
            if rec["type"] == "commit" and not rec.get("sha"):
                raise DataError(f"{path}:{lineno}: a commit record needs 'sha'")
            if rec["type"] != "commit" and not isinstance(rec.get("number"), int):
                raise DataError(f"{path}:{lineno}: an {rec['type']} record needs an integer 'number'")
            yield rec


def _key(rec: dict[str, Any]) -> str:
    return f"c:{rec['sha']}" if rec["type"] == "commit" else f"n:{rec['number']}"


def _references(rec: dict[str, Any]) -> set[int]:
    refs = {int(n) for n in rec.get("links", [])}
    for fld in ("title", "body", "message"):
        refs.update(int(n) for n in _REF.findall(rec.get(fld) or ""))
    return refs


def render_event(rec: dict[str, Any]) -> str:
    kind = rec["type"]
    if kind == "commit":
        head = f"commit {rec['sha']}\n"
        if rec.get("author"):
            head += f"Author: {rec['author']}\n"
        text = head + "\n" + (rec.get("message") or "").strip() + "\n"
    else:
        label = "Issue" if kind == "issue" else "Pull request"
        text = f"{label} #{rec['number']}: {(rec.get('title') or '').strip()}\n"
        if rec.get("state"):
            text += f"State: {rec['state']}\n"
        if rec.get("author"):
            text += f"Author: {rec['author']}\n"
        body = (rec.get("body") or "").strip()
        text += "\n" + body + "\n" if body else ""
        for c in rec.get("comments") or []:
            text += f"\nComment by {c.get('author', 'unknown')}:\n{(c.get('body') or '').strip()}\n"
    if rec.get("diff"):
        text += "\n" + rec["diff"].strip("\n") + "\n"
    return text


def event_documents(records: Iterable[dict[str, Any]]) -> Iterator[Document]:
    """Group related issue/PR/commit records per repository into one document each."""
    order = {"issue": 0, "pr": 1, "commit": 2}
    for repo, group in groupby(records, key=lambda r: r.get("repo", "")):
        recs = list(group)
        parent: dict[str, str] = {}

        def find(k: str) -> str:
            while parent.setdefault(k, k) != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        numbers = {r["number"] for r in recs if r["type"] != "commit"}
        for r in recs:
            for n in _references(r) & numbers:
                parent[find(_key(r))] = find(f"n:{n}")
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            groups[find(_key(r))].append(r)
        for members in groups.values():
            members.sort(key=lambda r: (order[r["type"]], r.get("number", 0), r.get("date", "")))
            text = "\n".join(render_event(r) for r in members)
            ids = [r.get("number") or r.get("sha") for r in members]
            yield Document(text=text, source="issues", meta={"repo": repo, "kind": "issue_pr_commit", "items": ids,
                                                             "language": "text"})
