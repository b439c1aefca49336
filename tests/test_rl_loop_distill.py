"""Iterative self-distillation: the policy's verified outputs become SFT data for a new start."""

from __future__ import annotations

import json

import pytest

from glm45.rl.distill import DistillConfig, collect, distill, iterate
from glm45.rl.rewards import Reward, register_reward
from rl_helpers import tiny_dir

register_reward("test_even", lambda task, output: Reward(float(len(output) % 2 == 0)), replace=True)


def _tasks(n: int) -> list[dict]:
    return [{"id": f"e{i}", "reward_kind": "test_even", "messages": [{"role": "user", "content": f"Talk {i}."}]}
            for i in range(n)]


def test_collect_keeps_verified_outputs_as_chat_samples():
    cfg = DistillConfig(samples_per_prompt=4, keep_per_prompt=2, max_tokens=6, max_seq_len=96)
    docs, stats = collect(tiny_dir(), _tasks(4), cfg)
    assert stats["prompts"] == 4 and 0 < stats["samples"] == len(docs) <= 8
    for d in docs:
        assert d.messages[0] == {"role": "user", "content": d.messages[0]["content"]}
        assert d.messages[-1]["role"] == "assistant" and d.meta["reward"] == 1.0
    per_prompt = {}
    for d in docs:
        per_prompt[d.messages[0]["content"]] = per_prompt.get(d.messages[0]["content"], 0) + 1
    assert max(per_prompt.values()) <= 2


@pytest.mark.slow
def test_iterate_distils_between_rl_rounds(tmp_path):
    calls = []

    def fake_rl(model_dir, out):
        calls.append(model_dir)
        return {"model_dir": tiny_dir(), "reward_first": 0.1, "reward_last": 0.2}

    cfg = DistillConfig(samples_per_prompt=4, max_tokens=6, max_seq_len=96, sft_steps=2, sft_seq_len=64)
    summary = iterate(1, tiny_dir(), tmp_path, _tasks(4), cfg, rl=fake_rl, sft_base=tiny_dir())
    distilled = str(tmp_path / "round0" / "sft" / "model")
    assert calls == [tiny_dir(), distilled]
    assert (tmp_path / "round0" / "sft" / "model" / "config.json").is_file()
    data = (tmp_path / "round0" / "sft" / "distill_data.jsonl").read_text().splitlines()
    assert len(data) == summary["history"][0]["distill"]["samples"] > 0
    assert json.loads((tmp_path / "summary.json").read_text())["rounds"] == 1


def test_distill_without_verified_output_fails(tmp_path):
    register_reward("test_never", lambda task, output: Reward(0.0), replace=True)
    tasks = [{"id": "n", "reward_kind": "test_never", "prompt": "Hi."}]
    with pytest.raises(ValueError, match="no verified output"):
        distill(tiny_dir(), tiny_dir(), tasks, tmp_path, DistillConfig(samples_per_prompt=2, max_tokens=4,
                                                                         max_seq_len=64))
