"""The coding agent's environment: fix a small repository so that hidden tests pass (SWE-style).

A `RepoTask` is a repository (files), an issue text, and hidden tests added only at grading
time (they replace any file of the same name, so the agent cannot edit them away). Tools:
`list_files`, `read_file`, `write_file`, `edit_file` (exact unique replacement), `run_tests`
(the repository's own tests) and `run_python` (a snippet, for self-verification). The episode
ends with a turn that calls no tool; the reward is 1 when every hidden test passes, else 0
(a trajectory cut off at `max_turns` is graded as it stands, as an SWE patch would be).

Isolation: each episode edits its own in-memory working copy (no file on the host changes), and
every test or snippet run happens in `glm45.sandbox.run_python` — a fresh directory, no network,
its own uid and process limits — so many episodes run concurrently from threads.

Built-in task sets (each bug is a mutation that the hidden tests are verified to catch, and the
unmutated code is verified to pass them):
- `tasks_from_code_tasks`: one function of `glm45.tasks.code` with a mutated reference solution.
- `tasks_from_stdlib`: a small pure-Python standard-library module (colorsys, fnmatch, calendar,
  shlex, textwrap) copied into the repository as a package, one function mutated, with
  generated tests whose expected values come from the real module.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import random
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from glm45.envs.base import EnvError, Message, Step, ToolEnvironment, Turn, register_env
from glm45.sandbox import run_python

__all__ = ["CODING_TOOLS", "CodingEnv", "OracleCoder", "RepoTask", "TestReport", "mutants", "run_repo_tests",
           "tasks_from_code_tasks", "tasks_from_stdlib"]

MAX_FILE_CHARS = 200_000
MAX_REPO_CHARS = 2_000_000
MAX_TOOL_OUTPUT = 4000


@dataclass
class RepoTask:
    id: str
    files: dict[str, str]  # the repository the agent starts from
    issue: str
    hidden_tests: dict[str, str]  # test files added at grading time
    solution: dict[str, str] = field(default_factory=dict)  # the reference fix: path -> content
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RepoTask:
        if not isinstance(d, dict) or not {"id", "files", "issue", "hidden_tests"} <= set(d):
            raise EnvError(f"a repo task needs id, files, issue and hidden_tests; got {str(d)[:200]}")
        for key in ("files", "hidden_tests"):
            if not isinstance(d[key], dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in d[key].items()):
                raise EnvError(f"repo task {d['id']!r}: {key} must map paths to file contents")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---- running tests in the sandbox -----------------------------------------------------------

# The runner imports every test module by path, calls each `test_*` function, and prints a JSON
# report after a random marker (code under test that exits early or prints cannot fake a pass
# without reading the runner — see the report's notes on this limit).
_RUNNER = r'''
import importlib.util, json, sys, traceback
results = {"passed": [], "failed": []}
for path in PATHS:
    name = path[:-3].replace("/", ".")
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BaseException as e:
        results["failed"].append({"test": path, "error": f"cannot import: {type(e).__name__}: {e}"})
        continue
    for attr in sorted(vars(module)):
        fn = getattr(module, attr)
        if attr.startswith("test") and callable(fn):
            test = f"{path}::{attr}"
            try:
                fn()
                results["passed"].append(test)
            except BaseException as e:
                msg = str(e) or type(e).__name__
                results["failed"].append({"test": test, "error": f"{type(e).__name__}: {msg}"[:500]})
sys.stdout.flush()
print("\n" + MARKER + json.dumps(results))
'''


@dataclass
class TestReport:
    passed: list[str]
    failed: list[dict[str, str]]
    ok: bool  # every test ran and passed (and at least one test exists)
    timed_out: bool = False
    output: str = ""  # what the run printed besides the report

    def summary(self, limit: int = MAX_TOOL_OUTPUT) -> str:
        if self.timed_out:
            head = "the test run timed out"
        else:
            head = f"{len(self.passed)} passed, {len(self.failed)} failed"
        lines = [head] + [f"FAILED {f['test']}: {f['error']}" for f in self.failed]
        if self.output.strip():
            lines.append("output:\n" + self.output.strip())
        text = "\n".join(lines)
        return text if len(text) <= limit else text[: limit - 12] + "\n[truncated]"


def _test_paths(files: dict[str, str]) -> list[str]:
    return sorted(p for p in files if p.endswith(".py") and PurePosixPath(p).name.startswith("test"))


def run_repo_tests(files: dict[str, str], tests: dict[str, str] | None = None, *, timeout_s: float = 10.0,
                   memory_mb: int = 512) -> TestReport:
    """Run the test files among `files` (or, with `tests`, those added on top of `files`) in
    the sandbox."""
    tree = dict(files)
    tree.update(tests or {})
    paths = _test_paths(tests) if tests is not None else _test_paths(files)
    marker = f"GLM45-TEST-REPORT-{secrets.token_hex(12)}:"
    program = f"PATHS = {paths!r}\nMARKER = {marker!r}\n{_RUNNER}"
    result = run_python(program, timeout_s=timeout_s, memory_mb=memory_mb, files=tree)
    head, sep, tail = result.stdout.rpartition(marker)
    if not sep:
        return TestReport([], [], False, result.timed_out, (result.stdout + result.stderr)[-MAX_TOOL_OUTPUT:])
    try:
        report = json.loads(tail.strip().splitlines()[0])
    except (ValueError, IndexError):
        return TestReport([], [], False, result.timed_out, head[-MAX_TOOL_OUTPUT:])
    passed, failed = list(report["passed"]), list(report["failed"])
    return TestReport(passed, failed, bool(passed) and not failed and result.ok, result.timed_out,
                      (head + result.stderr)[-MAX_TOOL_OUTPUT:])


# ---- the environment ------------------------------------------------------------------------


def _fn(name: str, description: str, properties: dict, required: Sequence[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": list(required), "additionalProperties": False}}}


_PATH = {"type": "string", "description": "a path relative to the repository root"}
CODING_TOOLS = [
    _fn("list_files", "List the repository's files with their sizes.", {}, []),
    _fn("read_file", "Read a file, with line numbers.", {
        "path": _PATH, "start_line": {"type": "integer", "minimum": 1}, "end_line": {"type": "integer", "minimum": 1}},
        ["path"]),
    _fn("write_file", "Create or overwrite a file.", {"path": _PATH, "content": {"type": "string"}},
        ["path", "content"]),
    _fn("edit_file", "Replace the one occurrence of old_text in a file with new_text.", {
        "path": _PATH, "old_text": {"type": "string", "minLength": 1}, "new_text": {"type": "string"}},
        ["path", "old_text", "new_text"]),
    _fn("run_tests", "Run the repository's tests (all test*.py files, or one file).", {"path": _PATH}, []),
    _fn("run_python", "Run a Python snippet in the repository (stdout and stderr are returned).", {
        "code": {"type": "string", "minLength": 1}}, ["code"]),
]

SYSTEM_PROMPT = ("You are a software engineer working in a repository through tools. Read the issue, find the "
                 "cause, fix the code, and check your fix with run_tests or run_python. When you are done, "
                 "reply without calling a tool, with a short summary of the change.")


class CodingEnv(ToolEnvironment):
    """Tasks: `RepoTask`s (or their dicts)."""

    def __init__(self, max_turns: int = 30, *, test_timeout_s: float = 10.0, memory_mb: int = 512,
                 grade_on_cutoff: bool = True) -> None:
        super().__init__(max_turns)
        self.test_timeout_s = test_timeout_s
        self.memory_mb = memory_mb
        self.grade_on_cutoff = grade_on_cutoff
        self.files: dict[str, str] = {}

    def _start(self, task: Any) -> tuple[list[Message], list[dict]]:
        if isinstance(task, dict):
            task = RepoTask.from_dict(task)
        if not isinstance(task, RepoTask):
            raise EnvError(f"a coding task must be a RepoTask or its dict, got {type(task).__name__}")
        self.task = task
        self.files = dict(task.files)  # this episode's own working copy
        listing = "\n".join(sorted(self.files))
        user = f"Repository files:\n{listing}\n\nIssue:\n{task.issue}"
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}], CODING_TOOLS

    def _path(self, path: str) -> str:
        p = PurePosixPath(path)
        if not path or p.is_absolute() or ".." in p.parts or str(p) in ("", ".") or "\\" in path:
            raise EnvError(f"{path!r} is not a path inside the repository (relative, no '..')")
        if str(p) == "main.py":
            raise EnvError("'main.py' is reserved by the test runner; choose another name")
        return str(p)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        try:
            return getattr(self, f"_tool_{name}")(**arguments)
        except EnvError as e:
            return f"Error: {e}"

    def _tool_list_files(self) -> str:
        return "\n".join(f"{p} ({len(c)} chars)" for p, c in sorted(self.files.items()))

    def _tool_read_file(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        path = self._path(path)
        if path not in self.files:
            raise EnvError(f"no file {path!r}; list_files shows what exists")
        lines = self.files[path].splitlines()
        end = len(lines) if end_line is None else min(end_line, len(lines))
        text = "\n".join(f"{i:5d}  {lines[i - 1]}" for i in range(start_line, end + 1))
        if len(text) > MAX_TOOL_OUTPUT * 4:
            text = text[: MAX_TOOL_OUTPUT * 4] + "\n[truncated: read a smaller line range]"
        return text or f"(no lines in range {start_line}-{end}; the file has {len(lines)} lines)"

    def _store(self, path: str, content: str) -> None:
        if len(content) > MAX_FILE_CHARS:
            raise EnvError(f"file too large ({len(content)} chars; limit {MAX_FILE_CHARS})")
        total = sum(len(c) for p, c in self.files.items() if p != path) + len(content)
        if total > MAX_REPO_CHARS:
            raise EnvError(f"the repository would exceed {MAX_REPO_CHARS} chars")
        self.files[path] = content

    def _tool_write_file(self, path: str, content: str) -> str:
        path = self._path(path)
        self._store(path, content)
        return f"wrote {path} ({len(content)} chars)"

    def _tool_edit_file(self, path: str, old_text: str, new_text: str) -> str:
        path = self._path(path)
        if path not in self.files:
            raise EnvError(f"no file {path!r}")
        count = self.files[path].count(old_text)
        if count != 1:
            raise EnvError(f"old_text occurs {count} times in {path}; it must occur exactly once")
        self._store(path, self.files[path].replace(old_text, new_text))
        return f"edited {path}"

    def _tool_run_tests(self, path: str | None = None) -> str:
        files = self.files
        if path is not None:
            path = self._path(path)
            if path not in files:
                raise EnvError(f"no test file {path!r}")
            files = {p: c for p, c in files.items() if p == path or not _test_paths({p: c})}
        if not _test_paths(files):
            return "no test files (test*.py) in the repository"
        return run_repo_tests(files, timeout_s=self.test_timeout_s, memory_mb=self.memory_mb).summary()

    def _tool_run_python(self, code: str) -> str:
        r = run_python(code, timeout_s=self.test_timeout_s, memory_mb=self.memory_mb, files=self.files)
        out = f"exit status: {'timeout' if r.timed_out else r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        return out if len(out) <= MAX_TOOL_OUTPUT else out[: MAX_TOOL_OUTPUT - 12] + "\n[truncated]"

    def grade(self) -> tuple[float, dict[str, Any]]:
        report = run_repo_tests(self.files, self.task.hidden_tests, timeout_s=self.test_timeout_s,
                                memory_mb=self.memory_mb)
        return float(report.ok), {"hidden_passed": len(report.passed), "hidden_failed": len(report.failed),
                                  "hidden_timed_out": report.timed_out}

    def _text_turn(self, turn: Turn) -> Step:
        reward, info = self.grade()
        return Step(None, reward, True, info)

    def _out_of_turns(self) -> tuple[float, dict[str, Any]]:
        return self.grade() if self.grade_on_cutoff else (0.0, {})


register_env("coding", lambda **kw: CodingEnv(**kw))


class OracleCoder:
    """Writes the task's reference fix, runs the tests, then stops."""

    def __init__(self, task: RepoTask | dict) -> None:
        self.task = RepoTask.from_dict(task) if isinstance(task, dict) else task
        self.plan = [{"name": "write_file", "arguments": {"path": p, "content": c}}
                     for p, c in sorted(self.task.solution.items())] + [{"name": "run_tests", "arguments": {}}]

    def act(self, messages: list[Message], tools: list[dict]) -> Message:
        if self.plan:
            return {"role": "assistant", "content": "", "tool_calls": [self.plan.pop(0)]}
        return {"role": "assistant", "content": "Fixed the bug; the tests pass."}


