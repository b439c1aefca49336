"""Multiple-choice tasks: options shuffled per item (seeded), the chosen letter extracted from the answer.

Shuffling removes position bias (GPQA-style); the permutation is derived from the run seed and the
item id, so it is the same for every sample of an item and for every rerun. Letter extraction looks,
in order, for the last ``\\boxed{X}``, the last "answer is X" / "Answer: (X)", an answer that is just
a letter, and a last line naming exactly one option letter.
"""

from __future__ import annotations

import random
import re
import string

from glm45.eval.backend import ChatSample, EvalError
from glm45.eval.kinds import ChatKind, Prompt, Score, get_field
from glm45.eval.math_answer import last_boxed

__all__ = ["ChoiceKind", "answer_index", "extract_letter", "format_question", "shuffle_options"]

LETTERS = string.ascii_uppercase
_INSTRUCTION = ("\n\nThink step by step, then give your final answer as a line of the form "
                "'Answer: X', where X is the letter of the correct option.")
_ANSWER_IS = re.compile(r"(?i)answer(?:\s+is)?\s*[:：]?\s*(?:option\s*)?[*_]*\(?([A-Z])\)?[*_]*(?![A-Za-z0-9])")
_LONE = re.compile(r"^[*_\s]*\(?([A-Z])\)?[.)]?[*_\s]*$")
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z0-9'])\(?([A-Z])\)?(?![A-Za-z0-9'])")


def answer_index(answer: int | str, options: list[str], where: str = "") -> int:
    """The index of the correct option, given as an index, a letter or the option's text."""
    if isinstance(answer, bool):
        raise EvalError(f"{where}: 'answer' must be an option index, letter or text, got a boolean")
    if isinstance(answer, int):
        index = answer
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        index = LETTERS.index(answer.strip().upper())
    elif isinstance(answer, str) and answer in options:
        index = options.index(answer)
    else:
        raise EvalError(f"{where}: 'answer' {answer!r} is neither an option index, a letter, nor an option's text")
    if not 0 <= index < len(options):
        raise EvalError(f"{where}: 'answer' {answer!r} is out of range for {len(options)} options")
    return index


def shuffle_options(options: list[str], answer: int, rng: random.Random) -> tuple[list[str], int, list[int]]:
    """(shuffled options, new index of the answer, order) where shuffled[i] = options[order[i]]."""
    order = list(range(len(options)))
    rng.shuffle(order)
    return [options[i] for i in order], order.index(answer), order


def format_question(question: str, options: list[str]) -> str:
    return question.rstrip() + "\n\n" + "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))


def extract_letter(text: str, n_options: int) -> str | None:
    """The option letter the response chose, or None when it did not clearly choose one."""
    valid = set(LETTERS[:n_options])
    boxed = last_boxed(text)
    if boxed is not None:
        inner = re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", boxed).strip().strip("()").strip()
        if inner.upper() in valid and len(inner) == 1:
            return inner.upper()
    said = [m.group(1) for m in _ANSWER_IS.finditer(text) if m.group(1) in valid]
    if said:
        return said[-1]
    lone = _LONE.match(text)
    if lone and lone.group(1) in valid:
        return lone.group(1)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        letters = {m.group(1) for m in _LETTER_TOKEN.finditer(lines[-1])} & valid
        if len(letters) == 1:
            return letters.pop()
    return None


class ChoiceKind(ChatKind):
    name = "choice"
    description = "multiple choice with seeded option shuffling and letter extraction"

    def validate(self, record: dict, where: str) -> None:
        get_field(record, "question", str, where)
        options = get_field(record, "options", list, where)
        if not 2 <= len(options) <= len(LETTERS) or not all(isinstance(o, str) for o in options):
            raise EvalError(f"{where}: 'options' must be a list of 2 to 26 strings")
        if "answer" not in record:
            raise EvalError(f"{where}: missing field 'answer'")
        answer_index(record["answer"], options, where)
        get_field(record, "shuffle", bool, where, required=False)
        get_field(record, "system", str, where, required=False)

    def prepare(self, record: dict, rng: random.Random) -> Prompt:
        options = record["options"]
        answer = answer_index(record["answer"], options)
        if record.get("shuffle", True):
            options, answer, order = shuffle_options(options, answer, rng)
        else:
            order = list(range(len(options)))
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        messages.append({"role": "user", "content": format_question(record["question"], options) + _INSTRUCTION})
        return Prompt(messages, context={"answer": LETTERS[answer], "order": order})

    def score(self, record: dict, prompt: Prompt, sample: ChatSample) -> Score:
        letter = extract_letter(sample.content, len(record["options"]))
        gold = prompt.context["answer"]
        return Score(float(letter == gold), {"extracted": letter, "answer": gold, "order": prompt.context["order"]})
