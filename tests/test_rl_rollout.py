"""Rollout: groups of scored samples from the in-process engine, HTTP engines (OpenAI-style
and /generate) and multi-turn environments."""

from __future__ import annotations

import pytest
import torch

from glm45.chat import render
from glm45.infer import Engine, SamplingParams
from glm45.rl.buffer import PromptItem
from glm45.rl.errors import RLError
from glm45.rl.rollout import HTTPEngine, LocalEngine, RolloutConfig, RolloutStats, rollout, task_prompt
from glm45.rl.sample import Status
from glm45.tokenizer import GLMTokenizer
from rl_helpers import ScriptedEngine, parity_tasks, tiny_dir


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_pretrained(tiny_dir(), dtype=torch.float32, max_seq_len=128, max_batch_size=16)


def test_local_rollout_groups(engine):
    tok = engine.tokenizer
    items = [PromptItem(7, t) for t in parity_tasks(1)] + [PromptItem(3, t) for t in parity_tasks(1, offset=1)]
    cfg = RolloutConfig(group_size=3, max_tokens=8, seed=5)
    stats = RolloutStats()
    groups = rollout(LocalEngine(engine), tok, items, cfg, weight_version=4, stats=stats)
    assert [g[0].group_id for g in groups] == [7, 3]
    for item, group in zip(items, groups):
        messages, tools, thinking = task_prompt(item.prompt)
        want = tok.encode(render(messages, None, enable_thinking=thinking, add_generation_prompt=True))
        assert [s.index for s in group] == [0, 1, 2]
        for s in group:
            assert s.prompt_ids == want
            assert s.prompt is item.prompt and s.weight_version == 4
            assert 1 <= len(s.response_ids) <= 8
            assert len(s.rollout_logprobs) == len(s.response_ids) and all(lp <= 0 for lp in s.rollout_logprobs)
            assert s.status in (Status.COMPLETED, Status.TRUNCATED)
            assert s.reward == float(len(s.response_text) % 2 == 0)
        assert len({tuple(s.response_ids) for s in group}) > 1  # K different samples, not one repeated
    assert stats.samples == 6 and stats.tokens == sum(len(s.response_ids) for g in groups for s in g)
    again = rollout(LocalEngine(engine), tok, items, cfg)
    assert [[s.response_ids for s in g] for g in again] == [[s.response_ids for s in g] for g in groups]


def test_rollout_logprobs_match_the_model(engine):
    from glm45.rl.grpo import response_logprobs

    tok = engine.tokenizer
    (group,) = rollout(LocalEngine(engine), tok, [PromptItem(0, parity_tasks(1)[0])],
                       RolloutConfig(group_size=2, max_tokens=6))
    s = group[0]
    ids = torch.tensor([s.prompt_ids + s.response_ids])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, len(s.prompt_ids):] = True
    with torch.no_grad():
        lp = response_logprobs(engine.model, ids, mask)[0, len(s.prompt_ids):]
    assert torch.allclose(lp, torch.tensor(s.rollout_logprobs), atol=1e-4)


def test_task_prompt_errors():
    with pytest.raises(RLError, match="messages"):
        task_prompt({"reward_kind": "math"})
    with pytest.raises(RLError, match="dict record"):
        task_prompt("What is 1 + 1?")


