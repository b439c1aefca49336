"""Instruction-following verifiers: a taxonomy of deterministic constraint checks (§3.4).

Each constraint type states an instruction ("Answer with at least 80 words.") and checks a
response for it with a rule, never a model. The 31 types fall in 7 categories:

  length     min_words, max_words, max_sentences, paragraphs, max_chars
  keywords   include_keywords, forbidden_words, keyword_frequency, letter_frequency
  language   response_language (en, fr, es, de by function words; zh, ru, ja, ar by script)
  format     json_format, json_keys, title, bullet_points, numbered_list, highlighted,
             headings, code_block, table
  case       all_lowercase, all_uppercase, max_capital_words
  structure  sections, two_responses, postscript
  content    start_with, end_with, quotation, no_commas, placeholders, repeat_prompt, no_digits

`generate_if_tasks` writes prompts (a request plus 1-3 compatible constraints) as records for
the `ifeval` reward (registered in `glm45.rl.rewards`): 1 when every constraint holds (with
`partial_credit` in the record, the fraction that hold). `instruction_following_reward(quality)`
combines the rules with a quality score — an LLM judge (`glm45.envs.judge`) or a reward model —
as rules x quality, so a response must both obey and be good.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glm45.chat import parse
from glm45.envs.base import EnvError

__all__ = ["CATEGORIES", "CONSTRAINT_TYPES", "Constraint", "ConstraintType", "IFResult", "detect_language",
           "generate_if_tasks", "ifeval_reward", "instruction_following_reward", "verify"]


@dataclass(frozen=True)
class ConstraintType:
    name: str
    category: str
    describe: Callable[[dict], str]
    check: Callable[[str, dict], bool]
    sample: Callable[[random.Random], dict]
    excludes: frozenset[str] = frozenset()  # categories this type cannot be combined with


@dataclass(frozen=True)
class Constraint:
    kind: str
    params: dict[str, Any]

    @property
    def type(self) -> ConstraintType:
        if self.kind not in CONSTRAINT_TYPES:
            raise EnvError(f"unknown constraint type {self.kind!r}; known: {sorted(CONSTRAINT_TYPES)}")
        return CONSTRAINT_TYPES[self.kind]

    def describe(self) -> str:
        return self.type.describe(self.params)

    def check(self, response: str) -> bool:
        try:
            return bool(self.type.check(response, self.params))
        except KeyError as e:
            raise EnvError(f"constraint {self.kind!r} lacks the parameter {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Constraint:
        if not isinstance(d, Mapping) or not isinstance(d.get("kind"), str):
            raise EnvError(f"a constraint needs a 'kind', got {d!r}")
        c = cls(d["kind"], dict(d.get("params") or {}))
        c.type  # noqa: B018  (validates the kind)
        return c


# ---- text helpers ---------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:['’-]\w+)*", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?。！？])\s+", text.strip())
    return [p for p in parts if re.search(r"\w", p)]


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n|^\s*\*\*\*\s*$", text.strip(), flags=re.M) if p and p.strip()]


def _count_word(text: str, word: str) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE))


def _json_body(text: str) -> Any:
    body = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*\n(.*?)\n?```", body, flags=re.S)
    if fence:
        body = fence.group(1)
    return json.loads(body)


def _is_json(text: str) -> bool:
    try:
        _json_body(text)
        return True
    except ValueError:
        return False


def _json_keys(text: str, keys: Sequence[str]) -> bool:
    try:
        data = _json_body(text)
    except ValueError:
        return False
    return isinstance(data, dict) and all(k in data for k in keys)


_SCRIPTS = {"zh": ("CJK UNIFIED",), "ja": ("HIRAGANA", "KATAKANA"), "ru": ("CYRILLIC",), "ar": ("ARABIC",)}
_FUNCTION_WORDS = {
    "en": {"the", "and", "is", "of", "to", "in", "it", "that", "with", "for", "are", "this", "you", "was"},
    "fr": {"le", "la", "les", "et", "est", "des", "une", "un", "du", "que", "pour", "dans", "pas", "avec"},
    "es": {"el", "la", "los", "las", "y", "es", "una", "un", "del", "que", "para", "con", "por", "en"},
    "de": {"der", "die", "das", "und", "ist", "ein", "eine", "nicht", "mit", "zu", "den", "von", "auf", "sich"},
}
LANGUAGE_NAMES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German", "zh": "Chinese",
                  "ja": "Japanese", "ru": "Russian", "ar": "Arabic"}


def script_counts(text: str) -> dict[str, int]:
    """Letters per script: latin, zh (Han), ja (kana), ru (Cyrillic), ar, other."""
    counts = {"latin": 0, "zh": 0, "ja": 0, "ru": 0, "ar": 0, "other": 0}
    for ch in text:
        if not ch.isalpha():
            continue
        if ch.isascii():
            counts["latin"] += 1
            continue
        name = unicodedata.name(ch, "")
        for script, prefixes in _SCRIPTS.items():
            if name.startswith(prefixes):
                counts[script] += 1
                break
        else:
            counts["latin" if "LATIN" in name else "other"] += 1
    return counts


def detect_language(text: str) -> str | None:
    """The dominant language: by script for zh/ja/ru/ar (a CJK character weighing as much as three
    letters), by function words among Latin-script languages; None when there is no text."""
    counts = script_counts(text)
    # A CJK character carries about a word; a word of an alphabetic script takes ~4-6 letters.
    mass = {k: v * (3 if k in ("zh", "ja") else 1) for k, v in counts.items()}
    if counts["ja"] and mass["ja"] + mass["zh"] > mass["latin"]:
        return "ja"  # Japanese mixes kana with Han characters
    script = max(mass, key=lambda k: mass[k])
    if mass[script] == 0:
        return None
    if script != "latin":
        return script if script in _SCRIPTS else None
    tokens = [w.lower() for w in words(text)]
    scores = {lang: sum(t in fw for t in tokens) for lang, fw in _FUNCTION_WORDS.items()}
    best = max(scores, key=lambda k: (scores[k], k == "en"))
    return best if scores[best] else "en"


def _bullets(text: str) -> int:
    return len(re.findall(r"^\s*[*-]\s+\S", text, flags=re.M))


def _numbered(text: str) -> int:
    numbers = [int(m) for m in re.findall(r"^\s*(\d+)[.)]\s+\S", text, flags=re.M)]
    return len(numbers) if numbers == list(range(1, len(numbers) + 1)) else -1


def _table_rows(text: str) -> int:
    """Body rows of the first well-formed markdown table (header, separator, rows; equal columns)."""
    lines = [line.strip() for line in text.splitlines()]
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*\|?", lines[i + 1]):
            cols = lines[i].strip("|").count("|") + 1
            rows = 0
            for line in lines[i + 2:]:
                if not line.startswith("|"):
                    break
                if line.strip("|").count("|") + 1 != cols:
                    return 0
                rows += 1
            return rows
    return 0


def _sections(text: str, marker: str) -> int:
    found = [int(n) for n in re.findall(rf"^\s*{re.escape(marker)}\s+(\d+)", text, flags=re.M)]
    return len(found) if found == list(range(1, len(found) + 1)) else -1


def _two_responses(text: str) -> bool:
    parts = [x.strip() for x in re.split(r"^\s*\*{6}\s*$", text, flags=re.M)]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _highlights(text: str) -> int:
    return len([m for m in re.findall(r"(?<!\*)\*([^*\n]+)\*(?!\*)", text) if m.strip()])


# ---- the taxonomy ---------------------------------------------------------------------------

_KEYWORDS = ("ocean", "history", "energy", "garden", "music", "travel", "future", "science", "friendship",
             "mountain", "river", "computer", "memory", "balance", "harvest")
_PHRASES = ("Is there anything else I can help with?", "Hope this helps.", "That is all.", "Thank you for reading.")
_OPENERS = ("My answer is", "In short,", "Dear reader,", "Here is my response:")

_FORMAT_HEAVY = frozenset({"format", "structure", "content"})

_TYPES: list[ConstraintType] = [
    # length
    ConstraintType("min_words", "length", lambda p: f"Answer with at least {p['n']} words.",
                   lambda t, p: len(words(t)) >= p["n"], lambda r: {"n": r.choice((50, 80, 120, 200))}),
    ConstraintType("max_words", "length", lambda p: f"Answer with at most {p['n']} words.",
                   lambda t, p: 0 < len(words(t)) <= p["n"], lambda r: {"n": r.choice((20, 40, 60, 100))}),
    ConstraintType("max_sentences", "length", lambda p: f"Use at most {p['n']} sentences.",
                   lambda t, p: 0 < len(sentences(t)) <= p["n"], lambda r: {"n": r.choice((2, 3, 5))}),
    ConstraintType("paragraphs", "length",
                   lambda p: f"Write exactly {p['n']} paragraphs, separated by blank lines.",
                   lambda t, p: len(paragraphs(t)) == p["n"], lambda r: {"n": r.choice((2, 3, 4))}),
    ConstraintType("max_chars", "length", lambda p: f"Keep the whole answer under {p['n']} characters.",
                   lambda t, p: 0 < len(t.strip()) < p["n"], lambda r: {"n": r.choice((200, 400, 800))}),
    # keywords
    ConstraintType("include_keywords", "keywords",
                   lambda p: "Include the words " + ", ".join(f"'{w}'" for w in p["words"]) + ".",
                   lambda t, p: all(_count_word(t, w) for w in p["words"]),
                   lambda r: {"words": r.sample(_KEYWORDS, 2)}, frozenset({"language"})),
    ConstraintType("forbidden_words", "keywords",
                   lambda p: "Do not use the words " + ", ".join(f"'{w}'" for w in p["words"]) + ".",
                   lambda t, p: not any(_count_word(t, w) for w in p["words"]),
                   lambda r: {"words": r.sample(_KEYWORDS, 2)}),
    ConstraintType("keyword_frequency", "keywords",
                   lambda p: f"Use the word '{p['word']}' at least {p['n']} times.",
                   lambda t, p: _count_word(t, p["word"]) >= p["n"],
                   lambda r: {"word": r.choice(_KEYWORDS), "n": r.choice((2, 3))}, frozenset({"language"})),
    ConstraintType("letter_frequency", "keywords",
                   lambda p: f"The letter '{p['letter']}' must appear at least {p['n']} times.",
                   lambda t, p: t.lower().count(p["letter"]) >= p["n"],
                   lambda r: {"letter": r.choice("aeiost"), "n": r.choice((5, 10, 15))}, frozenset({"language"})),
    # language
    ConstraintType("response_language", "language",
                   lambda p: f"Your entire answer must be in {LANGUAGE_NAMES[p['lang']]}, no other language.",
                   lambda t, p: detect_language(t) == p["lang"],
                   lambda r: {"lang": r.choice(sorted(LANGUAGE_NAMES))}, frozenset({"keywords", "length"})),
    # format
    ConstraintType("json_format", "format", lambda p: "Your entire answer must be valid JSON.",
                   lambda t, p: _is_json(t), lambda r: {}, _FORMAT_HEAVY | {"case"}),
    ConstraintType("json_keys", "format",
                   lambda p: "Answer with a JSON object that has the keys " + ", ".join(f'"{k}"' for k in p["keys"])
                   + ".", lambda t, p: _json_keys(t, p["keys"]),
                   lambda r: {"keys": r.sample(("title", "summary", "points", "answer", "reason"), 2)},
                   _FORMAT_HEAVY | {"case"}),
    ConstraintType("title", "format", lambda p: "Give your answer a title wrapped in double angular brackets, "
                                                "like <<my title>>.",
                   lambda t, p: re.search(r"<<[^<>\n]+>>", t) is not None, lambda r: {}),
    ConstraintType("bullet_points", "format",
                   lambda p: f"Your answer must contain exactly {p['n']} bullet points, using markdown '* '.",
                   lambda t, p: _bullets(t) == p["n"], lambda r: {"n": r.choice((2, 3, 4, 5))}),
    ConstraintType("numbered_list", "format",
                   lambda p: f"Include a numbered list of exactly {p['n']} items (1., 2., ...).",
                   lambda t, p: _numbered(t) == p["n"], lambda r: {"n": r.choice((3, 4, 5))}),
    ConstraintType("highlighted", "format",
                   lambda p: f"Highlight at least {p['n']} parts with markdown, i.e. *highlighted section*.",
                   lambda t, p: _highlights(t) >= p["n"], lambda r: {"n": r.choice((1, 2, 3))}),
    ConstraintType("headings", "format", lambda p: f"Use at least {p['n']} markdown headings (lines starting "
                                                   "with '#').",
                   lambda t, p: len(re.findall(r"^#{1,6} \S", t, flags=re.M)) >= p["n"],
                   lambda r: {"n": r.choice((2, 3))}),
    ConstraintType("code_block", "format", lambda p: "Include one fenced code block (```).",
                   lambda t, p: t.count("```") == 2 and re.search(r"```[^\n]*\n.*?```", t, flags=re.S) is not None,
                   lambda r: {}),
    ConstraintType("table", "format", lambda p: f"Include a markdown table with at least {p['n']} rows.",
                   lambda t, p: _table_rows(t) >= p["n"], lambda r: {"n": r.choice((2, 3))}),
    # case
    ConstraintType("all_lowercase", "case", lambda p: "Write your entire answer in lowercase letters only.",
                   lambda t, p: any(c.isalpha() for c in t) and t == t.lower(), lambda r: {}),
    ConstraintType("all_uppercase", "case", lambda p: "Write your entire answer in capital letters only.",
                   lambda t, p: any(c.isalpha() for c in t) and t == t.upper(), lambda r: {}),
    ConstraintType("max_capital_words", "case",
                   lambda p: f"Use fewer than {p['n']} words in all capital letters.",
                   lambda t, p: sum(1 for w in words(t) if len(w) > 1 and w.isupper()) < p["n"],
                   lambda r: {"n": r.choice((2, 4))}),
    # structure
    ConstraintType("sections", "structure",
                   lambda p: f"Divide your answer into {p['n']} sections, each starting with '{p['marker']} X' "
                             "(X = 1, 2, ...).",
                   lambda t, p: _sections(t, p["marker"]) == p["n"],
                   lambda r: {"n": r.choice((2, 3, 4)), "marker": r.choice(("SECTION", "Part"))}),
    ConstraintType("two_responses", "structure",
                   lambda p: "Give two different answers, separated by a line of six asterisks (******).",
                   lambda t, p: _two_responses(t), lambda r: {}),
    ConstraintType("postscript", "structure",
                   lambda p: f"End with a postscript starting with {p['marker']}",
                   lambda t, p: re.search(rf"^\s*{re.escape(p['marker'])}\s*\S", t, flags=re.M) is not None,
                   lambda r: {"marker": r.choice(("P.S.", "P.P.S"))}),
    # content
    ConstraintType("start_with", "content", lambda p: f"Start your answer with the words \"{p['phrase']}\".",
                   lambda t, p: t.strip().startswith(p["phrase"]), lambda r: {"phrase": r.choice(_OPENERS)}),
    ConstraintType("end_with", "content", lambda p: f"End your answer with the exact phrase \"{p['phrase']}\".",
                   lambda t, p: t.strip().endswith(p["phrase"]), lambda r: {"phrase": r.choice(_PHRASES)},
                   frozenset({"structure"})),
    ConstraintType("quotation", "content", lambda p: "Wrap your entire answer in double quotation marks.",
                   lambda t, p: len(t.strip()) > 1 and t.strip()[0] == t.strip()[-1] == '"', lambda r: {},
                   frozenset({"structure", "format"})),
    ConstraintType("no_commas", "content", lambda p: "Do not use any commas.",
                   lambda t, p: "," not in t and "，" not in t, lambda r: {}),
    ConstraintType("placeholders", "content",
                   lambda p: f"Include at least {p['n']} placeholders in square brackets, like [address].",
                   lambda t, p: len(re.findall(r"\[[^\[\]\n]+\]", t)) >= p["n"], lambda r: {"n": r.choice((1, 2, 3))}),
    ConstraintType("repeat_prompt", "content",
                   lambda p: "First repeat the request word for word without change, then give your answer.",
                   lambda t, p: t.strip().startswith(p["request"].strip())
                   and len(t.strip()) > len(p["request"].strip()),
                   lambda r: {}, frozenset({"case", "language"})),
    ConstraintType("no_digits", "content", lambda p: "Do not use any digits; spell numbers out.",
                   lambda t, p: not any(c.isdigit() for c in t), lambda r: {}, frozenset({"format", "structure"})),
]
CONSTRAINT_TYPES: dict[str, ConstraintType] = {t.name: t for t in _TYPES}
CATEGORIES: tuple[str, ...] = ("length", "keywords", "language", "format", "case", "structure", "content")


# ---- verification and rewards ---------------------------------------------------------------


@dataclass
class IFResult:
    passed: list[bool]

    @property
    def all(self) -> bool:
        return all(self.passed)

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 1.0


def verify(response: str, constraints: Sequence[Constraint | Mapping]) -> IFResult:
    """Check the visible `response` (no reasoning) against each constraint."""
    cs = [c if isinstance(c, Constraint) else Constraint.from_dict(c) for c in constraints]
    return IFResult([c.check(response) for c in cs])


def _content(task: Mapping[str, Any], output: str) -> str:
    return parse(output, enable_thinking=task.get("enable_thinking", True))["content"]


def ifeval_reward(task: Mapping[str, Any], output: str):
    """The `ifeval` reward kind: all constraints hold (or the fraction, with `partial_credit`)."""
    from glm45.rl.rewards import Reward

    constraints = task.get("constraints")
    if not isinstance(constraints, list) or not constraints:
        raise EnvError(f"ifeval task {task.get('id', '')!r} needs a non-empty 'constraints' list")
    result = verify(_content(task, output), constraints)
    value = result.fraction if task.get("partial_credit") else float(result.all)
    return Reward(value, {"passed": result.passed})


def instruction_following_reward(quality: Callable[[Mapping[str, Any], str], float] | None = None):
    """A reward function for `ifeval` records: rules x quality, where `quality(task, content)` in
    [0, 1] is a judge's or a reward model's score of the answer (only asked when a rule holds)."""
    from glm45.rl.rewards import Reward

    def reward(task: Mapping[str, Any], output: str) -> Reward:
        base = ifeval_reward(task, output)
        if quality is None or base.value == 0:
            return base
        q = float(quality(task, _content(task, output)))
        if not 0.0 <= q <= 1.0:
            raise EnvError(f"a quality score must lie in [0, 1], got {q}")
        return Reward(base.value * q, {**base.info, "rules": base.value, "quality": q})

    return reward


# ---- prompts --------------------------------------------------------------------------------

REQUESTS = (
    "Write a short note to a neighbour about a lost cat.",
    "Describe your ideal weekend.",
    "Explain why the sky is blue to a child.",
    "Write a product description for a reusable water bottle.",
    "Give advice to someone starting to learn the guitar.",
    "Summarise the benefits of regular exercise.",
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Write a thank-you message to a teacher.",
    "Describe a city you would like to visit.",
    "Give tips for keeping houseplants alive.",
    "Explain what a budget is and why it helps.",
    "Write a review of an imaginary restaurant.",
    "Describe how to make a cup of tea.",
    "Write an invitation to a picnic.",
    "Explain the water cycle.",
)


def _compatible(chosen: Sequence[ConstraintType], new: ConstraintType) -> bool:
    for t in chosen:
        if t.category == new.category or new.category in t.excludes or t.category in new.excludes:
            return False
    return True


def generate_if_tasks(n: int, seed: int = 0, *, max_constraints: int = 3, kinds: Sequence[str] | None = None
                      ) -> list[dict]:
    """`n` prompts, each a request with 1..max_constraints constraints of different, compatible
    categories; every type in `kinds` (default: all) is used when n allows. Records are ready for
    `SingleTurnEnv` (`messages`, `reward_kind: "ifeval"`, `constraints`)."""
    names = list(CONSTRAINT_TYPES) if kinds is None else list(kinds)
    unknown = sorted(set(names) - set(CONSTRAINT_TYPES))
    if unknown or not names:
        raise EnvError(f"unknown constraint types {unknown}; known: {sorted(CONSTRAINT_TYPES)}")
    pool = [CONSTRAINT_TYPES[k] for k in names]
    if max_constraints < 1:
        raise EnvError(f"max_constraints must be >= 1, got {max_constraints}")
    rng = random.Random(f"glm45.envs.ifeval/{seed}")
    out = []
    for i in range(n):
        request = rng.choice(REQUESTS)
        first = pool[i % len(pool)]  # cycle through the types so each is covered
        chosen, target = [first], rng.randint(1, max_constraints)
        for t in rng.sample(pool, len(pool)):
            if len(chosen) >= target:
                break
            if _compatible(chosen, t):
                chosen.append(t)
        constraints = []
        for t in chosen:
            params = t.sample(rng)
            if t.name == "repeat_prompt":
                params = {"request": request}
            constraints.append(Constraint(t.name, params))
        prompt = request + " " + " ".join(c.describe() for c in constraints)
        out.append({"id": f"ifeval-{seed}-{i}", "prompt": prompt, "messages": [{"role": "user", "content": prompt}],
                    "constraints": [c.to_dict() for c in constraints], "reward_kind": "ifeval", "env": "single_turn"})
    return out


def _register() -> None:
    from glm45.rl.rewards import register_reward

    register_reward("ifeval", ifeval_reward)


_register()
