"""Arithmetic reasoning problems with verified answers and worked solutions.

Two kinds: ``"expression"`` ("What is 37 + 48 - 12?") and ``"word"`` (templated story
problems). Every problem carries the arithmetic ``expression`` it encodes, a worked solution
with one ``a op b = c.`` line per operation (the reasoning a model should learn to write), and
the integer answer. Difficulty is a dial from 1 to 5 (see ``LEVELS``): number of operands,
digits per operand, which operations, negative results, parentheses.

Splits follow ``glm45.tasks.common``: a question is held-out ("test") by the hash of its
text, so train and test never share a question, for any seeds.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from glm45.tasks.common import TaskError, sample, task_id

KINDS = ("expression", "word")


@dataclass(frozen=True)
class Level:
    operands: tuple[int, int]  # min, max numbers in an expression
    digits: int  # max digits of an ordinary operand
    ops: str  # subset of "+-*/" plus "(" for one parenthesised group
    factor_digits: int  # max digits of a multiplier / divisor (products stay tractable)
    negative: bool  # whether answers may go below zero


LEVELS: dict[int, Level] = {
    1: Level((2, 2), 1, "+-", 1, False),
    2: Level((2, 3), 2, "+-", 1, False),
    3: Level((3, 3), 2, "+-*", 1, False),
    4: Level((3, 4), 3, "+-*/", 1, True),
    5: Level((4, 5), 3, "+-*/(", 2, True),
}


@dataclass
class ArithmeticProblem:
    id: str
    question: str
    reasoning: str  # worked steps, one "a op b = c." line each
    answer: str  # the integer answer as text
    difficulty: int
    kind: str = "expression"
    expression: str = ""  # the arithmetic the question encodes, e.g. "37 + 48 - 12"
    split: str = "train"


# --- expressions -------------------------------------------------------------------------


def _number(rng: random.Random, digits: int, low: int = 1) -> int:
    return rng.randint(low, 10**digits - 1)


class _Steps:
    """Collects worked-solution lines while evaluating, so every line is computed, not typed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def apply(self, a: int, op: str, b: int) -> int:
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        else:
            if b == 0 or a % b:
                raise AssertionError(f"inexact division {a} / {b}")  # generator bug, never user input
            r = a // b
        rhs = f"({b})" if b < 0 else str(b)  # "5 - (-3)", never "5 - -3"
        self.lines.append(f"{a} {op} {rhs} = {r}.")
        return r


def _term(rng: random.Random, lv: Level, budget: int) -> tuple[str, int, list[tuple]]:
    """One additive term: its text, how many numbers it uses, and its evaluation plan."""
    shapes = ["n"]
    if budget >= 2 and "*" in lv.ops:
        shapes.append("mul")
    if budget >= 2 and "/" in lv.ops:
        shapes.append("div")
    if budget >= 3 and "(" in lv.ops:
        shapes.append("paren")
    shape = rng.choice(shapes)
    if shape == "n":
        a = _number(rng, lv.digits)
        return str(a), 1, [("n", a)]
    if shape == "mul":
        a, b = _number(rng, lv.digits), _number(rng, lv.factor_digits, low=2)
        return f"{a} * {b}", 2, [("mul", a, b)]
    if shape == "div":
        b, q = _number(rng, lv.factor_digits, low=2), _number(rng, lv.digits)
        return f"{b * q} / {b}", 2, [("div", b * q, b)]
    a, b = _number(rng, lv.digits), _number(rng, lv.digits)
    op = rng.choice("+-")
    if op == "-" and a < b and not lv.negative:
        a, b = b, a
    c = _number(rng, lv.factor_digits, low=2)
    return f"({a} {op} {b}) * {c}", 3, [("paren", a, op, b, c)]


def _eval_term(plan: list[tuple], steps: _Steps) -> int:
    (node,) = plan
    if node[0] == "n":
        return node[1]
    if node[0] == "mul":
        return steps.apply(node[1], "*", node[2])
    if node[0] == "div":
        return steps.apply(node[1], "/", node[2])
    _, a, op, b, c = node
    return steps.apply(steps.apply(a, op, b), "*", c)


