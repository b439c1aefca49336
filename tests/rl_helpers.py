"""Shared pieces for the RL loop, rollout and environment tests: a tiny checkpoint, a reward that
varies within groups even for a random model, a scripted rollout engine and a scripted chat backend."""

from __future__ import annotations

from collections.abc import Sequence


from conftest_serve import tiny_checkpoint
from glm45.eval.backend import ChatResult, ChatSample
from glm45.rl.rewards import Reward, register_reward
from glm45.rl.rollout import Completion


def tiny_dir() -> str:
    """A random tiny checkpoint with tokenizer, made once per test process (shared with the
    server tests)."""
    return tiny_checkpoint()


def parity_reward(task, output: str) -> Reward:
    """1 for an even number of characters: random outputs give groups with reward variance."""
    return Reward(float(len(output) % 2 == 0))


register_reward("test_parity", parity_reward, replace=True)


def parity_tasks(n: int, offset: int = 0) -> list[dict]:
    return [{"id": f"p{offset + i}", "reward_kind": "test_parity", "prompt": f"Say something about {offset + i}."}
            for i in range(n)]


class ScriptedEngine:
    """A rollout engine that answers each request with the next scripted text (plus the stop
    token that would end it), with made-up logprobs."""

    def __init__(self, tokenizer, turns: Sequence[tuple[str, str]]) -> None:
        self.tokenizer = tokenizer
        self.turns = list(turns)  # (text, stop token)
        self.prompts: list[list[int]] = []

    def generate(self, prompts, params) -> list[list[Completion]]:
        out = []
        for p in prompts:
            self.prompts.append(list(p))
            text, stop = self.turns.pop(0)
            ids = self.tokenizer.encode(text) + [self.tokenizer.special_ids[stop]]
            out.append([Completion(ids, text, "stop", [-0.5] * len(ids))])
        return out


class ScriptedChat:
    """A chat backend (a judge, a simulated user) that answers each request with the next
    scripted reply and records what it was asked."""

    name = "scripted-chat"

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.requests: list = []

    def chat(self, requests, on_result=None):
        self.requests += requests
        return [ChatResult([ChatSample(content=self.replies.pop(0))]) for _ in requests]
