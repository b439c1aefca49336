"""Math tasks: final-answer extraction and equivalence checking with `math-verify`.

The answer is taken from the model's content (not its reasoning) in the record's declared format:
``boxed`` (default: the last ``\\boxed{...}`` / ``\\fbox{...}``), ``answer_line`` (the last line
``Answer: ...`` / ``Final answer: ...``) or ``regex:<pattern>`` (the last match's first group).
Equivalence is symbolic (``1/2`` = ``0.5`` = ``\\frac{1}{2}``, ``x^2+1`` = ``1+x^2``, sets, intervals,
percentages); answers `math-verify` cannot parse fall back to normalised string equality.
"""

from __future__ import annotations

import random
import re
import threading

from glm45.eval.backend import ChatSample, EvalError
from glm45.eval.kinds import ChatKind, Prompt, Score, chat_messages, check_messages, get_field

__all__ = ["MathKind", "extract_answer", "is_equivalent", "last_boxed"]

_INSTRUCTIONS = {
    "boxed": "\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "answer_line": "\n\nPlease reason step by step, and end your response with a line of the form "
                   "'Answer: <your final answer>'.",
}
_ANSWER_LINE = re.compile(r"(?im)^[ \t*#>]*(?:final[ \t]+)?answer[ \t*]*[:：][ \t*]*(.+?)[ \t*]*$")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced."""
    starts = [(m.start(), m.end()) for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    if not starts:
        return None
    _, i = starts[-1]
    if i < len(text) and text[i] == "{":
        depth = 0
        for k in range(i, len(text)):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:k].strip()
        return None  # never closed (a truncated answer)
    m = re.match(r"[ \t]+([^\s$]+)", text[i:])  # "\boxed 5"
    return m.group(1) if m else None


def check_format(answer_format: str, where: str = "") -> None:
    if answer_format in _INSTRUCTIONS:
        return
    if answer_format.startswith("regex:"):
        try:
            pattern = re.compile(answer_format[len("regex:"):])
        except re.error as e:
            raise EvalError(f"{where}: bad answer_format regex: {e}") from e
        if pattern.groups < 1:
            raise EvalError(f"{where}: answer_format regex needs a capturing group for the answer")
        return
    raise EvalError(f"{where}: answer_format must be 'boxed', 'answer_line' or 'regex:<pattern>', "
                    f"got {answer_format!r}")


def extract_answer(text: str, answer_format: str = "boxed") -> str | None:
    """The final answer in `text` in the declared format, or None if there is none."""
    if answer_format == "boxed":
        return last_boxed(text)
    if answer_format == "answer_line":
        matches = _ANSWER_LINE.findall(text)
        return matches[-1].rstrip(".").strip() if matches else None
    if answer_format.startswith("regex:"):
        matches = list(re.finditer(answer_format[len("regex:"):], text))
        return matches[-1].group(1).strip() if matches else None
    check_format(answer_format)
    return None


def _normalise(s: str) -> str:
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("$", "")
    return re.sub(r"\s+", "", s).rstrip(".").lower()


def is_equivalent(predicted: str, gold: str) -> bool:
    """Whether `predicted` and `gold` are the same mathematical answer."""
    if _normalise(predicted) == _normalise(gold):
        return True
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # math-verify's timeouts use SIGALRM, which only works on the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    config = [LatexExtractionConfig(), ExprExtractionConfig()]

    def parsed(s: str):
        wrapped = s if ("$" in s or "\\boxed" in s) else f"${s}$"
        return parse(wrapped, extraction_config=config, parsing_timeout=timeout)

    try:
        g, p = parsed(gold), parsed(predicted)
        return bool(g and p and verify(g, p, timeout_seconds=timeout))
    except Exception:  # math-verify raises assorted errors (and timeouts) on odd input: not equal
        return False


class MathKind(ChatKind):
    name = "math"
    description = "final answer (\\boxed{} or a declared format) checked for mathematical equivalence"

    def validate(self, record: dict, where: str) -> None:
        if record.get("messages") is not None:
            check_messages(record["messages"], where)
        else:
            get_field(record, "problem", str, where)
        get_field(record, "system", str, where, required=False)
        answer = record.get("answer")
        if answer is None or isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise EvalError(f"{where}: field 'answer' must be a string or a number")
        check_format(get_field(record, "answer_format", str, where, required=False, default="boxed"), where)

    def prepare(self, record: dict, rng: random.Random) -> Prompt:
        fmt = record.get("answer_format") or "boxed"
        return Prompt(chat_messages(record, "problem", _INSTRUCTIONS.get(fmt, "")))

    def score(self, record: dict, prompt: Prompt, sample: ChatSample) -> Score:
        extracted = extract_answer(sample.content, record.get("answer_format") or "boxed")
        if extracted is None:
            return Score(0.0, {"extracted": None})
        return Score(float(is_equivalent(extracted, str(record["answer"]))), {"extracted": extracted})
