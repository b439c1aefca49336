"""Built-in synthetic tasks: the held-out sets the speedrun trains toward, offline and deterministic.

All come from the ``test`` split of ``glm45.tasks`` (decided by hashing the question text, so no
item was ever in a training set), one seed, ``unique=True``; each holds `N_ITEMS` items
(``--limit`` cuts further):

- ``arithmetic`` (math): held-out arithmetic questions at difficulty 1-2 (as the SFT and RL stages
  train), asked as bare questions the way training asks them; the last ``\\boxed{}`` must equal the
  answer.
- ``tool_calls`` (function_call): the first assistant turn of tool tasks (single, chained,
  parallel, irrelevant), BFCL-style: the calls of that turn as possible answers, an optional
  parameter may be left out or given its default; irrelevant requests expect no call.
- ``agent`` (agent): whole tool-using episodes in the tool world (``tool_world`` environment: the
  offered tools run for real) with the rule-based simulated user, which supplies what the request
  left out when the agent asks for it. Complete when the world ends in the reference state (tasks
  that change it) or every needed lookup was made (read-only tasks).
- ``heldout_text`` (perplexity, base models): held-out documents in the pre-training format of the
  built-in corpus (``glm45.data.builtin``'s math and code-task sets), half worked arithmetic
  solutions (difficulty 1-5, as the corpus mixes them), half code-task solutions.

The ``tool_world`` environment is usable from JSONL agent records too: ``"env": "tool_world",
"env_config": {"tools": [names], "stateful": bool}``.
"""

from __future__ import annotations

import json
from typing import Any

from glm45.eval.agent import register_environment
from glm45.eval.backend import EvalError
from glm45.eval.tasks import register_task

__all__ = ["N_ITEMS", "ToolWorldEnv", "agent_records", "arithmetic_records", "heldout_text_records",
           "possible_answer", "tool_call_records"]

N_ITEMS = 50
SEED = 0
TOOL_CALL_KINDS = ("single", "multi", "parallel", "irrelevant")
AGENT_KINDS = ("single", "multi", "parallel", "multiturn")
AGENT_MAX_TURNS = 6
USER_TURNS = 3


class ToolWorldEnv:
    """The fake world of `glm45.tasks.tool_world` offering the tools named in `tools`. With
    `stateful`, the completion check compares final worlds (case and whitespace folded); without,
    it looks for the expected calls among the agent's (defaults filled in, case folded)."""

    def __init__(self, tools: list[str], stateful: bool = True):
        from glm45.tasks import World, tool_schemas
        from glm45.tasks.common import TaskError

        if not isinstance(tools, list) or not tools or not all(isinstance(t, str) for t in tools):
            raise EvalError("tool_world: env_config 'tools' must be a non-empty list of tool names")
        try:
            self._schemas = tool_schemas(tools)
        except TaskError as e:
            raise EvalError(f"tool_world: {e}") from None
        self.offered = set(tools)
        self.stateful = bool(stateful)
        self.world = World()

    def tools(self) -> list[dict]:
        return self._schemas

    def call(self, name: str, arguments: dict) -> str:
        from glm45.tasks import execute_call

        if name not in self.offered:
            result: dict = {"error": f"unknown tool {name!r}; offered: {sorted(self.offered)}"}
        else:
            result = execute_call(name, arguments, self.world, strict=False)
        return json.dumps(result, ensure_ascii=False)

    def state(self) -> Any:
        from glm45.tasks.tool_schema import normalize_value

        return normalize_value(self.world.snapshot()) if self.stateful else None

    def canonical_call(self, name: str, arguments: dict) -> tuple[str, str]:
        from glm45.tasks.tool_schema import ToolCallError, normalize_call

        try:
            name, normal = normalize_call({"name": name, "arguments": arguments}, self._schemas)
        except ToolCallError:  # unreadable arguments match nothing expected
            return name, repr(arguments)
        return name, json.dumps(normal, sort_keys=True)


