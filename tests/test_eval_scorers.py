"""Scorers: math answers, multiple choice, code (pass@k, sandboxed tests), log-likelihood metrics."""

from __future__ import annotations

import math
import random
from math import comb

import pytest

from glm45.eval.backend import ChatSample, EvalError
from glm45.eval.choice import ChoiceKind, answer_index, extract_letter, shuffle_options
from glm45.eval.coding import CodeKind, build_program, extract_code, pass_at_k, run_tests
from glm45.eval.likelihood import bits_per_byte, choice_scores, perplexity_metrics
from glm45.eval.math_answer import MathKind, extract_answer, is_equivalent, last_boxed
from glm45.eval.tasks import resolve_task

# ---------------------------------------------------------------- math


def test_last_boxed_handles_nesting_and_truncation():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed(r"so \fbox{7}") == "7"
    assert last_boxed(r"so \boxed 42 done") == "42"
    assert last_boxed(r"cut off \boxed{\frac{1}{2") is None
    assert last_boxed("no answer") is None


def test_extract_answer_formats():
    assert extract_answer("work...\nAnswer: 17.", "answer_line") == "17"
    assert extract_answer("Answer: 3\nmore\n**Final Answer:** $x=2$", "answer_line") == "$x=2$"
    assert extract_answer("result=12; result=13", r"regex:result=(\d+)") == "13"
    assert extract_answer(r"\boxed{5}", "answer_line") is None


@pytest.mark.parametrize("pred, gold", [
    ("0.5", "1/2"), (r"\frac{1}{2}", "0.5"), (r"\dfrac12", "1/2"), ("1/2", r"\frac{1}{2}"),
    ("2.0", "2"), ("1+x^2", "x^2+1"), ("1,000", "1000"), (r"\{2,1\}", r"\{1,2\}"),
    (r"\frac{\sqrt2}{2}", r"\sqrt{2}/2"), ("10\\%", "0.1"), (r"\text{(A)}", "A"), ("x=3", "3"),
])
def test_math_equivalent(pred, gold):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize("pred, gold", [
    ("1/3", "1/2"), ("0.51", "0.5"), ("4", "3"), ("(1,2)", "[1,2]"), ("x^2", "x^3"), ("", "1"),
])
def test_math_not_equivalent(pred, gold):
    assert not is_equivalent(pred, gold)


def test_math_kind_scores_content_not_reasoning():
    kind = MathKind()
    record = {"id": "1", "problem": "Half of one?", "answer": "1/2"}
    kind.validate(record, "t:1")
    prompt = kind.prepare(record, random.Random(0))
    assert prompt.messages[-1]["content"].startswith("Half of one?") and "\\boxed{}" in prompt.messages[-1]["content"]
    good = kind.score(record, prompt, ChatSample(content=r"So it is \boxed{0.5}."))
    assert good.value == 1.0 and good.details["extracted"] == "0.5"
    wrong = kind.score(record, prompt, ChatSample(content="I think 1/2", reasoning_content=r"\boxed{1/2}"))
    assert wrong.value == 0.0 and wrong.details["extracted"] is None
    with pytest.raises(EvalError, match="answer_format"):
        kind.validate({**record, "answer_format": "bogus"}, "t:1")
    with pytest.raises(EvalError, match="'answer'"):
        kind.validate({"id": "2", "problem": "x"}, "t:2")


# ---------------------------------------------------------------- multiple choice


def test_shuffle_keeps_the_answer_and_is_seeded():
    options = ["w", "x", "y", "z"]
    shuffled, new_answer, order = shuffle_options(options, 2, random.Random(5))
    assert shuffled[new_answer] == "y" and sorted(shuffled) == options
    assert [options[i] for i in order] == shuffled
    assert shuffle_options(options, 2, random.Random(5)) == (shuffled, new_answer, order)
    positions = {shuffle_options(options, 0, random.Random(s))[1] for s in range(40)}
    assert positions == {0, 1, 2, 3}


@pytest.mark.parametrize("text, letter", [
    ("Reasoning...\nAnswer: C", "C"), ("The answer is (B).", "B"), ("answer is **D**", "D"),
    (r"Thus \boxed{A}", "A"), (r"\boxed{\text{(C)}}", "C"), ("B", "B"), ("(D)", "D"),
    ("I first thought A.\nAnswer: C", "C"), ("Long text.\nSo the best option is B.", "B"),
    ("Answer: E", None),  # only A-D exist
    ("Could be A or B.", None), ("No idea", None),
])
def test_extract_letter(text, letter):
    assert extract_letter(text, 4) == letter


