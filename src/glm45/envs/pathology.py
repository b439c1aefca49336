"""Pathology penalties (§3.4, Pathology RL): repetition, language mixing, formatting mistakes.

`diagnose(response, prompt)` measures the three on the visible answer:
- repetition: the share of repeated word 4-grams (character 8-grams for CJK text), a loop at the
  end (one chunk repeated 3+ times back to back), and repeated lines;
- language mixing: letters of a script the answer should not contain — CJK, Cyrillic or Arabic
  in an answer in a Latin-script language (unless the prompt has that script too), or a Latin
  share above `latin_tolerance` in a CJK answer (technical terms are fine) — outside code,
  inline code, URLs and math;
- formatting: an unclosed code fence, chat markup or special tokens leaking into the answer, odd
  `**`, unbalanced LaTeX delimiters, a markdown table with ragged rows, an empty answer.

The `pathology` reward kind (registered in `glm45.rl.rewards`) is 1 - penalty for records of
`pathology_tasks()`; `with_pathology_penalty(reward)` subtracts the penalty from any other
reward. Pathologies are rare in ordinary outputs (the paper: often < 1%), so training uses a
targeted prompt set: `PATHOLOGY_PROMPTS`, filtered by `select_triggering_prompts` to the ones a
given model actually fails on often.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.chat import parse
from glm45.envs.base import EnvError
from glm45.envs.ifeval import detect_language, script_counts

__all__ = ["PATHOLOGY_PROMPTS", "PathologyReport", "diagnose", "pathology_reward", "pathology_tasks",
           "select_triggering_prompts", "with_pathology_penalty"]

LEAKED_MARKUP = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>",
                 "<tool_response>", "<|user|>", "<|assistant|>", "<|system|>", "<|observation|>",
                 "<|endoftext|>", "[gMASK]", "<sop>", "<eop>")
_CJK = ("zh", "ja")


@dataclass
class PathologyReport:
    repeated_ngrams: float  # share of n-grams that repeat an earlier one
    tail_loop: bool  # the answer ends in a chunk repeated 3+ times back to back
    repeated_lines: float  # share of substantial lines that repeat an earlier line
    mixing: float  # share of letters in a script the answer should not use
    format_issues: list[str] = field(default_factory=list)
    language: str | None = None  # the language the answer was judged against
    repetition_threshold: float = 0.3
    mixing_threshold: float = 0.0

    @property
    def repetitive(self) -> bool:
        return self.tail_loop or self.repeated_ngrams > self.repetition_threshold or self.repeated_lines > 0.5

    @property
    def mixed(self) -> bool:
        return self.mixing > self.mixing_threshold

    @property
    def penalty(self) -> float:
        """In [0, 1]: 0.5 for repetition, 0.5 for mixing, 0.25 per formatting issue, capped."""
        return min(1.0, 0.5 * self.repetitive + 0.5 * self.mixed + 0.25 * len(self.format_issues))

    @property
    def any(self) -> bool:
        return self.repetitive or self.mixed or bool(self.format_issues)

    def to_dict(self) -> dict[str, Any]:
        return {"repeated_ngrams": self.repeated_ngrams, "tail_loop": self.tail_loop,
                "repeated_lines": self.repeated_lines, "mixing": self.mixing, "format_issues": self.format_issues,
                "language": self.language, "repetitive": self.repetitive, "mixed": self.mixed,
                "penalty": self.penalty}


# ---- repetition -----------------------------------------------------------------------------


def _units(text: str) -> tuple[list[str], int]:
    """Words for alphabetic text, characters for CJK text; and the n-gram size to use."""
    counts = script_counts(text)
    if counts["zh"] + counts["ja"] > counts["latin"]:
        return [c for c in text if not c.isspace()], 8
    return re.findall(r"\w+", text.lower()), 4


def repeated_ngram_share(text: str) -> float:
    units, n = _units(text)
    grams = [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if len(grams) >= 8 else 0.0


def has_tail_loop(text: str, min_repeats: int = 3, max_period: int = 300, min_chars: int = 24) -> bool:
    """The text ends with some chunk (1..max_period chars) repeated `min_repeats`+ times back to
    back, covering at least `min_chars` (so "!!!" or "..." is not a loop)."""
    t = text.rstrip()
    for period in range(1, min(max_period, len(t) // min_repeats) + 1):
        unit, k = t[-period:], 1
        while len(t) >= (k + 1) * period and t[len(t) - (k + 1) * period: len(t) - k * period] == unit:
            k += 1
        if k >= min_repeats and period * k >= min_chars:
            return True
    return False


def repeated_line_share(text: str) -> float:
    lines = [" ".join(line.split()).lower() for line in text.splitlines()]
    lines = [line for line in lines if len(line) >= 12]  # short lines (fences, "---", "Yes.") repeat harmlessly
    if len(lines) < 4:
        return 0.0
    return 1 - len(set(lines)) / len(lines)


# ---- language mixing ------------------------------------------------------------------------

_STRIP = [re.compile(p, re.S) for p in (r"```.*?(```|$)", r"`[^`\n]*`", r"https?://\S+", r"\$\$.*?\$\$",
                                        r"\$[^$\n]*\$", r"\\\(.*?\\\)", r"\\\[.*?\\\]")]


def _prose(text: str) -> str:
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    return text


def mixing_share(text: str, language: str | None, prompt: str = "", latin_tolerance: float = 0.3) -> float:
    """Share of the answer's text (letters; a CJK character weighs three) in a script `language`
    does not use (see the module doc)."""
    # weighed as in detect_language: a CJK character counts as much as three letters
    counts = {k: v * (3 if k in _CJK else 1) for k, v in script_counts(_prose(text)).items()}
    total = sum(counts.values())
    if not total or language is None:
        return 0.0
    allowed = {k for k, v in script_counts(prompt).items() if v}  # scripts the prompt itself uses
    if language in _CJK:
        foreign = sum(v for k, v in counts.items() if k not in ("zh", "ja", "latin") and k not in allowed)
        latin = counts["latin"] / total
        return foreign / total + (latin if latin > latin_tolerance else 0.0)
    own = "latin" if language not in ("ru", "ar") else language
    return sum(v for k, v in counts.items() if k != own and k not in allowed) / total


# ---- formatting -----------------------------------------------------------------------------


def format_issues(text: str) -> list[str]:
    issues = []
    if not text.strip():
        return ["empty answer"]
    fences = re.findall(r"^\s*```", text, flags=re.M)
    if len(fences) % 2:
        issues.append("unclosed code fence")
    leaked = [m for m in LEAKED_MARKUP if m in text]
    if leaked:
        issues.append(f"chat markup in the answer: {', '.join(leaked)}")
    prose = re.sub(r"```.*?(```|$)", " ", text, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", " ", prose)
    if prose.count("**") % 2:
        issues.append("unbalanced ** (bold) markers")
    if prose.count("$$") % 2 or prose.count("\\(") != prose.count("\\)") or prose.count("\\[") != prose.count("\\]"):
        issues.append("unbalanced LaTeX delimiters")
    block: list[int] = []
    for line in prose.splitlines() + [""]:
        s = line.strip()
        if s.startswith("|") and s.endswith("|") and len(s) > 1:
            block.append(s.strip("|").count("|") + 1)
        else:
            if len(block) >= 2 and len(set(block)) > 1:
                issues.append("markdown table with rows of different widths")
            block = []
    return issues


# ---- the diagnosis and rewards --------------------------------------------------------------


def diagnose(response: str, prompt: str = "", *, language: str | None = None,
             repetition_threshold: float = 0.3, mixing_threshold: float = 0.0) -> PathologyReport:
    """Pathologies of the visible answer `response`; `language` defaults to the prompt's."""
    language = language or detect_language(_prose(prompt)) or detect_language(_prose(response))
    return PathologyReport(
        repeated_ngrams=repeated_ngram_share(response), tail_loop=has_tail_loop(response),
        repeated_lines=repeated_line_share(response), mixing=mixing_share(response, language, prompt),
        format_issues=format_issues(response), language=language,
        repetition_threshold=repetition_threshold, mixing_threshold=mixing_threshold)


