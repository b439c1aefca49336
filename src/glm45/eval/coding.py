"""Code tasks: run the model's program against the task's tests in the sandbox; pass@k.

Two test styles:
- function tests (HumanEval): the record's ``prompt`` (signature + docstring), ``entry_point`` and
  ``test`` (defining ``check(candidate)``). The program is the prompt, then the model's code (a full
  function definition, which overrides the prompt's stub — helpers and imports of the prompt stay
  available), then the test and ``check(entry_point)``.
- stdin/stdout tests (LiveCodeBench style): ``tests`` = ``[{"input", "output"}]``; the program must
  print the expected output (compared line by line, trailing whitespace ignored) for every input.

pass@k uses the unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k).
"""

from __future__ import annotations

import random
import re

from glm45.eval.backend import ChatSample, EvalError
from glm45.eval.kinds import ChatKind, ItemResult, Prompt, RunContext, Score, get_field, mean
from glm45.sandbox import run_python

__all__ = ["CodeKind", "build_program", "extract_code", "pass_at_k", "run_tests"]

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise EvalError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The program in a response: the last fenced block defining `entry_point` if any, else the last
    Python block, else the last block, else the whole text."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if entry_point:
        defining = [b for _, b in blocks if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
        if defining:
            return defining[-1]
    python = [b for lang, b in blocks if lang in ("python", "py", "python3")]
    if python:
        return python[-1]
    return blocks[-1][1] if blocks else text


def build_program(record: dict, code: str) -> str:
    """The full test program for a function-test record (see module docstring)."""
    entry = record["entry_point"]
    defines = re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.M) is not None
    body = record["prompt"] + ("\n" + code if defines else code)  # else: code continues the prompt
    return f"{body}\n\n{record['test']}\n\ncheck({entry})\n"


def _same_output(got: str, expected: str) -> bool:
    def lines(s: str) -> list[str]:
        out = [line.rstrip() for line in s.strip("\n").splitlines()]
        while out and not out[-1]:
            out.pop()
        return out
    return lines(got) == lines(expected)


def run_tests(record: dict, code: str) -> Score:
    """Run `code` against the record's tests in the sandbox."""
    timeout = float(record.get("timeout_s", 10.0))
    memory = int(record.get("memory_mb", 1024))
    if "tests" in record:
        for index, test in enumerate(record["tests"]):
            r = run_python(code, stdin=test["input"], timeout_s=timeout, memory_mb=memory)
            if not r.ok or not _same_output(r.stdout, test["output"]):
                why = "timeout" if r.timed_out else ("error" if not r.ok else "wrong output")
                return Score(0.0, {"passed": False, "failed_test": index, "reason": why,
                                   "stderr": r.stderr[-1000:]})
        return Score(1.0, {"passed": True})
    r = run_python(build_program(record, code), timeout_s=timeout, memory_mb=memory)
    details = {"passed": r.ok, "timed_out": r.timed_out, "returncode": r.returncode}
    if not r.ok:
        details["stderr"] = r.stderr[-1000:]
    return Score(float(r.ok), details)


class CodeKind(ChatKind):
    name = "code"
    description = "programs run against tests in the sandbox; pass@k"
    threaded_scoring = True

    def validate(self, record: dict, where: str) -> None:
        if "tests" in record:
            get_field(record, "question", str, where)
            tests = get_field(record, "tests", list, where)
            if not tests or not all(isinstance(t, dict) and isinstance(t.get("input"), str)
                                    and isinstance(t.get("output"), str) for t in tests):
                raise EvalError(f"{where}: 'tests' must be a non-empty list of {{'input': str, 'output': str}}")
        else:
            for key in ("prompt", "entry_point", "test"):
                get_field(record, key, str, where)
        get_field(record, "timeout_s", (int, float), where, required=False)
        get_field(record, "memory_mb", int, where, required=False)

    def prepare(self, record: dict, rng: random.Random) -> Prompt:
        if "tests" in record:
            text = (record["question"].rstrip() + "\n\nWrite a Python program that reads the input from "
                    "stdin and prints the answer to stdout. Put the whole program in one ```python code block.")
        else:
            text = ("Complete the following Python function. Give the complete function (with any imports "
                    f"it needs) in one ```python code block.\n\n```python\n{record['prompt']}```")
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        return Prompt(messages + [{"role": "user", "content": text}])

    def score(self, record: dict, prompt: Prompt, sample: ChatSample) -> Score:
        return run_tests(record, extract_code(sample.content, record.get("entry_point")))

    def metrics(self, items: list[ItemResult], ctx: RunContext) -> dict[str, float]:
        k = ctx.sampling.k
        out = {f"avg@{k}": mean([it.score for it in items])}
        for kk in sorted({1, k}):
            out[f"pass@{kk}"] = mean([
                pass_at_k(len(it.samples), sum(s["score"] == 1.0 for s in it.samples), kk) for it in items])
        return out