def test_multi_turn_episode_masks_environment_tokens():
    """An oracle plays a tool task through the function_calling environment: model turns are
    trained, the tool result is masked, the reward is the environment's, and the token ids are
    exactly the chat template's rendering of the finished conversation."""
    from glm45.envs.base import message_text
    from glm45.rl.task_sets import tool_agent_tasks

    tok = GLMTokenizer.from_pretrained(tiny_dir())
    task = tool_agent_tasks(1, 0, kinds=("single",))[0]
    from glm45.tasks import ToolTask

    ref = ToolTask(**task["task"]).reference_messages(thinking=False)
    # thinking off: the generation prompt already holds the empty think block; the model goes on after it
    turns = [(message_text(ref[:i], m, task["task"]["tools"]).removeprefix("\n<think></think>"),
              "<|observation|>" if m.get("tool_calls") else "<|user|>")
             for i, m in enumerate(ref) if m["role"] == "assistant"]
    engine = ScriptedEngine(tok, turns)
    (group,) = rollout(engine, tok, [PromptItem(0, task)], RolloutConfig(group_size=1, max_turns=4))
    s = group[0]
    assert s.reward == 1.0 and s.metadata["turns"] == 2 and s.metadata["end"] == "done"
    first = len(tok.encode(turns[0][0])) + 1
    assert s.loss_mask[:first] == [1] * first  # the tool call and its <|observation|>
    env_part = s.loss_mask[first:s.loss_mask.index(1, first)]
    assert env_part and set(env_part) == {0}  # the tool result and the next <|assistant|>
    assert sum(s.loss_mask) == sum(len(tok.encode(t)) + 1 for t, _ in turns)
    assert [lp for lp, m in zip(s.rollout_logprobs, s.loss_mask) if m] == [-0.5] * sum(s.loss_mask)
    # the second request was the whole trajectory so far
    assert engine.prompts[1] == s.prompt_ids + s.response_ids[:len(engine.prompts[1]) - len(s.prompt_ids)]
    rendered = render(s.metadata["messages"], task["task"]["tools"], enable_thinking=False)
    assert tok.decode(s.prompt_ids + s.response_ids[:-1]) == rendered


def test_multi_turn_format_error_ends_with_zero():
    from glm45.rl.task_sets import tool_agent_tasks

    tok = GLMTokenizer.from_pretrained(tiny_dir())
    task = tool_agent_tasks(1, 0, kinds=("single",))[0]
    engine = ScriptedEngine(tok, [("<tool_call>calculator\n<arg_key>expression</arg_value>", "<|observation|>")])
    (group,) = rollout(engine, tok, [PromptItem(0, task)], RolloutConfig(group_size=1))
    assert group[0].reward == 0.0 and group[0].metadata["end"] == "format_error"
    assert set(group[0].loss_mask) == {1}


def _serve(engine: Engine):
    from glm45.serve.app import create_app
    from glm45.serve.backend import EngineBackend
    from glm45.serve.server import ServerThread
    from glm45.serve.service import ServeConfig

    return ServerThread(create_app(EngineBackend(engine), ServeConfig(served_model_name="tiny")))


def test_http_engine_openai_completions(engine):
    tok = engine.tokenizer
    ids = tok.encode(render([{"role": "user", "content": "hello"}], add_generation_prompt=True))
    with _serve(engine) as server:
        http = HTTPEngine(server.base_url, tok, api="openai")
        try:
            (choices,) = http.generate([ids], SamplingParams(max_tokens=6, temperature=1.0, n=2, seed=3, logprobs=0))
        finally:
            http.close()
    assert http.model == "tiny" and len(choices) == 2
    local = engine.generate([ids], SamplingParams(max_tokens=6, temperature=1.0, n=2, seed=3, logprobs=0))[0].samples
    for c, want in zip(choices, local):
        assert c.finish_reason == want.finish_reason
        body = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
        assert tok.decode(body) == c.text
        if c.logprobs is not None:  # every token string named one vocabulary entry: the exact ids
            assert c.token_ids == want.token_ids
            assert c.logprobs == pytest.approx([e["logprob"] for e in want.logprobs], abs=1e-5)
        else:  # some token held part of a character: re-encoded text, logprobs left to the trainer
            assert c.text == want.text