def _expression(rng: random.Random, lv: Level) -> tuple[str, list[str], int]:
    budget = rng.randint(*lv.operands)
    steps = _Steps()
    text, used, plan = _term(rng, lv, budget)
    value = _eval_term(plan, steps)
    parts = [text]
    budget -= used
    while budget > 0:
        text, used, plan = _term(rng, lv, budget)
        budget -= used
        term = _eval_term(plan, steps)  # the term's own steps come before combining it
        op = rng.choice("+-")
        if op == "-" and value - term < 0 and not lv.negative:
            op = "+"
        value = steps.apply(value, op, term)
        parts += [op, text]
    return " ".join(parts), steps.lines, value


_EXPRESSION_PHRASES = ("What is {e}?", "Compute {e}.", "Calculate {e}.", "Evaluate {e}.", "What does {e} equal?")


# --- word problems -------------------------------------------------------------------------

_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Ella", "Finn", "Gita", "Hugo", "Iris", "Jon", "Kai", "Lena", "Mia", "Omar")
_ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "coins", "stamps", "shells", "cards")


@dataclass(frozen=True)
class _Word:
    ops: str  # operations used, in evaluation order
    numbers: int


def _word_problem(rng: random.Random, lv: Level) -> tuple[str, str, list[str], int]:
    """A story problem whose operations and size fit the level; returns (q, expr, steps, value)."""
    options = [k for k, w in _WORD_SHAPES.items() if set(w.ops) <= set(lv.ops) and w.numbers <= lv.operands[1]]
    shape = rng.choice(sorted(options))
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    d, f = lv.digits, lv.factor_digits
    s = _Steps()
    if shape == "gain":
        a, b = _number(rng, d), _number(rng, d)
        q = f"{name} has {a} {item}. {name} finds {b} more. How many {item} does {name} have now?"
        return q, f"{a} + {b}", s.lines, s.apply(a, "+", b)
    if shape == "give":
        b, r = _number(rng, d), _number(rng, d)
        a = b + r
        q = f"{name} had {a} {item} and gave {b} of them to a friend. How many {item} does {name} have left?"
        return q, f"{a} - {b}", s.lines, s.apply(a, "-", b)
    if shape == "restock":
        a, b = _number(rng, d), _number(rng, d)
        c = rng.randint(1, a + b)
        q = (f"A shop had {a} {item}. It received {b} more and then sold {c}. "
             f"How many {item} does the shop have now?")
        return q, f"{a} + {b} - {c}", s.lines, s.apply(s.apply(a, "+", b), "-", c)
    if shape == "sell_twice":
        b, c, r = _number(rng, d), _number(rng, d), _number(rng, d)
        a = b + c + r
        q = (f"A shop had {a} {item}. It sold {b} in the morning and {c} in the afternoon. "
             f"How many {item} are left?")
        return q, f"{a} - {b} - {c}", s.lines, s.apply(s.apply(a, "-", b), "-", c)
    if shape == "walk":
        a, b, c = _number(rng, d), _number(rng, d), _number(rng, d)
        q = f"{name} walked {a} meters, then {b} meters, then {c} meters. How many meters did {name} walk in all?"
        return q, f"{a} + {b} + {c}", s.lines, s.apply(s.apply(a, "+", b), "+", c)
    if shape == "boxes":
        a, b = _number(rng, d), _number(rng, f, low=2)
        q = f"Each box holds {a} {item}. How many {item} are in {b} boxes?"
        return q, f"{a} * {b}", s.lines, s.apply(a, "*", b)
    if shape == "share":
        b, r = _number(rng, f, low=2), _number(rng, d)
        q = (f"{name} shares {b * r} {item} equally among {b} friends. "
             f"How many {item} does each friend get?")
        return q, f"{b * r} / {b}", s.lines, s.apply(b * r, "/", b)
    if shape == "reading":
        a, b, c = _number(rng, d), _number(rng, f, low=2), _number(rng, d)
        q = (f"{name} reads {a} pages every day for {b} days, and then {c} more pages. "
             f"How many pages does {name} read in total?")
        return q, f"{a} * {b} + {c}", s.lines, s.apply(s.apply(a, "*", b), "+", c)
    # "change": pay with a round-ish amount that covers the cost
    a, b = _number(rng, d), _number(rng, f, low=2)
    c = a * b + _number(rng, d)
    q = (f"Tickets cost {a} dollars each. {name} buys {b} tickets and pays with {c} dollars. "
         f"How many dollars of change does {name} get?")
    return q, f"{c} - {a} * {b}", s.lines, s.apply(c, "-", s.apply(a, "*", b))


