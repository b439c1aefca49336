import re
from dataclasses import asdict

import pytest

from glm45.tasks.code import (
    FAMILIES, FAMILY_NAMES, N_TESTS, CodeTask, extract_code, generate_code_tasks, run_python_tests,
)
from glm45.tasks.common import TaskError, TaskSpaceExhausted, split_of


def _one_per_family() -> list[CodeTask]:
    # a family without parameters has one prompt, so it lives in one split only: draw from both
    first: dict[str, CodeTask] = {}
    for t in generate_code_tasks(600, seed=0) + generate_code_tasks(200, seed=0, split="test"):
        first.setdefault(t.family, t)
    assert set(first) == set(FAMILY_NAMES)
    return list(first.values())


def test_enough_families_at_every_level():
    assert len(FAMILIES) >= 40 and len(set(FAMILY_NAMES)) == len(FAMILY_NAMES)
    assert {f.difficulty for f in FAMILIES} == {1, 2, 3}


def test_every_reference_passes_its_hidden_tests():
    tasks = _one_per_family()
    for t in tasks:
        assert t.tests.count("assert ") == N_TESTS and f"def {t.entry_point}(" in t.reference
        assert t.prompt.startswith(f"Write a Python function `{t.entry_point}(")
        assert t.check(t.reference), t.family


def test_check_runs_the_hidden_tests():
    (task,) = generate_code_tasks(1, seed=0, families=["add_k"])
    k = int(re.search(r"x \+ (\d+)", task.reference)[1])
    assert task.check(task.reference)
    assert task.check(f"def add_k(xs):\n    out = []\n    for x in xs:\n        out.append(x + {k})\n    return out\n")
    assert not task.check(f"def add_k(xs):\n    return [x + {k + 1} for x in xs]\n")  # off by one
    assert not task.check("def add_k(xs):\n    return xs\n")
    assert not task.check("def add_k(xs) return xs")  # syntax error
    assert not task.check("def other(xs):\n    return xs\n")  # wrong name
    assert not task.check("import sys\nsys.exit(0)\n")  # leaving early is not passing
    assert not task.check("import os\nos._exit(0)\n")


def test_hidden_tests_cover_every_branch():
    for t in generate_code_tasks(10, seed=0, families=["fizzbuzz", "is_prime", "balanced", "index_of"]):
        outcomes = {line.rsplit(" == ", 1)[1] for line in t.tests.splitlines()}
        if t.family == "fizzbuzz":
            words = {o for o in outcomes if not o.strip("'").isdigit()}
            assert len(words) == 3 and any(o.strip("'").isdigit() for o in outcomes), t.tests
        elif t.family == "index_of":
            assert "-1" in outcomes and len(outcomes) >= 2
        else:
            assert outcomes == {"True", "False"}, t.tests


def test_timeout_and_scrubbed_environment(monkeypatch):
    assert not run_python_tests("while True:\n    pass\n", "", timeout=1.0)
    monkeypatch.setenv("GLM45_SECRET_FOR_TEST", "1")
    assert run_python_tests("import os", "assert 'GLM45_SECRET_FOR_TEST' not in os.environ\n")
    assert run_python_tests("import os, tempfile", "assert os.getcwd().startswith(tempfile.gettempdir())\n")


def test_deterministic_and_difficulty_filter():
    a = generate_code_tasks(30, seed=1)
    assert [asdict(t) for t in a] == [asdict(t) for t in generate_code_tasks(30, seed=1)]
    assert [t.tests for t in generate_code_tasks(30, seed=2)] != [t.tests for t in a]
    hard = generate_code_tasks(30, seed=1, difficulty=3)
    assert {t.difficulty for t in hard} == {3}
    two = generate_code_tasks(20, seed=1, families=["fizzbuzz", "caesar"])
    assert {t.family for t in two} == {"fizzbuzz", "caesar"}


def test_splits_are_disjoint():
    train = generate_code_tasks(800, seed=0)
    test = generate_code_tasks(60, seed=3, split="test", unique=True)
    assert {t.prompt for t in train}.isdisjoint({t.prompt for t in test})
    assert all(split_of(t.prompt) == "test" for t in test) and len({t.prompt for t in test}) == 60


def test_messages_document_and_extraction():
    (task,) = generate_code_tasks(1, seed=4)
    user, assistant = task.to_messages(thinking=True)
    assert user["content"] == task.prompt and assistant["reasoning_content"] == task.plan
    assert extract_code(assistant["content"]) == task.reference
    assert task.check_response("<think>```python\nbroken(\n```</think>Here:\n" + assistant["content"])
    assert "reasoning_content" not in task.to_messages(thinking=False)[1]
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    doc = task.to_document()
    assert doc.startswith("# Write a Python function") and doc.endswith(task.reference)
    assert run_python_tests(doc, task.tests)  # the document itself is runnable


def test_a_family_missing_from_a_split_is_a_clear_error():
    only_test = [t.family for t in _one_per_family() if t.split == "test"]
    assert only_test  # some parameter-free families are held out entirely
    with pytest.raises(TaskSpaceExhausted, match="found only 0"):
        generate_code_tasks(1, seed=0, families=only_test[:1])


@pytest.mark.parametrize("kwargs", [{"difficulty": 4}, {"families": ["nope"]}, {"split": "eval"}])
def test_bad_arguments(kwargs):
    with pytest.raises(TaskError):
        generate_code_tasks(1, seed=0, **kwargs)
