"""Pathology penalties: repetition, language mixing and formatting mistakes on planted answers."""

from __future__ import annotations

import pytest

from glm45.envs import SingleTurnEnv
from glm45.envs.pathology import (
    PATHOLOGY_PROMPTS, diagnose, format_issues, has_tail_loop, pathology_tasks, select_triggering_prompts,
    with_pathology_penalty,
)
from glm45.rl.rewards import Reward, compute_reward

CLEAN = ("The water cycle moves water between the oceans, the air and the land. Heat from the sun "
         "evaporates water, which condenses into clouds and falls as rain. Rivers carry it back to the sea.")


def test_clean_answers_have_no_pathology():
    assert not diagnose(CLEAN, "Explain the water cycle.").any
    listing = "\n".join(f"{i}. {animal}" for i, animal in enumerate(
        ["cat", "dog", "horse", "zebra", "otter", "eagle", "shark", "camel"], 1))
    assert not diagnose(listing, "List animals.").any
    code = "Use this:\n```python\nfor i in range(3):\n    print(i)\n```\nIt prints **three** lines."
    assert not diagnose(code, "Show a loop.").any
    zh = "注意力机制（attention）让模型在计算输出时关注相关的词（token），并据此分配权重。"
    assert not diagnose(zh, "用中文解释 attention 机制。").any  # technical terms in a Chinese answer are fine


def test_repetition():
    loop = "Here are the animals: cat, dog, " + "and the cat and the dog " * 20
    report = diagnose(loop, "List animals.")
    assert report.repetitive and report.tail_loop and report.repeated_ngrams > 0.5
    lines = "\n".join(["I am not sure what to say here."] * 6)
    assert diagnose(lines, "Say something.").repeated_lines > 0.5
    assert diagnose("我爱我家。" * 30, "写一首诗。").repetitive
    assert not has_tail_loop("Wait...!!!") and has_tail_loop("ok " + "bla " * 10)


def test_language_mixing():
    report = diagnose("The attention mechanism lets the model 关注 the relevant tokens.", "Explain attention.")
    assert report.mixed and report.language == "en"
    assert diagnose("注意力机制 is a way for the model to focus on the relevant tokens and it works.",
                    "用中文解释 attention 机制。").mixed
    # a script the prompt itself uses is allowed, and code is not prose
    assert not diagnose("The idiom 画蛇添足 means overdoing it.", "Explain the idiom 画蛇添足 in English.").mixed
    assert not diagnose("Print it with `print('你好')`.", "How do I print a greeting?").mixed
    assert diagnose("Рекурсия — это когда функция вызывает себя. C'est simple.", "Объясни рекурсию.").mixed


@pytest.mark.parametrize("text, issue", [
    ("Code:\n```python\nprint(1)\n", "unclosed code fence"),
    ("The answer is 4.</think>", "chat markup"),
    ("Done.<|user|>", "chat markup"),
    ("This is **important.", "unbalanced **"),
    ("The formula $$x^2", "LaTeX"),
    ("| a | b |\n|---|---|\n| 1 | 2 | 3 |", "table"),
    ("   ", "empty answer"),
])
def test_formatting_mistakes(text, issue):
    assert any(issue in found for found in format_issues(text)), format_issues(text)


def test_pathology_reward_and_penalty():
    task = pathology_tasks()[0]
    assert task["reward_kind"] == "pathology"
    assert compute_reward(task, "<think>ok</think>\n" + CLEAN).value == 1.0
    bad = compute_reward(task, "cat " * 50 + "</think>")
    assert bad.value < 1.0 and bad.info["repetitive"]
    env = SingleTurnEnv()
    env.reset(task)
    assert env.step({"role": "assistant", "content": CLEAN}).reward == 1.0

    penalized = with_pathology_penalty(lambda t, o: Reward(1.0, {"base": True}), weight=1.0)
    assert penalized({"prompt": "Say hi."}, "Hello there, how are you today?").value == 1.0
    r = penalized({"prompt": "Say hi."}, "Hello **there")
    assert r.value == 0.75 and r.info["base"] and r.info["pathology"]["format_issues"]


def test_targeted_prompt_selection():
    assert len(PATHOLOGY_PROMPTS) >= 20
    assert {t for p in PATHOLOGY_PROMPTS for t in p["targets"]} == {"repetition", "mixing", "format"}

    def generate(prompts, k):  # a model that loops on enumerations and is fine otherwise
        return [["one two three " * 20 if "List" in p else CLEAN] * k for p in prompts]

    kept = select_triggering_prompts(PATHOLOGY_PROMPTS[:6], generate, samples=4, min_rate=0.5)
    assert [p["prompt"] for p in kept] == ["List 100 different animals, one per line."] and kept[0]["rate"] == 1.0