_WORD_SHAPES: dict[str, _Word] = {
    "gain": _Word("+", 2),
    "give": _Word("-", 2),
    "restock": _Word("+-", 3),
    "sell_twice": _Word("-", 3),
    "walk": _Word("+", 3),
    "boxes": _Word("*", 2),
    "share": _Word("/", 2),
    "reading": _Word("*+", 3),
    "change": _Word("*-", 3),
}


# --- public API ----------------------------------------------------------------------------


def _levels(difficulty: int | Sequence[int]) -> list[int]:
    levels = [difficulty] if isinstance(difficulty, int) else list(difficulty)
    bad = [d for d in levels if d not in LEVELS]
    if not levels or bad:
        raise TaskError(f"difficulty must be one of {sorted(LEVELS)} (or a list of them), got {difficulty!r}")
    return levels


def generate_arithmetic(
    n: int,
    seed: int,
    difficulty: int | Sequence[int] = 2,
    *,
    split: str = "train",
    kinds: Sequence[str] = KINDS,
    unique: bool = False,
) -> list[ArithmeticProblem]:
    """``n`` problems; a list of difficulties draws one uniformly per problem (a curriculum mix)."""
    levels = _levels(difficulty)
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise TaskError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")

    def make(rng: random.Random, index: int) -> ArithmeticProblem:
        level = rng.choice(levels)
        lv = LEVELS[level]
        kind = rng.choice(kinds)
        if kind == "expression":
            expr, lines, value = _expression(rng, lv)
            question = rng.choice(_EXPRESSION_PHRASES).format(e=expr)
        else:
            question, expr, lines, value = _word_problem(rng, lv)
        return ArithmeticProblem(
            id=task_id("arith", split, seed, index), question=question, reasoning="\n".join(lines),
            answer=str(value), difficulty=level, kind=kind, expression=expr, split=split,
        )

    return sample(n, make, lambda p: p.question, family="arith", seed=seed, split=split, unique=unique)


def final_answer_text(answer: str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def to_messages(problem: ArithmeticProblem, thinking: bool = True) -> list[dict]:
    """OpenAI-style chat: the question, then the answer (with the worked steps as reasoning)."""
    assistant: dict = {"role": "assistant"}
    if thinking:
        assistant["reasoning_content"] = problem.reasoning
    assistant["content"] = final_answer_text(problem.answer)
    return [{"role": "user", "content": problem.question}, assistant]


def to_document(problem: ArithmeticProblem) -> str:
    """Plain text for pre-training mixtures: question, worked solution, boxed answer."""
    return f"Question: {problem.question}\nSolution:\n{problem.reasoning}\n{final_answer_text(problem.answer)}\n"


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def _last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}``, matching nested braces."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
        start = text.rfind("\\boxed{", 0, start)  # unclosed: try an earlier one
    return None


def extract_answer(response_text: str) -> str | None:
    """The final answer in a response: last ``\\boxed{}``, else the last number; None if neither.

    Text up to the last ``</think>`` is reasoning and is ignored.
    """
    text = response_text.rsplit("</think>", 1)[-1]
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def parse_number(text: str) -> Fraction | None:
    """A number written as an integer, decimal or fraction (commas, $, spaces and a trailing
    period tolerated); None when the text is not a single number."""
    t = text.strip().strip("$").replace(",", "").replace(" ", "").rstrip(".")
    t = t.replace("\\!", "")
    m = re.fullmatch(r"\\(?:d|t)?frac\{(-?\d+)\}\{(\d+)\}", t)
    if m:
        t = f"{m.group(1)}/{m.group(2)}"
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def check_answer(problem: ArithmeticProblem, response_text: str) -> bool:
    """Whether the response's final answer equals the problem's answer numerically."""
    got = extract_answer(response_text)
    if got is None:
        return False
    value = parse_number(got)
    return value is not None and value == Fraction(problem.answer)
