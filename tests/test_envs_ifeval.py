"""Instruction-following verifiers: every constraint type on a planted passing and failing answer."""

from __future__ import annotations

import itertools
import json

import pytest

from glm45.envs import SingleTurnEnv
from glm45.envs.base import EnvError
from glm45.envs.ifeval import (
    CATEGORIES, CONSTRAINT_TYPES, Constraint, detect_language, generate_if_tasks, instruction_following_reward, verify,
)
from glm45.rl.rewards import compute_reward

PROSE = "The river runs to the sea. It carries water from the hills. Fish swim in it all year."
LONG = " ".join(["word"] * 60)

# type -> (params, an answer that satisfies it, one that does not)
CASES = {
    "min_words": ({"n": 50}, LONG, PROSE),
    "max_words": ({"n": 20}, PROSE, LONG),
    "max_sentences": ({"n": 2}, "One sentence. Two sentences.", PROSE),
    "paragraphs": ({"n": 2}, "First part.\n\nSecond part.", "Only one paragraph here."),
    "max_chars": ({"n": 100}, PROSE, LONG * 2),
    "include_keywords": ({"words": ["river", "sea"]}, PROSE, "Only hills here."),
    "forbidden_words": ({"words": ["river"]}, "Only hills here.", PROSE),
    "keyword_frequency": ({"word": "sea", "n": 2}, "The sea, the Sea!", PROSE),
    "letter_frequency": ({"letter": "e", "n": 5}, PROSE, "A dog."),
    "response_language": ({"lang": "fr"}, "Le chat est sur la table et il dort dans le jardin.", PROSE),
    "json_format": ({}, '```json\n{"a": 1}\n```', "{a: 1}"),
    "json_keys": ({"keys": ["title", "summary"]}, '{"title": "t", "summary": "s"}', '{"title": "t"}'),
    "title": ({}, "<<A River>>\n" + PROSE, PROSE),
    "bullet_points": ({"n": 2}, "* one\n* two", "* one\n* two\n- three"),
    "numbered_list": ({"n": 3}, "1. a\n2. b\n3. c", "1. a\n3. b\n4. c"),
    "highlighted": ({"n": 2}, "An *important* and *urgent* note.", "A **bold** note only."),
    "headings": ({"n": 2}, "# One\ntext\n## Two\ntext", "#NoSpace\ntext"),
    "code_block": ({}, "Code:\n```python\nprint(1)\n```", "Code:\n```python\nprint(1)"),
    "table": ({"n": 2}, "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |", "| a | b |\n|---|---|\n| 1 | 2 | 3 |"),
    "all_lowercase": ({}, "all quiet here.", "All quiet here."),
    "all_uppercase": ({}, "ALL QUIET HERE.", "ALL quiet HERE."),
    "max_capital_words": ({"n": 2}, "A NASA mission.", "NASA and ESA and JAXA."),
    "sections": ({"n": 2, "marker": "SECTION"}, "SECTION 1\nfoo\nSECTION 2\nbar", "SECTION 1\nfoo\nSECTION 3\nbar"),
    "two_responses": ({}, "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    "postscript": ({"marker": "P.S."}, PROSE + "\n\nP.S. See you.", PROSE),
    "start_with": ({"phrase": "In short,"}, "In short, yes.", "Yes. In short, yes."),
    "end_with": ({"phrase": "Hope this helps."}, "Yes.\nHope this helps.", "Hope this helps. Yes."),
    "quotation": ({}, '"' + PROSE + '"', PROSE),
    "no_commas": ({}, PROSE, "Yes, indeed."),
    "placeholders": ({"n": 2}, "Meet at [address] on [date].", "Meet at the park."),
    "repeat_prompt": ({"request": "Describe tea."}, "Describe tea. Tea is a drink.", "Tea is a drink."),
    "no_digits": ({}, "twenty two apples", "22 apples"),
}


def test_taxonomy_size():
    assert len(CONSTRAINT_TYPES) >= 20 and set(CASES) == set(CONSTRAINT_TYPES)
    assert {t.category for t in CONSTRAINT_TYPES.values()} == set(CATEGORIES) and len(CATEGORIES) == 7


@pytest.mark.parametrize("kind", sorted(CASES))
def test_planted_good_and_bad(kind):
    params, good, bad = CASES[kind]
    c = Constraint(kind, params)
    assert c.check(good), f"{kind} should accept {good!r}"
    assert not c.check(bad), f"{kind} should reject {bad!r}"
    assert c.check(good) == c.check(good)  # deterministic
    assert c.describe() and Constraint.from_dict(c.to_dict()) == c


def test_detect_language():
    assert detect_language("The cat is on the table and it sleeps.") == "en"
    assert detect_language("Der Hund ist nicht mit dem Ball auf der Wiese.") == "de"
    assert detect_language("El perro es de la casa y los niños juegan con él.") == "es"
    assert detect_language("这是一个关于机器学习的解释。") == "zh"
    assert detect_language("Это объяснение рекурсии.") == "ru"
    assert detect_language("これは説明です。") == "ja"
    assert detect_language("用中文解释 attention 机制。") == "zh"  # a few English terms do not flip it
    assert detect_language("123 !!!") is None


def test_generated_tasks_cover_every_type_with_compatible_constraints():
    tasks = generate_if_tasks(96, seed=1)
    seen = {c["kind"] for t in tasks for c in t["constraints"]}
    assert seen == set(CONSTRAINT_TYPES)
    for t in tasks:
        kinds = [CONSTRAINT_TYPES[c["kind"]] for c in t["constraints"]]
        assert len({k.category for k in kinds}) == len(kinds) <= 3
        for a, b in itertools.permutations(kinds, 2):
            assert b.category not in a.excludes
        for c in t["constraints"]:
            assert Constraint.from_dict(c).describe() in t["prompt"]
    assert generate_if_tasks(5, seed=1) == tasks[:5]


def test_ifeval_reward_through_the_registry():
    constraints = [{"kind": "all_lowercase", "params": {}}, {"kind": "max_words", "params": {"n": 5}}]
    task = {"reward_kind": "ifeval", "prompt": "Say hi.", "constraints": constraints}
    assert compute_reward(task, "<think>Keep It Short</think>\nhi there").value == 1.0  # reasoning is not judged
    assert compute_reward(task, "Hi there").value == 0.0
    assert compute_reward({**task, "partial_credit": True}, "Hi there").value == 0.5
    env = SingleTurnEnv()
    env.reset(task)
    assert env.step({"role": "assistant", "content": "hello you"}).reward == 1.0
    with pytest.raises(EnvError, match="constraints"):
        compute_reward({**task, "constraints": []}, "hi")
    with pytest.raises(EnvError, match="unknown constraint"):
        compute_reward({**task, "constraints": [{"kind": "rhyme"}]}, "hi")


def test_rules_combined_with_a_quality_score():
    asked = []

    def quality(task, content):
        asked.append(content)
        return 0.5

    reward = instruction_following_reward(quality)
    task = {"prompt": "x", "constraints": [{"kind": "no_commas", "params": {}}]}
    assert reward(task, "fine answer").value == 0.5
    assert reward(task, "bad, answer").value == 0.0
    assert asked == ["fine answer"]  # the judge is not consulted for an answer that breaks a rule
    r = instruction_following_reward(lambda t, c: 1.5)
    with pytest.raises(EnvError, match=r"\[0, 1\]"):
        r(task, "ok")


def test_verify_fraction():
    result = verify(json.dumps({"a": 1}), [{"kind": "json_format"}, {"kind": "all_uppercase"}])
    assert result.passed == [True, False] and result.fraction == 0.5 and not result.all