# ---- mutations ------------------------------------------------------------------------------

_BINOP_SWAP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "+"), ast.FloorDiv: ("//", "*"),
               ast.Div: ("/", "*"), ast.Mod: ("%", "//")}
_CMP_SWAP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
             ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in")}
_BOOL_SWAP = {ast.And: ("and", "or"), ast.Or: ("or", "and")}


def mutants(source: str, function: str) -> list[tuple[str, str]]:
    """Every single-site mutant of `function` in `source`: (description, mutated source).

    Mutations are made in the text (the operator between two operands, or a constant), so the
    rest of the file keeps its formatting and comments: an arithmetic operator swapped, a
    comparison flipped or loosened, `and`/`or` swapped, an integer constant moved by one.
    """
    tree = ast.parse(source)
    target = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name == function), None)
    if target is None:
        raise EnvError(f"no function {function!r} in the source")
    data = source.encode("utf-8")
    starts = [0]
    for line in source.encode("utf-8").splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def at(line: int, col: int) -> int:
        return starts[line - 1] + col

    edits: list[tuple[int, int, str, str, str]] = []  # (start, end, old, new, description)

    def between(a: ast.AST, b: ast.AST, old: str, new: str, what: str) -> None:
        lo, hi = at(a.end_lineno, a.end_col_offset), at(b.lineno, b.col_offset)
        segment = data[lo:hi].decode("utf-8")
        m = re.search(rf"(?<![\w<>=!/*]){re.escape(old)}(?![\w<>=/*])", segment)
        if m:
            edits.append((lo + len(segment[: m.start()].encode()), lo + len(segment[: m.end()].encode()),
                          old, new, what))

    for node in ast.walk(target):
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
            old, new = _BINOP_SWAP[type(node.op)]
            between(node.left, node.right, old, new, f"'{old}' -> '{new}'")
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_SWAP:
            old, new = _CMP_SWAP[type(node.ops[0])]
            between(node.left, node.comparators[0], old, new, f"'{old}' -> '{new}'")
        elif isinstance(node, ast.BoolOp) and type(node.op) in _BOOL_SWAP:
            old, new = _BOOL_SWAP[type(node.op)]
            between(node.values[0], node.values[1], old, new, f"'{old}' -> '{new}'")
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            lo, hi = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
            old = data[lo:hi].decode("utf-8")
            if old.isdigit():
                edits.append((lo, hi, old, str(node.value + 1), f"{old} -> {node.value + 1}"))
    out = []
    for lo, hi, old, new, what in sorted(edits):
        mutated = (data[:lo] + new.encode("utf-8") + data[hi:]).decode("utf-8")
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue
        out.append((f"{function}: {what}", mutated))
    return out


