"""Sources: read corpora into streams of `Document`s.

Formats: JSONL (files or directories, optionally gzipped), Parquet (streamed by record
batch), plain-text directories, code repositories (a directory tree, or a git work tree whose
tracked files are listed by git), git history as commit documents with diffs, and issue / PR
records given as JSONL. Every reader is a generator over files in sorted order, so reading is
deterministic and memory stays bounded by one file (one record batch for Parquet).
"""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path
from typing import Iterator

from glm45.data.document import DataError, Document, read_documents

# File extension -> language, for code documents (language-specific heuristics use it).
CODE_LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp",
    ".cxx": "cpp", ".rs": "rust", ".go": "go", ".java": "java", ".kt": "kotlin", ".scala": "scala",
    ".js": "javascript", ".mjs": "javascript", ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript",
    ".rb": "ruby", ".php": "php", ".cs": "csharp", ".swift": "swift", ".m": "objective-c", ".sh": "shell",
    ".bash": "shell", ".lua": "lua", ".pl": "perl", ".r": "r", ".jl": "julia", ".hs": "haskell", ".ml": "ocaml",
    ".sql": "sql", ".html": "html", ".css": "css", ".md": "markdown", ".rst": "restructuredtext",
    ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".cfg": "ini", ".ini": "ini",
    ".txt": "text", ".cmake": "cmake", ".mk": "make", ".tex": "tex", ".proto": "protobuf",
}
SPECIAL_FILENAMES = {"Makefile": "make", "Dockerfile": "dockerfile", "CMakeLists.txt": "cmake"}
# Directories that hold vendored, generated or tooling files rather than a project's own code.
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", "dist", "build",
             ".mypy_cache", ".pytest_cache", "site-packages", ".idea", ".vscode"}
TEXT_EXTENSIONS = (".txt", ".md", ".rst", ".text")


def language_of(path: str) -> str | None:
    name = os.path.basename(path)
    if name in SPECIAL_FILENAMES:
        return SPECIAL_FILENAMES[name]
    return CODE_LANGUAGES.get(os.path.splitext(name)[1].lower())


def _files_under(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(suffixes))
    return out


def read_jsonl(path: str | os.PathLike, *, text_field: str = "text", source: str = "") -> Iterator[Document]:
    """A JSONL file, or every *.jsonl / *.jsonl.gz under a directory (sorted)."""
    path = Path(path)
    files = _files_under(path, (".jsonl", ".jsonl.gz")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .jsonl files found")
    for f in files:
        for doc in read_documents(f, text_field=text_field):
            doc.source = doc.source or source or f.stem
            yield doc


def read_parquet(path: str | os.PathLike, *, text_field: str = "text", source: str = "",
                 batch_size: int = 1024) -> Iterator[Document]:
    """A Parquet file or directory of them, streamed one record batch at a time."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = _files_under(path, (".parquet",)) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .parquet files found")
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{f}: not a readable Parquet file ({e})") from None
        if text_field not in pf.schema_arrow.names:
            raise DataError(f"{f}: no column '{text_field}' (columns: {pf.schema_arrow.names})")
        row = 0
        for batch in pf.iter_batches(batch_size=batch_size):
            for record in batch.to_pylist():
                doc = Document.from_dict(record, text_field=text_field, where=f"{f}: row {row}")
                doc.source = doc.source or source or f.stem
                row += 1
                yield doc


def _read_text_file(path: Path, max_bytes: int) -> str | None:
    """The file's text, or None if it is too large or not UTF-8 text (binary)."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_text_dir(path: str | os.PathLike, *, source: str = "", suffixes: tuple[str, ...] = TEXT_EXTENSIONS,
                  max_bytes: int = 16 << 20) -> Iterator[Document]:
    """Every text file under a directory (also gzipped ones), one document each."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    suffixes = suffixes + tuple(s + ".gz" for s in suffixes)
    for f in _files_under(path, suffixes):
        text = _read_text_file(f, max_bytes)
        if text:
            yield Document(text=text, source=source or path.name, meta={"path": str(f.relative_to(path))})


def _git_files(root: Path) -> list[str] | None:
    """Tracked files of a git work tree (honours .gitignore), or None if `root` is not one."""
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sorted(p for p in out.decode("utf-8", "replace").split("\0") if p)


def read_code_tree(path: str | os.PathLike, *, repo: str = "", source: str = "code",
                   max_bytes: int = 1 << 20, languages: set[str] | None = None) -> Iterator[Document]:
    """Source files of a repository: a git work tree's tracked files, else a directory walk.

    Each document carries meta `path` (relative to the root), `repo` and `language`. Files
    that are binary, not UTF-8, larger than `max_bytes`, or of no known language are skipped.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    repo = repo or root.resolve().name
    rel_paths = _git_files(root)
    if rel_paths is None:
        rel_paths = [str(p.relative_to(root)) for p in _files_under(root, ("",))]
    for rel in rel_paths:
        if any(part in SKIP_DIRS for part in Path(rel).parts[:-1]):
            continue
        lang = language_of(rel)
        if lang is None or (languages is not None and lang not in languages):
            continue
        text = _read_text_file(root / rel, max_bytes)
        if text and text.strip():
            yield Document(text=text, source=source, meta={"path": rel, "repo": repo, "language": lang})


