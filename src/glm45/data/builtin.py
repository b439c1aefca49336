"""Built-in corpus for the speedrun: real text and code every machine has, plus synthetic tasks.

Nothing is downloaded. Document sets written by `build_corpus` (JSONL, one per set):
  web        prose: docstrings of the Python standard library (module, class and function
             docs, via `ast`, nothing imported), plus the reST sources of the Python docs when
             Debian's python3.11-doc is installed (/usr/share/doc/python3.11/html/_sources)
  code       standard-library source files (test suites left out), and code-task solutions
  repo       repo-level documents: each standard-library package as one "repository"
  math       arithmetic problems with worked solutions, as plain text (glm45.tasks)
  reasoning  chat samples with reasoning: arithmetic and code tasks (glm45.tasks)
  agent      tool-calling trajectories with their tools, in OpenAI message format (glm45.tasks)
`stages.json` holds the five preset stages over these sets (see `glm45.data.stages`).
There is no issue/PR history on a fresh machine, so the repo stage has no `events` set here;
point a stage spec at your own JSONL of issues/PRs/commits to add one.
"""

from __future__ import annotations

import ast
import itertools
import os
import sysconfig
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from glm45.data.code import repo_documents
from glm45.data.document import DataError, Document, write_documents
from glm45.data.filters import DocumentFilter, TextFilterConfig
from glm45.data.stages import load_stages, preset_stages, save_stages

# Share of the character budget per set.
DEFAULT_MIX: dict[str, float] = {"web": 0.35, "code": 0.30, "repo": 0.10, "math": 0.08, "reasoning": 0.10, "agent": 0.07}
SKIP_PARTS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages", "lib2to3", "ensurepip"}
API_DOC_FILTER: dict[str, Any] = {"max_dup_ngram_char_frac": {5: 0.35, 8: 0.3}}
DOC_DIRS = ("/usr/share/doc/python3.11/html/_sources", "/usr/share/doc/python3.11-doc/html/_sources")


def stdlib_files(stdlib: str | None = None) -> list[Path]:
    """The standard library's own .py files (no tests, no third-party site-packages), sorted."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"standard library not found at {root}")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_PARTS and not d.startswith("config-"))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    args = node.args
    if args.args and args.args[0].arg in ("self", "cls"):  # a method: its receiver is implied
        args = ast.arguments(posonlyargs=args.posonlyargs, args=args.args[1:], vararg=args.vararg,
                             kwonlyargs=args.kwonlyargs, kw_defaults=args.kw_defaults, kwarg=args.kwarg,
                             defaults=args.defaults[1:] if len(args.defaults) == len(args.args) else args.defaults)
    try:
        return f"({ast.unparse(args)})"
    except (ValueError, AttributeError):
        return "(...)"


def docstring_document(source: str, module: str) -> str | None:
    """A module's documentation as prose: its docstring, then each public class/function's."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    parts = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"{module}\n{'=' * len(module)}\n\n{doc}")

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
                continue
            d = ast.get_docstring(node)
            name = f"{prefix}{node.name}"
            if d:
                head = f"class {name}" if isinstance(node, ast.ClassDef) else f"{name}{_signature(node)}"
                parts.append(f"{head}\n    {d.replace(chr(10), chr(10) + '    ')}")
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{name}.")

    visit(tree.body, "")  # names relative to the module (the title): full paths on every entry read as spam
    return "\n\n".join(parts) if parts else None


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def doc_files(doc_dir: str | None = None) -> tuple[Path | None, list[Path]]:
    """(directory, its reST sources): `doc_dir`, else the first installed python3.11-doc location."""
    dirs = [doc_dir] if doc_dir else [d for d in DOC_DIRS if os.path.isdir(d)]
    if not dirs:
        return None, []
    root = Path(dirs[0])
    if not root.is_dir():
        raise DataError(f"documentation directory {root} does not exist")
    return root, sorted(p for p in root.rglob("*.txt") if p.is_file())


def _take(docs: Iterator[Document], budget: int) -> Iterator[Document]:
    used = 0
    for d in docs:
        if used >= budget:
            return
        used += d.num_chars
        yield d


def _generated(make: Callable[[int], list[Any]], to_doc: Callable[[Any], Document]) -> Iterator[Document]:
    """Endless documents from a seeded generator, drawn in batches (seed advances per batch)."""
    for k in itertools.count():
        for item in make(k):
            yield to_doc(item)