def _failure_text(failure: dict[str, str]) -> str:
    """What a failed generated test says ("f(1) returned 2, expected 3")."""
    return failure["error"].removeprefix("AssertionError: ")


def _pick_mutant(files: dict[str, str], path: str, function: str, hidden: dict[str, str],
                 rng: random.Random, tries: int = 6, timeout_s: float = 5.0) -> tuple[str, TestReport] | None:
    """A mutant of `function` in `files[path]` that the hidden tests catch (not by a timeout)."""
    candidates = mutants(files[path], function)
    rng.shuffle(candidates)
    for _, mutated in candidates[:tries]:
        report = run_repo_tests({**files, path: mutated}, hidden, timeout_s=timeout_s)
        if report.failed and not report.timed_out:
            return mutated, report
    return None


# ---- built-in tasks: from glm45.tasks.code --------------------------------------------------


def _test_function(name: str, call: str, want: str, same: str = "got == want") -> str:
    """A test that calls `call` and compares with `want`, failing with a message that shows the call."""
    shown = call.replace("{", "{{").replace("}", "}}").replace("\\", "\\\\").replace('"', '\\"')
    return (f"def {name}():\n    try:\n        got = {call}\n    except Exception as e:\n"
            f"        raise AssertionError(f\"{shown} raised {{type(e).__name__}}: {{e}}\") from None\n"
            f"    want = {want}\n"
            f"    assert {same}, f\"{shown} returned {{got!r}}, expected {{want!r}}\"\n")