def test_choice_kind_end_to_end():
    kind = ChoiceKind()
    record = {"id": "q", "question": "Largest?", "options": ["1", "2", "3", "4"], "answer": "4"}
    kind.validate(record, "t:1")
    assert answer_index("4", record["options"]) == 3 and answer_index("b", record["options"]) == 1
    prompt = kind.prepare(record, random.Random(1))
    gold = prompt.context["answer"]
    assert f"{gold}) 4" in prompt.messages[-1]["content"]
    assert kind.score(record, prompt, ChatSample(content=f"Answer: {gold}")).value == 1.0
    other = "A" if gold != "A" else "B"
    assert kind.score(record, prompt, ChatSample(content=f"Answer: {other}")).value == 0.0
    fixed = kind.prepare({**record, "shuffle": False}, random.Random(1))
    assert fixed.context["answer"] == "D"
    with pytest.raises(EvalError, match="out of range"):
        kind.validate({**record, "answer": 9}, "t:1")


# ---------------------------------------------------------------- code


def test_pass_at_k_matches_the_combinatorial_definition():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(EvalError):
        pass_at_k(2, 1, 3)


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "Use this:\n```python\ndef f(x):\n    return x\n```\nand a test:\n```python\nprint(f(1))\n```"
    assert extract_code(text, "f") == "def f(x):\n    return x\n"
    assert extract_code(text) == "print(f(1))\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("def g(): pass") == "def g(): pass"


HE_RECORD = {
    "id": "toy", "entry_point": "add",
    "prompt": "import math\n\ndef helper():\n    return 1\n\ndef add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}


def test_function_tests_pass_fail_and_time_out():
    ok = run_tests(HE_RECORD, "def add(a, b):\n    return a + b + helper() - 1\n")
    assert ok.value == 1.0 and ok.details["passed"]
    continuation = run_tests(HE_RECORD, "    return a + b\n")  # a body continuing the prompt
    assert continuation.value == 1.0
    wrong = run_tests(HE_RECORD, "def add(a, b):\n    return a - b\n")
    assert wrong.value == 0.0 and "AssertionError" in wrong.details["stderr"]
    slow = run_tests({**HE_RECORD, "timeout_s": 1}, "def add(a, b):\n    while True:\n        pass\n")
    assert slow.value == 0.0 and slow.details["timed_out"]
    assert "check(add)" in build_program(HE_RECORD, "def add(a, b): return 0")


def test_stdio_tests():
    record = {"id": "s", "question": "Sum the numbers.", "tests": [
        {"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"}]}
    CodeKind().validate(record, "t:1")
    assert run_tests(record, "print(sum(map(int, input().split())))").value == 1.0
    bad = run_tests(record, "print(3)")
    assert bad.value == 0.0 and bad.details["failed_test"] == 1 and bad.details["reason"] == "wrong output"


def test_humaneval_is_a_real_builtin_task():
    task = resolve_task("humaneval")
    assert len(task.records) == 164 and task.kind.name == "code"
    for record in task.records[:3]:
        canonical = record["prompt"] + record["canonical_solution"]
        assert run_tests(record, canonical).value == 1.0
        assert run_tests(record, "def " + record["entry_point"] + "(*a):\n    return None\n").value == 0.0


# ---------------------------------------------------------------- log-likelihood


def test_bits_per_byte_and_loss():
    assert bits_per_byte(math.log(2) * 8, 8) == pytest.approx(1.0)
    m = perplexity_metrics([(-10.0, 5, 20), (-6.0, 3, 12)])
    assert m["loss"] == pytest.approx(16 / 8)
    assert m["perplexity"] == pytest.approx(math.exp(2))
    assert m["bits_per_byte"] == pytest.approx(16 / (math.log(2) * 32))
    assert (m["tokens"], m["bytes"]) == (8, 32)
    with pytest.raises(EvalError):
        bits_per_byte(1.0, 0)


def test_choice_scores_acc_and_acc_norm():
    # The long right answer has the lower total log-likelihood but the higher per byte.
    s = choice_scores([-4.0, -9.0], [" no", " a much longer answer"], answer=1)
    assert s == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_scores([-1.0, -2.0], ["a", "b"], answer=0) == {"acc": 1.0, "acc_norm": 1.0}