def _tool_world(config: dict) -> ToolWorldEnv:
    unknown = set(config) - {"tools", "stateful"}
    if unknown:
        raise EvalError(f"tool_world: unknown env_config keys {sorted(unknown)} (known: tools, stateful)")
    return ToolWorldEnv(config.get("tools"), config.get("stateful", True))


def possible_answer(call: dict, tool: dict) -> dict:
    """A ground-truth call as a BFCL possible answer: each given value, and "" (may be omitted)
    for optional parameters at their default, given or not."""
    props = (tool["function"].get("parameters") or {}).get("properties") or {}
    params: dict[str, list] = {}
    for key, value in call["arguments"].items():
        omittable = "default" in props.get(key, {}) and props[key]["default"] == value
        params[key] = [value, ""] if omittable else [value]
    for key, prop in props.items():
        if key not in params and "default" in prop:
            params[key] = [prop["default"], ""]
    return {call["name"]: params}


def arithmetic_records() -> list[dict]:
    from glm45.tasks import generate_arithmetic

    return [{"id": p.id, "messages": [{"role": "user", "content": p.question}], "answer": p.answer,
             "difficulty": p.difficulty}
            for p in generate_arithmetic(N_ITEMS, SEED, [1, 2], split="test", unique=True)]


def tool_call_records() -> list[dict]:
    from glm45.tasks import generate_tool_tasks

    out = []
    for t in generate_tool_tasks(N_ITEMS, SEED, TOOL_CALL_KINDS, split="test", unique=True):
        by_name = {tool["function"]["name"]: tool for tool in t.tools}
        first = t.steps[0] if t.steps else []
        out.append({"id": t.id, "question": t.user, "tools": t.tools, "tool_kind": t.kind,
                    "ground_truth": [possible_answer(c, by_name[c["name"]]) for c in first]})
    return out


def agent_records() -> list[dict]:
    from glm45.envs.function_calling import SYSTEM_PROMPT  # the prompt RL's tool episodes use
    from glm45.tasks import generate_tool_tasks

    out = []
    for t in generate_tool_tasks(N_ITEMS, SEED + 1, AGENT_KINDS, split="test", unique=True):
        stateful = any(t.expected_world().snapshot().values())
        out.append({"id": t.id, "env": "tool_world", "tool_kind": t.kind,
                    "env_config": {"tools": [tool["function"]["name"] for tool in t.tools], "stateful": stateful},
                    "system": SYSTEM_PROMPT, "max_turns": AGENT_MAX_TURNS,
                    "user_sim": {"request": t.user, "followups": t.followups, "max_turns": USER_TURNS},
                    "expected": {"actions": t.calls}})
    return out


def heldout_text_records() -> list[dict]:
    from glm45.tasks import generate_arithmetic, generate_code_tasks
    from glm45.tasks.arithmetic import to_document

    half = N_ITEMS // 2
    math = [(p.id, to_document(p)) for p in generate_arithmetic(N_ITEMS - half, SEED, [1, 2, 3, 4, 5],
                                                                split="test", unique=True)]
    code = [(t.id, t.to_document()) for t in generate_code_tasks(half, SEED, split="test", unique=True)]
    mixed = [doc for pair in zip(math, code) for doc in pair] + math[len(code):]
    return [{"id": i, "text": text} for i, text in mixed]


register_environment("tool_world", _tool_world)
register_task("arithmetic", "math", arithmetic_records,
              description=f"held-out arithmetic (glm45.tasks, test split, difficulty 1-2), {N_ITEMS} items")
register_task("tool_calls", "function_call", tool_call_records,
              description=f"held-out tool calls, first turn, BFCL-style check (glm45.tasks), {N_ITEMS} items")
register_task("agent", "agent", agent_records,
              description=f"held-out multi-turn tool episodes, rule-based user (glm45.tasks), {N_ITEMS} items")
register_task("heldout_text", "perplexity", heldout_text_records,
              description=f"held-out pre-training documents (arithmetic, code tasks): loss, bpb; {N_ITEMS} items")