def _assert_to_test(i: int, line: str) -> str:
    m = re.fullmatch(r"assert (.+) == (.+)", line.strip())
    if not m:
        raise EnvError(f"unexpected test line {line!r}")
    return _test_function(f"test_{i}", *m.groups())


def tasks_from_code_tasks(n: int, seed: int = 0, *, split: str = "train", difficulty: int | Sequence[int] | None = None
                          ) -> list[RepoTask]:
    """Repositories of one module `<fn>.py` whose function has a bug, the task's prompt as the
    README, one visible test and the task's hidden tests. Uses the sandbox to verify each bug."""
    from glm45.tasks.code import generate_code_tasks

    rng = random.Random(f"glm45.envs.coding.code/{seed}/{split}")
    out: list[RepoTask] = []
    for code_task in generate_code_tasks(4 * n + 8, seed, split=split, difficulty=difficulty, unique=True):
        if len(out) == n:
            break
        fn = code_task.entry_point
        path, test_path = f"{fn}.py", f"tests/test_{fn}.py"
        lines = [line for line in code_task.tests.splitlines() if line.strip()]
        header = f"from {fn} import {fn}\n\n\n"
        visible = {test_path: header + _assert_to_test(0, lines[0])}
        hidden = {test_path: header + "\n\n".join(_assert_to_test(i, line) for i, line in enumerate(lines))}
        files = {path: code_task.reference, "README.md": code_task.prompt + "\n", **visible}
        picked = _pick_mutant(files, path, fn, hidden, rng)
        if picked is None:
            continue
        mutated, report = picked
        issue = (f"`{fn}` in {path} gives wrong results. It should be a function that "
                 f"{code_task.prompt.split(' that ', 1)[-1].split(chr(10))[0]}\n"
                 f"Observed: {_failure_text(report.failed[0])}.")
        out.append(RepoTask(id=f"repo-code-{split}-{seed}-{len(out)}", files={**files, path: mutated}, issue=issue,
                            hidden_tests=hidden, solution={path: code_task.reference},
                            source=f"code-task:{code_task.family}"))
    if len(out) < n:
        raise EnvError(f"built only {len(out)} of {n} repo tasks from code tasks (seed {seed})")
    return out


