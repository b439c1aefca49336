"""The interface every RL environment follows, and a driver that runs policies through them.

An environment is one episode at a time (make one instance per concurrent episode):

    prompt = env.reset(task)            # Reset(messages, tools): what the policy answers first
    obs, reward, done, info = env.step(assistant_message)

`assistant_message` is what the policy wrote: raw model text (with `<think>` and `<tool_call>`
markup, as the rollout engine produces it) or an OpenAI-style assistant message (as an HTTP
backend returns it). `step` returns the messages the environment answers with (tool results, a
simulated user's turn) and `done=False`, or `None` and `done=True` with the episode's reward.

Rules shared by every environment (the paper's §3.3.2 "process format penalty"):
- A turn whose tool calls are malformed (markup that breaks the template's grammar, an unknown
  tool, arguments that violate the tool's schema or are not JSON) halts the episode with reward 0.
- A well-formed call that fails (a missing file, an unknown page) is answered with an error
  message; the policy may recover.
- After `max_turns` assistant turns the episode ends; each environment says what a cut-off
  trajectory earns (`_out_of_turns`).

`run_episodes` steps many episodes in lockstep, asking the policy for all pending turns at once
(one batched request for a model backend) and stepping environments on a thread pool (coding
episodes spend their time in sandboxed test runs). `accuracy_by_turns` measures accuracy against
the allowed number of interaction turns (the paper's Figure 8).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from glm45.chat import parse, render
from glm45.rl.tool_format import check_tool_calls
from glm45.tasks.tool_schema import ToolCallError, parse_arguments, validate_call

__all__ = [
    "BackendPolicy", "EnvError", "Environment", "EpisodeResult", "Policy", "PolicyRequest", "Reset",
    "ScriptedPolicy", "SingleTurnEnv", "Step", "ToolEnvironment", "Turn", "accuracy_by_turns", "answer_text",
    "make_env", "message_text", "read_turn", "register_env", "registered_envs", "run_episodes",
]

Message = dict[str, Any]


class EnvError(ValueError):
    """Bad environment input: a malformed task, a step on a finished episode, an unknown name."""


class Reset(NamedTuple):
    messages: list[Message]  # the prompt (system / user messages)
    tools: list[dict]  # OpenAI-style tool schemas offered to the policy ([] for none)


class Step(NamedTuple):
    observation: list[Message] | None  # the environment's answer; None once done
    reward: float | None  # set when done
    done: bool
    info: dict[str, Any]


# ---- reading an assistant turn --------------------------------------------------------------


@dataclass
class Turn:
    """One assistant turn, decoded, with everything wrong with its tool-call format."""

    content: str
    reasoning_content: str | None
    tool_calls: list[dict[str, Any]]  # [{"name", "arguments": dict}]
    format_errors: list[str]

    def message(self, call_ids: Sequence[str]) -> Message:
        msg: Message = {"role": "assistant", "content": self.content}
        if self.reasoning_content:
            msg["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            msg["tool_calls"] = [{"id": cid, "type": "function",
                                  "function": {"name": c["name"], "arguments": dict(c["arguments"])}}
                                 for cid, c in zip(call_ids, self.tool_calls)]
        return msg


def _message_calls(raw_calls: Any, tools: Sequence[Mapping]) -> tuple[list[dict], list[str]]:
    """Calls of an OpenAI-style message (or ChatSample-style `{"name", "arguments"}`) and their
    format errors against `tools`."""
    if raw_calls in (None, []):
        return [], []
    if not isinstance(raw_calls, Sequence) or isinstance(raw_calls, (str, bytes)):
        return [], [f"tool_calls must be a list, got {type(raw_calls).__name__}"]
    calls, errors = [], []
    for j, call in enumerate(raw_calls):
        if isinstance(call, Mapping) and "invalid_arguments" in call:
            errors.append(f"call {j}: arguments are not a JSON object: {str(call['invalid_arguments'])[:80]!r}")
            continue
        fn = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            errors.append(f"call {j}: not a tool call: {str(call)[:80]!r}")
            continue
        try:
            arguments = parse_arguments(fn.get("arguments"))
        except ToolCallError as e:
            errors.append(f"call {j}: {e}")
            continue
        errors += [f"call {j}: {p}" for p in validate_call({"name": fn["name"], "arguments": arguments}, list(tools))]
        calls.append({"name": fn["name"], "arguments": arguments})
    return calls, errors


def read_turn(assistant_message: str | Mapping, tools: Sequence[Mapping], *, enable_thinking: bool = True) -> Turn:
    """Decode raw model text or an assistant message; check its tool calls strictly."""
    if isinstance(assistant_message, str):
        check = check_tool_calls(assistant_message, tools, enable_thinking=enable_thinking)
        parsed = parse(assistant_message, tools, enable_thinking=enable_thinking)
        return Turn(parsed["content"], parsed["reasoning_content"], check.calls, list(check.errors))
    if isinstance(assistant_message, Mapping):
        role = assistant_message.get("role", "assistant")
        if role != "assistant":
            raise EnvError(f"step() takes the assistant's turn, got a message with role {role!r}")
        content = assistant_message.get("content") or ""
        if not isinstance(content, str):
            raise EnvError(f"assistant content must be a string, got {type(content).__name__}")
        calls, errors = _message_calls(assistant_message.get("tool_calls"), tools)
        reasoning = assistant_message.get("reasoning_content") or None
        return Turn(content, reasoning, calls, errors)
    raise EnvError(f"step() takes model text or an assistant message dict, got {type(assistant_message).__name__}")


def message_text(prefix: Sequence[Mapping], message: Mapping, tools: Sequence[Mapping] | None = None) -> str:
    """The raw text a model would have written for assistant `message` after `prefix` (what the
    chat template renders for it), so rewards defined on model text also score API messages."""
    before = render(list(prefix), tools or None, add_generation_prompt=True)
    full = render([*prefix, message], tools or None)
    if not full.startswith(before):
        raise EnvError("the chat template did not render the conversation prefix-consistently")
    return full[len(before):]


def answer_text(response: str | Mapping) -> str:
    """The visible answer of a response: content without the reasoning (text after `</think>`)."""
    if isinstance(response, Mapping):
        return str(response.get("content") or "")
    if not isinstance(response, str):
        raise EnvError(f"a response must be text or an assistant message, got {type(response).__name__}")
    return response.rsplit("</think>", 1)[-1].strip()


# ---- environments ---------------------------------------------------------------------------


class Environment(ABC):
    """One episode at a time; see the module docstring for the contract."""

    def __init__(self, max_turns: int = 16) -> None:
        if not isinstance(max_turns, int) or max_turns < 1:
            raise EnvError(f"max_turns must be a positive int, got {max_turns!r}")
        self.max_turns = max_turns
        self.task: Any = None
        self.tools: list[dict] = []
        self.messages: list[Message] = []  # the whole trajectory so far (prompt included)
        self.turns = 0
        self.done = True
        self.reward: float | None = None
        self.info: dict[str, Any] = {}
        self._last: tuple[str | Mapping, int] = ("", 0)  # the latest turn as given, and where it went

    # ---- the contract ---------------------------------------------------------------------
    def reset(self, task: Any) -> Reset:
        self.turns, self.done, self.reward, self.info = 0, False, None, {}
        self.task = task
        messages, tools = self._start(task)
        self.tools = list(tools)
        self.messages = [dict(m) for m in messages]
        return Reset([dict(m) for m in messages], list(self.tools))

    def step(self, assistant_message: str | Mapping) -> Step:
        if self.done:
            raise EnvError("the episode is over (or was never started); call reset(task) first")
        turn = read_turn(assistant_message, self.tools)
        self._last = (assistant_message, len(self.messages))
        self.turns += 1
        ids = [f"call_{self.turns}_{j}" for j in range(len(turn.tool_calls))]
        self.messages.append(turn.message(ids))
        if turn.format_errors:  # the process format penalty: halt, reward 0
            return self._finish(0.0, {"end": "format_error", "format_errors": turn.format_errors})
        observation, reward, done, info = self._act(turn, ids)
        if done:
            return self._finish(float(reward or 0.0), {"end": "done", **info})
        if self.turns >= self.max_turns:
            cut_reward, cut_info = self._out_of_turns()
            return self._finish(cut_reward, {"end": "max_turns", **info, **cut_info})
        self.messages += [dict(m) for m in observation or []]
        return Step(observation, None, False, info)

    @property
    def last_output(self) -> str:
        """The latest assistant turn as raw model text (rendered when it came as a message)."""
        given, at = self._last
        return given if isinstance(given, str) else message_text(self.messages[:at], given, self.tools)

    def _finish(self, reward: float, info: dict[str, Any]) -> Step:
        self.done, self.reward = True, float(reward)
        self.info = {"turns": self.turns, **info}
        return Step(None, self.reward, True, dict(self.info))

    # ---- what an environment defines ------------------------------------------------------
    @abstractmethod
    def _start(self, task: Any) -> tuple[list[Message], list[dict]]:
        """(prompt messages, tools) for `task`; raise EnvError on a malformed task."""

    @abstractmethod
    def _act(self, turn: Turn, call_ids: list[str]) -> Step:
        """Answer a well-formed turn: (observation, reward, done, info)."""

    def _out_of_turns(self) -> tuple[float, dict[str, Any]]:
        """(reward, info) of a trajectory cut off at max_turns; by default nothing is earned."""
        return 0.0, {}


class ToolEnvironment(Environment):
    """An agent loop: tool calls are run and answered with tool messages; `_text_turn` decides
    what a turn without calls does (the final answer, or a message to a simulated user)."""

    @abstractmethod
    def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Run a well-formed call; failures are answered with an error text, never raised."""

    @abstractmethod
    def _text_turn(self, turn: Turn) -> Step:
        """Answer a turn that calls no tool."""

    def _act(self, turn: Turn, call_ids: list[str]) -> Step:
        if not turn.tool_calls:
            return self._text_turn(turn)
        observation = [{"role": "tool", "tool_call_id": cid, "content": self.call_tool(c["name"], c["arguments"])}
                       for cid, c in zip(call_ids, turn.tool_calls)]
        return Step(observation, None, False, {})