def test_http_engine_generate_api(engine):
    """The SGLang-style /generate format, served by a stand-in around the local engine."""
    from fastapi import FastAPI

    from glm45.serve.server import ServerThread

    app = FastAPI()
    seen = {}

    @app.post("/generate")
    def generate(body: dict):
        sp = body["sampling_params"]
        seen.update(body)
        out = []
        for i, ids in enumerate(body["input_ids"]):
            r = engine.generate([ids], SamplingParams(max_tokens=sp["max_new_tokens"], temperature=sp["temperature"],
                                                      seed=i, logprobs=0))[0]
            out.append({"text": r.text, "output_ids": r.token_ids, "meta_info": {
                "finish_reason": {"type": r.finish_reason},
                "output_token_logprobs": [[e["logprob"], e["token_id"], None] for e in r.logprobs]}})
            seen.setdefault("results", []).append(r)
        return out

    tok = engine.tokenizer
    with ServerThread(app) as server:
        http = HTTPEngine(server.base_url, tok, api="generate")
        (choices,) = http.generate([[3, 4, 5, 6]], SamplingParams(max_tokens=5, n=2, temperature=1.0))
        http.close()
    assert seen["return_logprob"] is True and seen["sampling_params"]["skip_special_tokens"] is False
    for c, r in zip(choices, seen["results"]):
        assert c.token_ids == r.token_ids
        assert c.logprobs == pytest.approx([e["logprob"] for e in r.logprobs])
        assert c.finish_reason == r.finish_reason


def test_http_engine_reports_server_errors():
    tok = GLMTokenizer.from_pretrained(tiny_dir())
    with pytest.raises(RLError, match="api must be"):
        HTTPEngine("http://127.0.0.1:1", tok, api="grpc")
    http = HTTPEngine("http://127.0.0.1:1", tok, model="m", retries=0, timeout_s=2)
    with pytest.raises(RLError, match="failed after 1 tries"):
        http.generate([[1, 2]], SamplingParams(max_tokens=2))


def test_agent_prompt_longer_than_the_context_is_an_error():
    from glm45.rl.task_sets import tool_agent_tasks

    tok = GLMTokenizer.from_pretrained(tiny_dir())
    task = tool_agent_tasks(1, 0, kinds=("single",))[0]
    with pytest.raises(RLError, match="max_context is 64"):
        rollout(ScriptedEngine(tok, []), tok, [PromptItem(0, task)], RolloutConfig(group_size=1, max_context=64))


def test_search_tasks_split_and_env_records():
    from glm45.rl.task_sets import build_tasks

    train, test = build_tasks("search", 4, 0), build_tasks("search", 4, 0, split="test", unique=True)
    assert len(train) == len(test) == 4 and not {t["question"] for t in train} & {t["question"] for t in test}
    assert all(t["env"] == "search" and t["env_config"]["max_turns"] == 8 for t in train)


def test_ifeval_tasks_split_and_reward():
    from glm45.rl.rewards import compute_reward
    from glm45.rl.task_sets import build_tasks
    from glm45.tasks import TaskError

    train, test = build_tasks("ifeval", 40, 0), build_tasks("ifeval", 12, 1, split="test", unique=True)
    assert len(train) == 40 and len(test) == 12 and len({t["prompt"] for t in test}) == 12
    assert not {t["prompt"] for t in train} & {t["prompt"] for t in test}
    lower = next(t for t in build_tasks("ifeval", 400, 0) if [c["kind"] for c in t["constraints"]] == ["all_lowercase"])
    assert compute_reward(lower, "tea is made with hot water.").value == 1.0
    assert compute_reward(lower, "Tea is made with hot water.").value == 0.0
    with pytest.raises(TaskError, match="split"):
        build_tasks("ifeval", 3, 0, split="dev")


@pytest.mark.parametrize("assistant", [
    {"role": "assistant", "content": "<think>the user wants a reminder</think>Which day?"},
    {"role": "assistant", "content": "Which day?", "reasoning_content": "the user wants a reminder"},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_time", "arguments": {"tz": "UTC"}}}]},
])
def test_observation_suffix_after_reasoning_and_a_user_reply(assistant):
    """A simulated user's reply after a turn with reasoning: the template renders that earlier
    reasoning away, which must not break the episode (it once raised 'prefix-consistently')."""
    from glm45.rl.rollout import _env_suffix

    observation = ([{"role": "tool", "content": "12:00"}] if assistant.get("tool_calls")
                   else [{"role": "user", "content": "Tuesday."}])
    suffix = _env_suffix(assistant, observation, [], True)
    expected = "<|observation|>" if assistant.get("tool_calls") else "<|user|>"
    assert suffix.lstrip("\n").startswith(expected) and suffix.endswith("<|assistant|>")
    assert ("Tuesday." in suffix) != bool(assistant.get("tool_calls")) and "reminder" not in suffix
