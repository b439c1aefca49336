"""LLM-judge rewards: rubrics, verdict parsing, retries, merging with a reward model."""

from __future__ import annotations

import pytest

from glm45.envs.base import EnvError
from glm45.envs.judge import LLMJudge, holistic_reward
from glm45.rl.rewards import Reward
from rl_helpers import ScriptedChat


def test_objective_rubric_uses_the_reference():
    backend = ScriptedChat(["The response says 4, as the reference does.\nVERDICT: CORRECT", "VERDICT: INCORRECT"])
    judge = LLMJudge(backend)
    j = judge.judge("What is 2 + 2?", "It is 4.", reference="4")
    assert j.score == 1.0 and j.rubric == "objective"
    text = backend.requests[0].messages[0]["content"]
    assert "[Reference answer]\n4" in text and "It is 4." in text and "VERDICT" in text
    assert backend.requests[0].temperature == 0.0 and not backend.requests[0].enable_thinking
    assert judge.judge("What is 2 + 2?", "5", reference="4").score == 0.0


def test_subjective_rubric_scores():
    judge = LLMJudge(ScriptedChat(["Clear and helpful. SCORE: 10", "Off topic.\nSCORE: **1**", "SCORE: 7"]))
    scores = [j.score for j in judge.judge_many([("Tell a joke.", "a", None), ("Tell a joke.", "b", None),
                                                  ("Tell a joke.", "c", None)])]
    assert scores == [1.0, 0.0, pytest.approx(6 / 9)]
    assert LLMJudge.read("subjective", "SCORE: 11") is None  # out of range
    assert LLMJudge.read("objective", "VERDICT: CORRECT ... on reflection VERDICT: INCORRECT") == 0.0


def test_unreadable_reply_is_retried_then_scored_zero():
    backend = ScriptedChat(["I think it's fine.", "SCORE: 8"])
    j = LLMJudge(backend).judge("q", "a")
    assert j.score == pytest.approx(7 / 9) and [r.seed for r in backend.requests] == [0, 1]
    reward = LLMJudge(ScriptedChat(["hmm", "still hmm"])).as_reward()
    r = reward({"prompt": "q"}, "answer")
    assert r.value == 0.0 and "judge_error" in r.info


def test_as_reward_judges_the_answer_not_the_reasoning():
    backend = ScriptedChat(["VERDICT: CORRECT"])
    reward = LLMJudge(backend).as_reward()
    task = {"messages": [{"role": "user", "content": "Capital of France?"}], "answer": "Paris"}
    assert reward(task, "<think>secret chain of thought</think>\nParis.").value == 1.0
    sent = backend.requests[0].messages[0]["content"]
    assert "secret chain" not in sent and "USER: Capital of France?" in sent and "Paris." in sent
    with pytest.raises(EnvError, match="messages"):
        reward({"id": "x"}, "hi")


def test_holistic_merge():
    judge = LLMJudge(ScriptedChat(["SCORE: 10"]))
    merged = holistic_reward(judge, lambda t, o: Reward(0.5, {"rm_score": 0.0}), judge_weight=0.5)
    r = merged({"prompt": "hi"}, "hello")
    assert r.value == 0.75 and r.info["reward_model"]["value"] == 0.5 and r.info["judge"]["value"] == 1.0
    only_rm = holistic_reward(reward_model=lambda t, o: Reward(0.25))
    assert only_rm({"prompt": "hi"}, "x").value == 0.25
    with pytest.raises(EnvError):
        holistic_reward()
    with pytest.raises(EnvError, match="rubric"):
        LLMJudge(ScriptedChat([]), subjective_rubric="no fields")