class SingleTurnEnv(Environment):
    """A task record scored by a reward of `glm45.rl.rewards` as a one-turn environment.

    The record holds the prompt as `messages` (or a `prompt` string), optional `tools`, and
    `reward_kind` (any registered kind: math, code, function_call, ifeval, pathology, ...).
    The reward is `compute_reward(record, raw_text)` of the single assistant turn."""

    def __init__(self, max_turns: int = 1) -> None:
        super().__init__(max_turns)

    def _start(self, task: Any) -> tuple[list[Message], list[dict]]:
        if not isinstance(task, Mapping) or not isinstance(task.get("reward_kind"), str):
            raise EnvError(f"a single-turn task needs a 'reward_kind', got {str(task)[:200]}")
        from glm45.rl.errors import RLError
        from glm45.rl.rollout import task_prompt

        try:
            messages, tools, _ = task_prompt(task)
        except RLError as e:
            raise EnvError(str(e)) from None
        return messages, tools

    def _act(self, turn: Turn, call_ids: list[str]) -> Step:
        from glm45.rl.rewards import compute_reward

        reward = compute_reward(self.task, self.last_output)
        return Step(None, reward.value, True, dict(reward.info))


# ---- registry -------------------------------------------------------------------------------

_ENVS: dict[str, Callable[..., Environment]] = {}


