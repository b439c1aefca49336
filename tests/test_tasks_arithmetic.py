import re
from dataclasses import asdict
from fractions import Fraction

import pytest

from glm45.tasks.arithmetic import (
    LEVELS, check_answer, extract_answer, generate_arithmetic, to_document, to_messages,
)
from glm45.tasks.common import TaskError, TaskSpaceExhausted, split_of

STEP = re.compile(r"^(-?\d+) ([-+*/]) \(?(-?\d+)\)? = (-?\d+)\.$")


def _exact(expression: str) -> Fraction:
    """Evaluate a generated expression exactly (divisions are exact by construction)."""
    return Fraction(eval(expression.replace("/", "//"), {"__builtins__": {}}))  # our own digits and operators


def test_deterministic_and_prefix_stable():
    a = generate_arithmetic(50, seed=3, difficulty=[1, 3, 5])
    b = generate_arithmetic(50, seed=3, difficulty=[1, 3, 5])
    assert [asdict(p) for p in a] == [asdict(p) for p in b]
    assert [asdict(p) for p in generate_arithmetic(20, seed=3, difficulty=[1, 3, 5])] == [asdict(p) for p in a[:20]]
    assert [p.question for p in generate_arithmetic(50, seed=4, difficulty=[1, 3, 5])] != [p.question for p in a]


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_answers_and_every_step_recompute(level):
    for p in generate_arithmetic(150, seed=level, difficulty=level):
        assert _exact(p.expression) == int(p.answer), p
        lines = p.reasoning.splitlines()
        assert lines, p
        for line in lines:
            m = STEP.match(line)
            assert m, line
            a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
            assert {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a, b)}[op] == r, line
        assert STEP.match(lines[-1])[4] == p.answer
        if p.kind == "word":  # the story states every number it needs
            for num in re.findall(r"\d+", p.expression):
                assert re.search(rf"\b{num}\b", p.question), (num, p.question)
        if not LEVELS[level].negative:
            assert int(p.answer) >= 0


def test_difficulty_dial_changes_size():
    def numbers(p):
        return [int(x) for x in re.findall(r"\d+", p.expression)]

    easy = generate_arithmetic(100, seed=0, difficulty=1, kinds=("expression",))
    hard = generate_arithmetic(100, seed=0, difficulty=5, kinds=("expression",))
    assert all(len(numbers(p)) == 2 and max(numbers(p)) <= 9 for p in easy)
    assert all(len(numbers(p)) >= 4 for p in hard)
    assert any("*" in p.expression for p in hard) and not any("*" in p.expression for p in easy)
    assert sum(len(p.reasoning.splitlines()) for p in hard) > 2 * sum(len(p.reasoning.splitlines()) for p in easy)


def test_messages_and_document():
    (p,) = generate_arithmetic(1, seed=0, difficulty=2)
    user, assistant = to_messages(p, thinking=True)
    assert user == {"role": "user", "content": p.question}
    assert assistant["reasoning_content"] == p.reasoning
    assert assistant["content"] == f"The answer is \\boxed{{{p.answer}}}."
    assert "reasoning_content" not in to_messages(p, thinking=False)[1]
    doc = to_document(p)
    assert p.question in doc and p.reasoning in doc and doc.rstrip().endswith(f"\\boxed{{{p.answer}}}.")
    assert check_answer(p, doc)


def test_check_answer():
    (p,) = generate_arithmetic(1, seed=1, difficulty=3)
    a = int(p.answer)
    assert check_answer(p, f"The answer is \\boxed{{{a}}}.")
    assert check_answer(p, f"\\boxed{{{a + 1}}} no wait, \\boxed{{ {a} }}")  # the last box counts
    assert not check_answer(p, f"\\boxed{{{a}}} no wait, \\boxed{{{a + 1}}}")
    assert check_answer(p, f"so it is {a}")  # fallback: the last number
    assert not check_answer(p, f"{a} is what I first thought, but it is {a + 2}")
    assert check_answer(p, f"\\boxed{{{a}.0}}")
    assert check_answer(p, f"<think>maybe \\boxed{{{a + 5}}}</think>The answer is {a}.")  # reasoning ignored
    assert not check_answer(p, "I do not know.")
    assert not check_answer(p, "\\boxed{}")
    assert extract_answer("\\boxed{\\frac{1}{2}} and more") == "\\frac{1}{2}"
    big = generate_arithmetic(40, seed=0, difficulty=5)
    p5 = next(q for q in big if abs(int(q.answer)) >= 1000)
    with_commas = f"{int(p5.answer):,}"
    assert check_answer(p5, f"\\boxed{{{with_commas}}}")


def test_splits_are_disjoint_even_in_a_small_space():
    train = generate_arithmetic(1500, seed=0, difficulty=1, split="train")
    test = generate_arithmetic(500, seed=0, difficulty=1, split="test")
    assert {p.question for p in train}.isdisjoint({p.question for p in test})
    assert all(split_of(p.question) == "train" and p.split == "train" for p in train)
    assert all(split_of(p.question) == "test" and p.id.startswith("arith-test-0-") for p in test)
    # a different seed for the test split still cannot reach a training question
    assert {p.question for p in train}.isdisjoint({p.question for p in generate_arithmetic(500, 9, 1, split="test")})


def test_unique_and_exhaustion():
    qs = [p.question for p in generate_arithmetic(200, seed=0, difficulty=1, unique=True)]
    assert len(set(qs)) == 200
    with pytest.raises(TaskSpaceExhausted, match="distinct"):
        generate_arithmetic(5000, seed=0, difficulty=1, kinds=("expression",), unique=True)


@pytest.mark.parametrize("kwargs", [{"difficulty": 0}, {"difficulty": []}, {"kinds": ("poem",)}, {"split": "dev"}])
def test_bad_arguments(kwargs):
    with pytest.raises(TaskError):
        generate_arithmetic(3, seed=0, **kwargs)
    assert issubclass(TaskError, ValueError)