def build_corpus(out_dir: str | os.PathLike, budget_chars: int = 20_000_000, seed: int = 0, *,
                 base_seq_len: int = 512, mix: dict[str, float] | None = None,
                 stdlib: str | None = None, doc_dir: str | None = None) -> dict[str, Any]:
    """Write the built-in document sets and `stages.json` to `out_dir`; returns a summary with
    `sets` (name → path), `counts` (name → docs, chars) and `stages` (the loaded StageSpecs).

    `budget_chars` is split over the sets by `mix`; a set stops early when its source runs dry
    (standard-library prose alone gives ~1.4M characters; python3.11-doc adds ~10M).
    `doc_dir` points at reST documentation sources (default: python3.11-doc's, when installed).
    """
    from glm45.tasks import arithmetic, generate_arithmetic, generate_code_tasks, generate_tool_tasks
    from glm45.tasks.tools import KINDS as TOOL_KINDS

    if budget_chars < 1000:
        raise DataError(f"budget_chars must be at least 1000, got {budget_chars}")
    mix = mix or DEFAULT_MIX
    unknown = set(mix) - set(DEFAULT_MIX)
    if unknown:
        raise DataError(f"unknown document sets {sorted(unknown)} in mix (known: {sorted(DEFAULT_MIX)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget = {k: int(budget_chars * v) for k, v in mix.items()}
    rng = np.random.default_rng(seed)
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = stdlib_files(str(root))
    files = [files[i] for i in rng.permutation(len(files))]

    def read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def prose() -> Iterator[Document]:
        doc_root, rst_files = doc_files(doc_dir)
        candidates: list[Path] = files + rst_files
        for i in rng.permutation(len(candidates)):
            p = candidates[i]
            text = read(p)
            if text is None:
                continue
            if p.suffix == ".py":
                mod = _module_name(root, p)
                text = docstring_document(text, mod)
                meta = {"path": str(p.relative_to(root)), "module": mod, "language": "text"}
            else:
                meta = {"path": str(p.relative_to(doc_root)), "language": "restructuredtext"}
            if text and len(text) >= 200:
                yield Document(text=text, source="web", meta=meta)

    def code_files() -> Iterator[Document]:
        for p in files:
            text = read(p)
            if text and text.strip():
                yield Document(text=text, source="code",
                               meta={"path": str(p.relative_to(root)), "repo": "cpython-stdlib", "language": "python"})

    def code_docs() -> Iterator[Document]:
        tasks = _generated(lambda k: generate_code_tasks(64, seed * 1000 + k),
                           lambda t: Document(text=t.to_document(), source="code_tasks",
                                              meta={"language": "python", "task": t.id}))
        stdlib_docs = _take(code_files(), int(budget.get("code", 0) * 0.9))
        yield from stdlib_docs
        yield from tasks

    def repos() -> Iterator[Document]:
        packages = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
        for i in rng.permutation(len(packages)):
            pkg = packages[i]
            pkg_files = sorted((p for p in files if p.relative_to(root).parts[0] == pkg), key=str)
            docs = (Document(text=t, source="repo", meta={"path": str(p.relative_to(root / pkg)), "repo": f"cpython/{pkg}",
                                                          "language": "python"})
                    for p in pkg_files if (t := read(p)))
            # about one mid-training sequence (8 × base tokens at ~4 characters per token) per document
            yield from repo_documents(docs, max_chars=max(4 * 8 * base_seq_len, 8000))

    levels = [1, 2, 3, 4, 5]
    # Web and code are filtered here already, so their budgets fill with documents that pass.
    # API documentation repeats names and phrasings by nature, so the duplicated-n-gram limits
    # are looser than the web defaults (which drop ~40% of docstring pages).
    api_docs = TextFilterConfig(**API_DOC_FILTER)
    makers: dict[str, Callable[[], Iterator[Document]]] = {
        "web": lambda: DocumentFilter(text=api_docs).apply(prose()),
        "code": lambda: DocumentFilter().apply(code_docs()),
        "repo": repos,
        "math": lambda: _generated(
            lambda k: generate_arithmetic(256, seed * 1000 + k, levels),
            lambda p: Document(text=arithmetic.to_document(p), source="math", meta={"task": p.id, "language": "text"})),
        "reasoning": lambda: (d for pair in zip(
            _generated(lambda k: generate_arithmetic(128, seed * 1000 + 500 + k, levels),
                       lambda p: Document(text="", source="reasoning", messages=arithmetic.to_messages(p),
                                          meta={"task": p.id})),
            _generated(lambda k: generate_code_tasks(64, seed * 1000 + 500 + k),
                       lambda t: Document(text="", source="reasoning", messages=t.to_messages(), meta={"task": t.id})),
        ) for d in pair),
        "agent": lambda: _generated(
            lambda k: generate_tool_tasks(64, seed * 1000 + k, TOOL_KINDS),
            lambda t: Document(text="", source="agent", messages=t.reference_messages(), tools=t.tools,
                               meta={"task": t.id, "kind": t.kind})),
    }
    sets, counts = {}, {}
    for name, share in budget.items():
        path = out / f"{name}.jsonl"
        docs = list(_take(makers[name](), share)) if share > 0 else []
        if not docs:
            continue
        write_documents(docs, path)
        sets[name] = str(path)
        counts[name] = {"docs": len(docs), "chars": sum(d.num_chars for d in docs)}
    stages = preset_stages({k: Path(v).name for k, v in sets.items()}, seq_len=base_seq_len, seed=seed)
    for stage in stages:  # the stages re-filter web pages with the looser API-doc limits used above
        for src in stage.sources:
            if src.name == "web":
                src.text_filter = dict(API_DOC_FILTER)
    save_stages(stages, out / "stages.json")
    return {"sets": sets, "counts": counts, "stages": load_stages(out / "stages.json")}