# ---- built-in tasks: small standard-library modules -----------------------------------------


def _floats(rng: random.Random, k: int = 3) -> tuple:
    return tuple(round(rng.random(), 2) for _ in range(k))


_WORDS = ("alpha", "beta", "gamma", "delta", "one", "two", "three", "spam", "eggs", "ham", "data", "file")


def _sentence(rng: random.Random, lo: int = 3, hi: int = 14) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def _shell_words(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 5)):
        w = rng.choice(_WORDS)
        parts.append(rng.choice((w, f"'{w} {rng.choice(_WORDS)}'", f'"{w}"', f"{w}\\ x", f"--{w}={w}")))
    return " ".join(parts)


def _pattern(rng: random.Random) -> str:
    return rng.choice(("*.py", "data_?.txt", "[a-c]*", "*[!0-9]", "f*e", "*", "?a*"))


def _filename(rng: random.Random) -> str:
    return rng.choice(("main.py", "data_1.txt", "alpha", "file", "beta.py", "x9", "cafe", "data_x.txt"))


# module -> function -> argument generator (the functions' expected values come from the real module)
STDLIB_TARGETS: dict[str, dict[str, Callable[[random.Random], tuple]]] = {
    "colorsys": {
        "rgb_to_hsv": lambda r: _floats(r), "hsv_to_rgb": lambda r: _floats(r),
        "rgb_to_hls": lambda r: _floats(r), "hls_to_rgb": lambda r: _floats(r),
        "rgb_to_yiq": lambda r: _floats(r), "yiq_to_rgb": lambda r: _floats(r),
    },
    "calendar": {
        "isleap": lambda r: (r.choice((1900, 2000, 2004, 2023, 2024, 2100, r.randint(1600, 2400))),),
        "leapdays": lambda r: tuple(sorted((r.randint(1600, 2400), r.randint(1600, 2400)))),
        "weekday": lambda r: (r.randint(1970, 2100), r.randint(1, 12), r.randint(1, 28)),
        "monthrange": lambda r: (r.randint(1900, 2100), r.randint(1, 12)),
    },
    "fnmatch": {
        "fnmatchcase": lambda r: (_filename(r), _pattern(r)),
        "translate": lambda r: (_pattern(r),),
        "filter": lambda r: ([_filename(r) for _ in range(4)], _pattern(r)),
    },
    "shlex": {
        "split": lambda r: (_shell_words(r),),
        "quote": lambda r: (r.choice((_sentence(r, 1, 2), "", "it's", "a$b", "plain")),),
        "join": lambda r: ([r.choice(_WORDS + ("a b", "it's", "")) for _ in range(r.randint(1, 4))],),
    },
    "textwrap": {
        "wrap": lambda r: (_sentence(r, 5, 30), r.randint(8, 30)),
        "shorten": lambda r: (_sentence(r, 3, 20), r.randint(15, 40)),
        "dedent": lambda r: ("\n".join(" " * r.choice((2, 4)) + _sentence(r, 1, 4) for _ in range(r.randint(1, 4))),),
        "indent": lambda r: ("\n".join(_sentence(r, 1, 4) for _ in range(r.randint(1, 4))),
                             r.choice(("> ", "  ", "# "))),
    },
}

