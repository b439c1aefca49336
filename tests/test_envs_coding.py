"""The coding agent: repo tasks with verified bugs, tools, sandboxed grading, isolation, concurrency."""

from __future__ import annotations

import os
import uuid

import pytest

from glm45.envs import ScriptedPolicy, make_env, run_episodes
from glm45.envs.coding import (
    CodingEnv, OracleCoder, RepoTask, mutants, run_repo_tests, tasks_from_code_tasks, tasks_from_stdlib,
)


@pytest.fixture(scope="module")
def tasks():
    return tasks_from_code_tasks(2, seed=0) + tasks_from_stdlib(2, seed=0, modules=["colorsys", "calendar"])


def _call(name, **arguments):
    return {"role": "assistant", "content": "", "tool_calls": [{"name": name, "arguments": arguments}]}


def test_mutants_change_one_site_and_keep_the_rest():
    source = "# keep me\ndef f(x, y):\n    if x < y and y > 0:  # compare\n        return x + 1\n    return y * 2\n"
    found = mutants(source, "f")
    descriptions = {d for d, _ in found}
    assert {"f: '<' -> '<='", "f: 'and' -> 'or'", "f: '+' -> '-'", "f: 1 -> 2", "f: '*' -> '+'"} <= descriptions
    for _, mutated in found:
        assert mutated != source and mutated.startswith("# keep me\n") and "# compare" in mutated
        assert sum(a != b for a, b in zip(mutated.splitlines(), source.splitlines())) == 1


def test_built_tasks_fail_before_and_pass_after_the_fix(tasks):
    assert {t.source.split(":")[0] for t in tasks} == {"code-task", "stdlib"}
    for t in tasks:
        assert not run_repo_tests(t.files, t.hidden_tests).ok
        assert run_repo_tests({**t.files, **t.solution}, t.hidden_tests).ok
        assert "returned" in t.issue or "raised" in t.issue
        assert RepoTask.from_dict(t.to_dict()) == t


def test_run_repo_tests_reports():
    files = {"m.py": "def f():\n    return 1\n",
             "tests/test_m.py": "from m import f\n\ndef test_ok():\n    assert f() == 1\n\n"
                                "def test_bad():\n    assert f() == 2, 'f is not 2'\n"}
    report = run_repo_tests(files)
    assert report.passed == ["tests/test_m.py::test_ok"] and not report.ok
    assert report.failed[0]["error"] == "AssertionError: f is not 2"
    # code that exits before the report cannot pass
    exiting = {"m.py": "import os\nos._exit(0)\n", "tests/test_m.py": "import m\n\ndef test_ok():\n    pass\n"}
    assert not run_repo_tests(exiting).ok
    looping = {"tests/test_loop.py": "def test_loop():\n    while True:\n        pass\n"}
    slow = run_repo_tests(looping, timeout_s=1.0)
    assert slow.timed_out and not slow.ok and "timed out" in slow.summary()


def test_tools_and_planted_trajectories(tasks):
    task = tasks[0]
    path = next(iter(task.solution))
    env = CodingEnv(max_turns=10)
    prompt = env.reset(task)
    assert task.issue in prompt.messages[-1]["content"]
    assert path in env.step(_call("list_files")).observation[0]["content"]
    listing = env.step(_call("read_file", path=path, start_line=1, end_line=2)).observation[0]["content"]
    assert listing.splitlines()[0].startswith("    1  ")
    failing = env.step(_call("run_tests")).observation[0]["content"]
    assert "0 passed, 1 failed" in failing
    out = env.step(_call("edit_file", path=path, old_text="no such text", new_text="x")).observation[0]["content"]
    assert out.startswith("Error:") and "0 times" in out
    env.step(_call("write_file", path=path, content=task.solution[path]))
    assert "1 passed, 0 failed" in env.step(_call("run_tests")).observation[0]["content"]
    printed = env.step(_call("run_python", code=f"import {path[:-3]}\nprint('hello')")).observation[0]["content"]
    assert "hello" in printed
    result = env.step("<think>fixed</think>I fixed the bug.")
    assert result.done and result.reward == 1.0 and result.info["hidden_failed"] == 0
    # giving up without a change earns nothing; so does a cut-off run that changed nothing
    env.reset(task)
    assert env.step("Nothing to do.").reward == 0.0
    env = CodingEnv(max_turns=1)
    env.reset(task)
    r = env.step(_call("list_files"))
    assert r.done and r.reward == 0.0 and r.info["end"] == "max_turns"


def test_hidden_tests_cannot_be_edited_away(tasks):
    task = tasks[0]
    env = CodingEnv()
    env.reset(task)
    for test_path in task.hidden_tests:  # the agent "fixes" the tests instead of the code
        env.step(_call("write_file", path=test_path, content="def test_ok():\n    pass\n"))
    assert env.step("done").reward == 0.0


def test_episodes_are_contained(tasks, tmp_path):
    outside = f"/tmp/glm45-escape-{uuid.uuid4().hex}"
    task = tasks[0]
    path = next(iter(task.solution))
    env = CodingEnv()
    env.reset(task)
    for bad in ("../../etc/passwd", "/etc/passwd", ""):
        out = env.step(_call("read_file", path=bad)).observation[0]["content"]
        assert out.startswith("Error:") and "inside the repository" in out
    out = env.step(_call("write_file", path="../escape.txt", content="x")).observation[0]["content"]
    assert out.startswith("Error:")
    snippet = (f"try:\n    open({outside!r}, 'w').write('x')\nexcept OSError as e:\n    print('blocked', e)\n"
               "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n"
               "except OSError as e:\n    print('no network', e)\n")
    out = env.step(_call("run_python", code=snippet)).observation[0]["content"]
    assert "blocked" in out and "no network" in out
    # a planted module that tries to escape while the hidden tests import it: contained, and it fails
    evil = task.solution[path] + f"\nopen({outside!r}, 'w').write('pwned')\n"
    env.step(_call("write_file", path=path, content=evil))
    assert env.step("done").reward == 0.0
    assert not os.path.exists(outside)


def test_working_copies_are_isolated_and_concurrent(tasks):
    task = tasks[1]
    original = dict(task.files)
    envs = [CodingEnv() for _ in range(6)]
    episode_tasks = [task] * 6

    class Agent:
        def __init__(self, t):
            self.inner = OracleCoder(t) if len(made) % 2 == 0 else None
            made.append(self)

        def act(self, messages, tools):
            return self.inner.act(messages, tools) if self.inner else {"role": "assistant", "content": "no change"}

    made: list = []
    results = run_episodes(envs, episode_tasks, ScriptedPolicy(Agent), workers=4)
    assert [r.reward for r in results] == [1.0, 0.0] * 3
    assert task.files == original  # the task itself is never edited
    fixed = [e.files for e, r in zip(envs, results) if r.reward == 1.0]
    untouched = [e.files for e, r in zip(envs, results) if r.reward == 0.0]
    assert all(f == {**original, **task.solution} for f in fixed) and all(f == original for f in untouched)


def test_stdlib_task_oracle_through_the_registry(tasks):
    task = next(t for t in tasks if t.source.startswith("stdlib"))
    results = run_episodes([make_env("coding", max_turns=5)], [task.to_dict()], ScriptedPolicy(OracleCoder))
    assert results[0].reward == 1.0 and results[0].turns == 3
