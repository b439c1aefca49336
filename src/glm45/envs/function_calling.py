"""Function-calling RL environments over the tool world of `glm45.tasks` (§3.4, Function Calling RL).

Step-wise rule-based (`stepwise_items` + `glm45.envs.base.SingleTurnEnv`): a task is one
decision point of an annotated trajectory — the conversation up to an assistant turn of
`ToolTask.reference_messages()`, the earlier calls and their results included. The policy
writes that one turn; the `function_call` reward of `glm45.rl.rewards` gives 1 only if it is
well-formed and matches the annotation exactly (the same calls, name and every argument,
order-free within the turn; no call where the annotation is a reply to the user).

End-to-end multi-turn (`MultiTurnToolEnv`): the policy starts from the user's request and acts
on a live `World`: its calls run and are answered, its text turns go to a simulated user — the
rule-based `UserSimulator` of `glm45.tasks` offline, or an LLM playing the user with the
paper's Figure 11 prompt (`LLMUserSimulator`, any `glm45.eval` backend). When the user ends the
conversation (a text turn that asks nothing, or the LLM user's stop token) the reward is 1 iff
every call of the episode was well-formed (a malformed one has already halted it with 0) and
the task is completed — the world reaches the annotated final state (`ToolTask.is_completed`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from glm45.envs.base import EnvError, Message, Step, ToolEnvironment, Turn, register_env
from glm45.tasks import ToolTask, UserSimulator, World, execute_call

__all__ = ["LLMUserSimulator", "MultiTurnToolEnv", "OracleToolAgent", "stepwise_items", "user_instruction"]


def _as_task(task: Any) -> ToolTask:
    if isinstance(task, ToolTask):
        return task
    if isinstance(task, dict):
        try:
            return ToolTask(**task)
        except TypeError as e:
            raise EnvError(f"not a tool task record: {e}") from None
    raise EnvError(f"a tool task must be a ToolTask or its dict, got {type(task).__name__}")


# ---- step-wise ------------------------------------------------------------------------------


def stepwise_items(tasks: Sequence[ToolTask | dict], *, thinking: bool = False,
                   system: str | None = None) -> list[dict]:
    """One single-turn record per assistant turn of each task's reference trajectory, scored by
    the `function_call` reward of `glm45.rl.rewards` (drive it with `SingleTurnEnv`):
    `messages` (the conversation before that turn, earlier calls and results included, after a
    `system` message when given), `tools`, and `calls` — the annotated calls of that turn, []
    where it answers the user."""
    out = []
    head = [{"role": "system", "content": system}] if system is not None else []
    for task in tasks:
        task = _as_task(task)
        reference = head + task.reference_messages(thinking)
        for k, at in enumerate(i for i, m in enumerate(reference) if m["role"] == "assistant"):
            calls = [{"name": c["function"]["name"], "arguments": dict(c["function"]["arguments"])}
                     for c in reference[at].get("tool_calls") or []]
            out.append({"id": f"{task.id}/turn{k}", "reward_kind": "function_call", "env": "single_turn",
                        "messages": reference[:at], "tools": task.tools, "calls": calls, "enable_thinking": thinking})
    return out


# ---- end-to-end multi-turn ------------------------------------------------------------------


def user_instruction(task: ToolTask) -> str:
    """The task as an instruction for an LLM user: the request, and what to give only if asked."""
    lines = [f"You want the assistant to do this: {task.user}"]
    if task.followups:
        lines.append("You did not say everything at first. If, and only if, the agent asks, you can tell it: "
                     + " ".join(f["reply"] for f in task.followups))
    lines.append("You know nothing else about the task.")
    return "\n".join(lines)


class LLMUserSimulator:
    """A model plays the user with the paper's Figure 11 prompt (`glm45.eval.agent.USER_PROMPT`),
    over any `glm45.eval` backend (e.g. `OpenAIBackend` for a served model). Same interface as
    `glm45.tasks.UserSimulator`: `first_message()`, `respond(assistant_message) -> message | None`."""

    def __init__(self, task: ToolTask, backend: Any, *, seed: int = 0, max_turns: int = 8) -> None:
        from glm45.eval.agent import LLMUser

        self.task, self.backend, self.max_turns = task, backend, max_turns
        self._user = LLMUser(user_instruction(task), seed)
        self.dialogue: list[dict] = [{"role": "user", "content": task.user}]
        self.turns = 0

    def first_message(self) -> dict:
        return {"role": "user", "content": self.task.user}

    def respond(self, assistant_message: dict | str) -> dict | None:
        from glm45.eval.agent import STOP

        text = assistant_message if isinstance(assistant_message, str) else assistant_message.get("content") or ""
        self.dialogue.append({"role": "agent", "content": text})
        if self.turns >= self.max_turns:
            return None
        self.turns += 1
        reply = self.backend.chat([self._user.respond(self.dialogue)])[0].samples[0].content.strip()
        if not reply or STOP in reply or "STOP##" in reply:  # the paper's figure spells the token two ways
            return None
        self.dialogue.append({"role": "user", "content": reply})
        return {"role": "user", "content": reply}


SYSTEM_PROMPT = ("You are a helpful assistant with tools. Use them to do what the user asks; if the request "
                 "misses information a tool needs, ask the user for it.")


class MultiTurnToolEnv(ToolEnvironment):
    """Tasks: `ToolTask`s (or dicts). `user_backend` switches from the rule-based user to an LLM user."""

    def __init__(self, max_turns: int = 12, *, user_backend: Any = None, user_turns: int = 3, seed: int = 0) -> None:
        super().__init__(max_turns)
        self.user_backend, self.user_turns, self.seed = user_backend, user_turns, seed
        self.world = World()

    def _start(self, task: Any) -> tuple[list[Message], list[dict]]:
        self.tool_task = _as_task(task)
        self.world = World()
        if self.user_backend is not None:
            self.user: Any = LLMUserSimulator(self.tool_task, self.user_backend, seed=self.seed,
                                              max_turns=self.user_turns)
        else:
            self.user = UserSimulator(self.tool_task, max_turns=self.user_turns)
        return [{"role": "system", "content": SYSTEM_PROMPT}, self.user.first_message()], self.tool_task.tools

    def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        result = execute_call(name, arguments, self.world, strict=False)  # arguments already validated
        return json.dumps(result, ensure_ascii=False)

    def _text_turn(self, turn: Turn) -> Step:
        reply = self.user.respond({"role": "assistant", "content": turn.content})
        if reply is not None:
            return Step([reply], None, False, {})
        completed = self.tool_task.is_completed(self.world)
        return Step(None, float(completed), True, {"completed": completed, "calls": len(self.world.log)})


class OracleToolAgent:
    """Plays the reference trajectory: the clarifying question, each step's calls, the answer
    (and a closing line if the user still says something)."""

    def __init__(self, task: ToolTask | dict) -> None:
        reference = _as_task(task).reference_messages(thinking=False)
        self.turns = [m for m in reference if m["role"] == "assistant"]

    def act(self, messages: list[Message], tools: list[dict]) -> Message:
        if not self.turns:
            return {"role": "assistant", "content": "You're welcome."}
        turn = dict(self.turns.pop(0))
        if turn.get("tool_calls"):
            turn["tool_calls"] = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                                  for c in turn["tool_calls"]]
        return turn


register_env("function_calling", lambda **kw: MultiTurnToolEnv(**kw))