def _prompt_text(task: Mapping[str, Any]) -> str:
    messages = task.get("messages") or []
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return users[-1] if users else str(task.get("prompt") or "")


def _answer(task: Mapping[str, Any], output: str) -> str:
    return parse(output, enable_thinking=task.get("enable_thinking", True))["content"]


def pathology_reward(task: Mapping[str, Any], output: str):
    """The `pathology` reward kind: 1 - penalty of the answer (1 for a clean one)."""
    from glm45.rl.rewards import Reward

    report = diagnose(_answer(task, output), _prompt_text(task), language=task.get("language"))
    return Reward(1.0 - report.penalty, report.to_dict())


def with_pathology_penalty(reward_fn: Callable[[Mapping[str, Any], str], Any], weight: float = 1.0):
    """`reward_fn` minus `weight` x the pathology penalty of the answer (info: `pathology`)."""
    from glm45.rl.rewards import Reward

    def reward(task: Mapping[str, Any], output: str) -> Reward:
        base = reward_fn(task, output)
        report = diagnose(_answer(task, output), _prompt_text(task), language=task.get("language"))
        return Reward(base.value - weight * report.penalty, {**base.info, "pathology": report.to_dict()})

    reward.__name__ = f"{getattr(reward_fn, '__name__', 'reward')}_with_pathology_penalty"
    return reward