def register_env(name: str, factory: Callable[..., Environment], *, replace: bool = False) -> None:
    """Make `make_env(name, **config)` build environments with `factory(**config)`."""
    if name in _ENVS and not replace:
        raise EnvError(f"environment {name!r} is already registered")
    _ENVS[name] = factory


register_env("single_turn", lambda **kw: SingleTurnEnv(**kw))


def registered_envs() -> list[str]:
    """Names usable with `make_env` (importing `glm45.envs` registers the built-in ones)."""
    return sorted(_ENVS)


def make_env(name: str, **config: Any) -> Environment:
    if name not in registered_envs():
        raise EnvError(f"unknown environment {name!r}; registered: {', '.join(registered_envs())}")
    try:
        return _ENVS[name](**config)
    except TypeError as e:
        raise EnvError(f"bad configuration for environment {name!r}: {e}") from None


# ---- policies and the episode driver --------------------------------------------------------


@dataclass
class PolicyRequest:
    episode: int  # index of the episode in the batch given to run_episodes
    turn: int  # assistant turns taken so far in this episode (0: a fresh episode)
    messages: list[Message]
    tools: list[dict]
    task: Any  # the task record (scripted policies may read it; a model must not)


class Policy(Protocol):
    def act(self, requests: Sequence[PolicyRequest]) -> list[str | Message]:
        """One assistant turn (model text or message) per request, in order."""