_CLOSE = '''import math


def _close(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b
'''


def _stdlib_tests(module: str, cases: list[tuple[str, tuple, Any]]) -> str:
    body = [f"from lib import {module}\n{_CLOSE}"]
    for i, (fn, args, want) in enumerate(cases):
        call = f"{module}.{fn}({', '.join(repr(a) for a in args)})"
        body.append("\n" + _test_function(f"test_{fn}_{i}", call, repr(want), "_close(got, want)"))
    return "\n".join(body)


def tasks_from_stdlib(n: int, seed: int = 0, modules: Sequence[str] | None = None, *,
                      tests_per_function: int = 4) -> list[RepoTask]:
    """Repositories holding one standard-library module (`lib/<module>.py`) with one function
    mutated, visible regression tests for the other functions, and hidden tests for all."""
    modules = list(modules or STDLIB_TARGETS)
    unknown = [m for m in modules if m not in STDLIB_TARGETS]
    if unknown:
        raise EnvError(f"no test generators for {unknown}; known modules: {sorted(STDLIB_TARGETS)}")
    rng = random.Random(f"glm45.envs.coding.stdlib/{seed}")
    out: list[RepoTask] = []
    verified: set[str] = set()
    for attempt in range(4 * n + 4):
        if len(out) == n:
            break
        module = modules[attempt % len(modules)] if attempt < len(modules) else rng.choice(modules)
        real = importlib.import_module(module)
        source = inspect.getsource(real)
        target = rng.choice(sorted(STDLIB_TARGETS[module]))
        cases = {fn: [(fn, args, getattr(real, fn)(*args)) for args in
                      (gen(rng) for _ in range(tests_per_function))]
                 for fn, gen in sorted(STDLIB_TARGETS[module].items())}
        test_path, path = f"tests/test_{module}.py", f"lib/{module}.py"
        hidden = {test_path: _stdlib_tests(module, [c for fn in sorted(cases) for c in cases[fn]])}
        visible = {test_path: _stdlib_tests(module, [c for fn in sorted(cases) if fn != target for c in cases[fn]])}
        files = {"lib/__init__.py": "", path: source, "README.md": f"A copy of the `{module}` module.\n", **visible}
        if module not in verified:  # the unmutated module must pass its generated tests
            if not run_repo_tests(files, hidden).ok:
                raise EnvError(f"the generated tests fail on the unmodified {module} module")
            verified.add(module)
        picked = _pick_mutant(files, path, target, hidden, rng)
        if picked is None:
            continue
        mutated, report = picked
        failing = next(f for f in report.failed if f"test_{target}_" in f["test"]) if any(
            f"test_{target}_" in f["test"] for f in report.failed) else report.failed[0]
        issue = (f"`{module}.{target}` misbehaves: {_failure_text(failing)}.\n"
                 f"The other functions of the module seem fine.")
        out.append(RepoTask(id=f"repo-stdlib-{seed}-{len(out)}", files={**files, path: mutated}, issue=issue,
                            hidden_tests=hidden, solution={path: source}, source=f"stdlib:{module}.{target}"))
    if len(out) < n:
        raise EnvError(f"built only {len(out)} of {n} stdlib repo tasks (seed {seed})")
    return out
