"""Built-in RL task sets as buffer records (`glm45 rl --task NAME`), from `glm45.tasks`:

- "arithmetic": arithmetic questions, reward `arithmetic` (the boxed answer checked exactly);
- "tools": one record per assistant turn of tool-calling tasks (the conversation so far as the
  prompt), the strict step-wise `function_call` reward of §3.4;
- "tool_agent": whole tool-calling episodes in the `function_calling` environment (tools run,
  a simulated user answers), reward 1 when the world ends in the goal state (§3.4 end-to-end);
- "search": multi-hop questions answered by researching a document collection in the `search`
  environment (search / open page tools), reward 1 for the right final answer;
- "ifeval": requests with 1-3 verifiable formatting constraints (`glm45.envs.ifeval`), reward 1
  when every constraint holds (§3.4 instruction following); split by the hash of the prompt;
- "jsonl:PATH": your own records, one JSON object per line (see `glm45.rl.rollout` for fields).

Train and held-out records come from the `train` and `test` splits of `glm45.tasks`, which never
share a question.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from glm45.rl.errors import RLError

__all__ = ["CALL_KINDS", "TASK_SETS", "arithmetic_tasks", "build_tasks", "ifeval_tasks", "search_tasks",
           "tool_agent_tasks", "tool_tasks"]


# Tool-task kinds whose answer is a call. RL on a weak policy should use these: with turns
# that pay for answering without a call in the mix, GRPO taught it to stop calling tools
# (speedrun, expert iteration and env experiments alike; docs/LOG.md).
CALL_KINDS = ("single", "parallel")


def arithmetic_tasks(n: int, seed: int = 0, *, split: str = "train", difficulty: Any = 1,
                     thinking: bool = True, unique: bool = False) -> list[dict]:
    from glm45.tasks import generate_arithmetic

    out = []
    for p in generate_arithmetic(n, seed, difficulty, split=split, unique=unique):
        rec = dataclasses.asdict(p)
        rec.update(reward_kind="arithmetic", enable_thinking=thinking,
                   messages=[{"role": "user", "content": p.question}])
        out.append(rec)
    return out


def tool_tasks(n: int, seed: int = 0, *, split: str = "train", kinds: Any = ("single", "multi", "irrelevant"),
               thinking: bool = False, unique: bool = False, system: str | None = None) -> list[dict]:
    from glm45.envs.function_calling import stepwise_items
    from glm45.tasks import generate_tool_tasks

    return stepwise_items(generate_tool_tasks(n, seed, kinds=tuple(kinds), split=split, unique=unique),
                          thinking=thinking, system=system)


def tool_agent_tasks(n: int, seed: int = 0, *, split: str = "train",
                     kinds: Any = ("single", "multi", "parallel", "irrelevant", "multiturn"),
                     thinking: bool = False, max_turns: int = 6, unique: bool = False) -> list[dict]:
    from glm45.tasks import generate_tool_tasks

    return [{"id": t.id, "env": "function_calling", "env_config": {"max_turns": max_turns},
             "enable_thinking": thinking, "task": t.to_dict()}
            for t in generate_tool_tasks(n, seed, kinds=tuple(kinds), split=split, unique=unique)]


def search_tasks(n: int, seed: int = 0, *, split: str = "train", collection: str = "synthetic",
                 thinking: bool = False, max_turns: int = 8, unique: bool = False,
                 collection_options: dict | None = None, question_options: dict | None = None) -> list[dict]:
    """Multi-hop questions over a built-in document collection, played in the `search`
    environment (reward: the final answer matches). One collection (seed 0, built with
    `collection_options`, e.g. the synthetic world's `scale`) for every split; questions
    (`question_options`: `hops`, `obfuscate`, ... of `glm45.envs.kg.synthesize_questions`) are
    split by the hash of their text, as `glm45.tasks` splits its own."""
    from glm45.envs.search import builtin_collection
    from glm45.tasks.common import split_of

    col = builtin_collection(collection, 0, **(collection_options or {}))
    asked = 4 * n + 16
    while True:
        drawn = col.questions(asked, seed, at_most=True, **(question_options or {}))
        out, seen = [], set()
        for q in drawn:
            if split_of(q["question"]) != split or (unique and q["question"] in seen):
                continue
            seen.add(q["question"])
            q["env_config"] = {**q.get("env_config", {}), "max_turns": max_turns}
            q["enable_thinking"] = thinking
            out.append(q)
            if len(out) == n:
                return out
        if len(drawn) < asked or asked > 64 * n + 256:  # the collection has no more questions
            raise RLError(f"the {collection} collection has fewer than {n} distinct {split} questions "
                          f"(found {len(out)})")
        asked *= 2


def ifeval_tasks(n: int, seed: int = 0, *, split: str = "train", max_constraints: int = 2,
                 thinking: bool = False, unique: bool = False) -> list[dict]:
    """Instruction-following prompts of `split` (by the hash of the prompt text)."""
    from glm45.envs.ifeval import generate_if_tasks
    from glm45.tasks.common import check_split, split_of

    check_split(split)
    out: list[dict] = []
    seen: set[str] = set()
    for attempt in range(8):  # a prompt lands in the test split about one time in ten
        drawn = generate_if_tasks(4 * (n + 16) * 2**attempt, seed * 101 + attempt, max_constraints=max_constraints)
        for rec in drawn:
            if split_of(rec["prompt"]) != split or (unique and rec["prompt"] in seen):
                continue
            seen.add(rec["prompt"])
            out.append({**rec, "enable_thinking": thinking})
            if len(out) == n:
                return out
    raise RLError(f"could not draw {n} distinct {split} instruction-following prompts")


def _jsonl(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise RLError(f"task file {path} does not exist")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise RLError(f"{path}:{i}: not JSON: {e}") from None
        if not isinstance(rec, dict) or not ("reward_kind" in rec or "env" in rec):
            raise RLError(f"{path}:{i}: a task record is an object with 'reward_kind' (single-turn) or 'env'")
        out.append(rec)
    return out


TASK_SETS = {"arithmetic": arithmetic_tasks, "tools": tool_tasks, "tool_agent": tool_agent_tasks,
             "search": search_tasks, "ifeval": ifeval_tasks}


def build_tasks(name: str, n: int, seed: int = 0, *, split: str = "train", **options: Any) -> list[dict]:
    """`n` records of task set `name` (a built-in name or `jsonl:PATH`, which ignores n/seed/split)."""
    if name.startswith("jsonl:"):
        return _jsonl(name[len("jsonl:"):])
    if name not in TASK_SETS:
        raise RLError(f"unknown task set {name!r}; built in: {sorted(TASK_SETS)} (or jsonl:PATH)")
    return TASK_SETS[name](n, seed, split=split, **options)