class ScriptedPolicy:
    """A policy made of one agent object per episode: `make_agent(task)` returns something with
    `act(messages, tools) -> str | message` (oracles and noisy baselines in tests and Figure 8)."""

    def __init__(self, make_agent: Callable[[Any], Any]) -> None:
        self.make_agent = make_agent
        self._agents: dict[int, Any] = {}

    def act(self, requests: Sequence[PolicyRequest]) -> list[str | Message]:
        out = []
        for r in requests:
            if r.turn == 0 or r.episode not in self._agents:
                self._agents[r.episode] = self.make_agent(r.task)
            out.append(self._agents[r.episode].act(r.messages, r.tools))
        return out


class BackendPolicy:
    """A model behind any `glm45.eval` backend (OpenAIBackend for a served model, a local engine).
    All pending turns go out as one batch, so the backend can run them concurrently."""

    def __init__(self, backend: Any, *, temperature: float = 0.6, top_p: float = 1.0, max_tokens: int = 4096,
                 enable_thinking: bool = True, seed: int = 0) -> None:
        self.backend = backend
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.enable_thinking, self.seed = enable_thinking, seed
        self._calls = 0

    def act(self, requests: Sequence[PolicyRequest]) -> list[Message]:
        from glm45.eval.backend import ChatRequest

        self._calls += 1
        batch = [ChatRequest(messages=[_wire(m) for m in r.messages], tools=r.tools or None,
                             temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                             enable_thinking=self.enable_thinking,
                             seed=(self.seed + 7919 * self._calls + r.episode) % 2**31) for r in requests]
        out = []
        for result in self.backend.chat(batch):
            s = result.samples[0]
            msg: Message = {"role": "assistant", "content": s.content}
            if s.reasoning_content:
                msg["reasoning_content"] = s.reasoning_content
            if s.tool_calls:
                msg["tool_calls"] = [dict(c) for c in s.tool_calls]
            out.append(msg)
        return out


def _wire(message: Message) -> Message:
    """A message as the OpenAI API takes it (tool-call arguments as JSON strings)."""
    if not message.get("tool_calls"):
        return dict(message)
    calls = [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
             for c in message["tool_calls"]]
    return {**message, "tool_calls": calls}


@dataclass
class EpisodeResult:
    reward: float
    turns: int
    info: dict[str, Any]
    messages: list[Message] = field(default_factory=list)


def run_episodes(envs: Sequence[Environment], tasks: Sequence[Any], policy: Policy, *,
                 workers: int = 1) -> list[EpisodeResult]:
    """Run `envs[i]` on `tasks[i]` to the end, all in lockstep; environments step on `workers` threads."""
    if len(envs) != len(tasks):
        raise EnvError(f"{len(envs)} environments for {len(tasks)} tasks")
    if len({id(e) for e in envs}) != len(envs):
        raise EnvError("each episode needs its own environment instance")
    for env, task in zip(envs, tasks):
        env.reset(task)  # each environment keeps its conversation; the policy reads env.messages
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while True:
            live = [i for i, env in enumerate(envs) if not env.done]
            if not live:
                break
            requests = [PolicyRequest(i, envs[i].turns, [dict(m) for m in envs[i].messages], envs[i].tools, tasks[i])
                        for i in live]
            answers = policy.act(requests)
            if len(answers) != len(requests):
                raise EnvError(f"the policy answered {len(answers)} of {len(requests)} requests")
            list(pool.map(lambda pair: envs[pair[0]].step(pair[1]), zip(live, answers)))
    return [EpisodeResult(float(env.reward or 0.0), env.turns, dict(env.info), list(env.messages)) for env in envs]


def accuracy_by_turns(make_env: Callable[[int], Environment], tasks: Sequence[Any],
                      make_policy: Callable[[], Policy], budgets: Sequence[int], *,
                      workers: int = 1) -> dict[int, float]:
    """Mean reward for each allowed number of turns (`make_env(max_turns)`), a fresh policy each."""
    out = {}
    for budget in budgets:
        results = run_episodes([make_env(budget) for _ in tasks], tasks, make_policy(), workers=workers)
        out[int(budget)] = sum(r.reward for r in results) / max(1, len(results))
    return out