def read_git_commits(path: str | os.PathLike, *, repo: str = "", max_commits: int | None = None,
                     max_diff_chars: int = 200_000) -> Iterator[Document]:
    """Commits of a git repository as documents: message plus unified diff (`git log -p`).

    Streams `git log` output line by line, so a long history never sits in memory. Diffs longer
    than `max_diff_chars` are cut (huge vendored or generated changes are not useful context).
    """
    root = Path(path)
    if not (root / ".git").exists():
        raise DataError(f"{root}: not a git repository (no .git)")
    repo = repo or root.resolve().name
    marker = "\x1ecommit "
    cmd = ["git", "-C", str(root), "log", "--no-color", "--patch", "--no-renames", f"--format={marker}%H%n%an%n%aI%n%B%x1f"]
    if max_commits is not None:
        cmd.insert(4, f"--max-count={max_commits}")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"cannot run git: {e}") from None
    assert proc.stdout is not None

    def finish(lines: list[str]) -> Document | None:
        if not lines:
            return None
        block = "".join(lines)
        header, _, diff = block.partition("\x1f")
        sha, author, date, *msg = header.split("\n")
        message = "\n".join(msg).strip()
        diff = diff.strip("\n")[:max_diff_chars]
        return commit_document(repo, sha, message, diff, author=author, date=date)

    lines: list[str] = []
    try:
        for line in proc.stdout:
            if line.startswith(marker):
                doc = finish(lines)
                if doc is not None:
                    yield doc
                lines = [line[len(marker):]]
            else:
                lines.append(line)
        doc = finish(lines)
        if doc is not None:
            yield doc
    finally:
        proc.stdout.close()
        proc.wait()


def commit_document(repo: str, sha: str, message: str, diff: str, **meta: str) -> Document:
    """A commit in the diff-like layout used for mid-training."""
    text = f"commit {sha}\n\n{message}\n\n{diff}\n" if diff else f"commit {sha}\n\n{message}\n"
    return Document(text=text, source="commits", meta={"repo": repo, "sha": sha, "kind": "commit", **meta})


def read_source(path: str | os.PathLike, fmt: str = "auto", *, text_field: str = "text") -> Iterator[Document]:
    """Dispatch on format: jsonl, parquet, text, code, commits (or auto: by suffix / contents).

    `text_field` names the text column of JSONL and Parquet records.
    """
    readers = {"jsonl": read_jsonl, "parquet": read_parquet, "text": read_text_dir, "code": read_code_tree,
               "commits": read_git_commits}
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in readers:
        raise DataError(f"unknown source format '{fmt}' (expected one of {sorted(readers)} or 'auto')")
    if fmt in ("jsonl", "parquet"):
        return readers[fmt](path, text_field=text_field)
    return readers[fmt](path)


def detect_format(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    name = p.name
    if p.is_file():
        if name.endswith((".jsonl", ".jsonl.gz")):
            return "jsonl"
        if name.endswith(".parquet"):
            return "parquet"
        raise DataError(f"{p}: cannot tell the format from the name; pass it explicitly")
    if (p / ".git").exists():
        return "code"
    if _files_under(p, (".jsonl", ".jsonl.gz")):
        return "jsonl"
    if _files_under(p, (".parquet",)):
        return "parquet"
    return "text"