# ---- the targeted prompt set ----------------------------------------------------------------

PATHOLOGY_PROMPTS: list[dict[str, Any]] = [
    # repetition: long enumerations and formulaic text invite loops
    {"prompt": "List 100 different animals, one per line.", "targets": ["repetition"], "language": "en"},
    {"prompt": "Write the numbers from one to two hundred in words.", "targets": ["repetition"], "language": "en"},
    {"prompt": "Generate 50 unique names for a bakery.", "targets": ["repetition"], "language": "en"},
    {"prompt": "Write a poem in which every line begins with 'And then'.", "targets": ["repetition"], "language": "en"},
    {"prompt": "Write the longest sentence you can about the sea.", "targets": ["repetition"], "language": "en"},
    {"prompt": "Give 40 different ways to say 'thank you'.", "targets": ["repetition"], "language": "en"},
    {"prompt": "请列出100个不同的中国城市名称。", "targets": ["repetition"], "language": "zh"},
    {"prompt": "写一首每一行都以“我爱”开头的长诗。", "targets": ["repetition"], "language": "zh"},
    # language mixing: one language about the other's terms
    {"prompt": "用中文解释 Transformer 模型中的 attention 机制。", "targets": ["mixing"], "language": "zh"},
    {"prompt": "请用中文介绍一下 Python 的 list comprehension 和 generator 的区别。", "targets": ["mixing"],
     "language": "zh"},
    {"prompt": "用中文总结机器学习里的 overfitting 和 regularization。", "targets": ["mixing"], "language": "zh"},
    {"prompt": "Explain in English what the Chinese word 'jianghu' means in martial-arts novels.",
     "targets": ["mixing"], "language": "en"},
    {"prompt": "Describe the history of the Great Wall of China in English.", "targets": ["mixing"], "language": "en"},
    {"prompt": "Explain the difference between Chinese pinyin and Japanese romaji, in English.",
     "targets": ["mixing"], "language": "en"},
    {"prompt": "Объясни по-русски, что такое рекурсия в программировании.", "targets": ["mixing"], "language": "ru"},
    {"prompt": "Explique en français le fonctionnement d'un moteur à combustion.", "targets": ["mixing"],
     "language": "fr"},
    # formatting: tables, code, math, nested markdown
    {"prompt": "Make a markdown table comparing five programming languages on four features.",
     "targets": ["format"], "language": "en"},
    {"prompt": "Write a Python function that parses a CSV file, with explanations between code blocks.",
     "targets": ["format"], "language": "en"},
    {"prompt": "Write the quadratic formula in LaTeX and explain each term.", "targets": ["format"], "language": "en"},
    {"prompt": "Give a nested bulleted list of the planets and their moons, with bold planet names.",
     "targets": ["format"], "language": "en"},
    {"prompt": "用表格比较三种排序算法的时间复杂度，并给出代码。", "targets": ["format", "mixing"], "language": "zh"},
    {"prompt": "Show a shell session that creates a git repository, with commands in code blocks.",
     "targets": ["format"], "language": "en"},
]


def pathology_tasks(prompts: Sequence[Mapping[str, Any]] = PATHOLOGY_PROMPTS) -> list[dict[str, Any]]:
    """Records for the `pathology` reward (drive them with `SingleTurnEnv`)."""
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p.get("prompt"), str):
            raise EnvError(f"pathology prompt {i} needs a 'prompt' string")
        out.append({"id": f"pathology-{i}", "messages": [{"role": "user", "content": p["prompt"]}],
                    "language": p.get("language"), "targets": list(p.get("targets", [])),
                    "reward_kind": "pathology", "env": "single_turn"})
    return out


def select_triggering_prompts(prompts: Sequence[Mapping[str, Any]],
                              generate: Callable[[list[str], int], list[list[str]]], *, samples: int = 8,
                              min_rate: float = 0.05) -> list[dict[str, Any]]:
    """The prompts whose sampled answers show a pathology at least `min_rate` of the time.

    `generate(prompt_texts, k)` returns k answers (visible text) per prompt — a model's sampler.
    Each kept prompt gets its measured `rate`, highest first."""
    texts = [p["prompt"] for p in prompts]
    answers = generate(texts, samples)
    if len(answers) != len(texts):
        raise EnvError(f"generate returned answers for {len(answers)} of {len(texts)} prompts")
    kept = []
    for p, outs in zip(prompts, answers):
        if not outs:
            continue
        rate = sum(diagnose(a, p["prompt"], language=p.get("language")).any for a in outs) / len(outs)
        if rate >= min_rate:
            kept.append({**p, "rate": rate})
    return sorted(kept, key=lambda p: -p["rate"])


def _register() -> None:
    from glm45.rl.rewards import register_reward

    register_reward("pathology", pathology_reward)


_register()
