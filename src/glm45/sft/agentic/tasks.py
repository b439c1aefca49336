"""Agentic tasks and their synthesis from a toolkit (paper §3.1, step 2: task synthesis).

An `AgentTask` is what a trajectory is generated for and judged against: the first user message,
the tools offered, the calls that accomplish it (`expected`), and what a simulated user knows
(`followups` for the rule-based user, `instruction` for an LLM user).

Sources:
- `builtin_tasks`: the `glm45.tasks` tool tasks (single, multi-step chains, parallel calls,
  irrelevant requests, multi-turn with a missing argument), with reference trajectories and the
  world's terminal state as ground truth.
- `synthesize_tasks`: tasks for any toolkit (simulated or Python tools). A representative subset
  of tools is drawn, then schema-valid arguments for one (single-step) or two to three
  (multi-step) of them; the request is written by an LLM when a backend is given (the paper's way),
  else from a template that states every argument.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from glm45.eval.backend import Backend, ChatRequest
from glm45.sft.agentic.toolkit import Tool, ToolEnvironment, Toolkit, fake_value
from glm45.sft.records import SFTError
from glm45.tasks import ToolTask, generate_tool_tasks
from glm45.tasks.tool_schema import check_value, normalize_call

SYNTH_KINDS = ("single", "multi")


@dataclass
class AgentTask:
    id: str
    kind: str
    user: str  # the first user message
    tools: list[str]  # names of the offered tools
    expected: list[dict] = field(default_factory=list)  # {"name", "arguments"}: the calls that do it
    followups: list[dict] = field(default_factory=list)  # {"keywords": [...], "reply": str}
    instruction: str = ""  # for an LLM-simulated user: what the user wants, in full
    answer: str = ""  # a reference final answer, when known
    reference: list[dict] | None = None  # reference messages, when known
    builtin: dict | None = None  # the glm45.tasks ToolTask this came from (its terminal state is exact)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AgentTask:
        try:
            return cls(**d)
        except TypeError as e:
            raise SFTError(f"not an agent task: {e}") from None

    def is_completed(self, env: ToolEnvironment) -> bool:
        """Whether the episode in `env` reached the task's terminal state."""
        if self.builtin is not None:
            return ToolTask(**self.builtin).is_completed(env.world)
        if self.kind == "irrelevant":
            return not env.log
        schemas = env.tools()
        done = [normalize_call(c, schemas) for c in env.log]
        for call in self.expected:
            want = normalize_call(call, schemas)
            if want not in done:
                return False
            done.remove(want)
        return True


def builtin_tasks(n: int, seed: int, kinds: Sequence[str] = ("single", "multi", "parallel", "irrelevant", "multiturn"),
                  *, split: str = "train", n_distractors: int = 2) -> list[AgentTask]:
    """Tool tasks of glm45.tasks as AgentTasks (exact terminal states, reference trajectories)."""
    out = []
    for t in generate_tool_tasks(n, seed, kinds, split=split, n_distractors=n_distractors):
        names = [s["function"]["name"] for s in t.tools]
        instruction = " ".join([t.user, *(f["reply"] for f in t.followups)])
        out.append(AgentTask(id=t.id, kind=t.kind, user=t.user, tools=names, expected=t.calls,
                             followups=t.followups, instruction=instruction, answer=t.answer,
                             reference=t.reference_messages(), builtin=t.to_dict()))
    return out


# ---- synthesis for any toolkit ------------------------------------------------------------------

_EXAMPLE = re.compile(r"e\.g\.,?\s*['\"]?([^'\",;)]+)")
_STRING_SHAPES = ("2025-03-14", "09:30", "user@example.com", "+1-555-0100", "report", "Paris")


def sample_string(name: str, schema: dict, rng: random.Random) -> str | None:
    """A plausible string for a parameter: an example from its description, else a common shape
    that matches its pattern, else a word; None when nothing found satisfies the schema."""
    candidates = []
    example = _EXAMPLE.search(str(schema.get("description") or ""))
    if example:
        candidates.append(example.group(1).strip())
    candidates += list(_STRING_SHAPES) + [f"{name.replace('_', ' ')} {rng.randint(1, 99)}"]
    if "pattern" not in schema and "minLength" not in schema and "maxLength" not in schema:
        return candidates[0] if example else candidates[-1]
    ok = [c for c in candidates if not check_value(c, schema, name)]
    return ok[0] if ok else None


def sample_arguments(tool: Tool, rng: random.Random, optional_rate: float = 0.3) -> dict | None:
    """Schema-valid arguments: every required parameter, some optional ones; None when a required
    parameter cannot be filled."""
    props = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or [])
    args = {}
    for key, schema in props.items():
        if key not in required and rng.random() >= optional_rate:
            continue
        t = schema.get("type")
        value = sample_string(key, schema, rng) if (t == "string" and not schema.get("enum")) else fake_value(schema, rng)
        if value is None or check_value(value, schema, key):
            if key in required:
                return None
            continue
        args[key] = value
    return args


def _describe(call: dict) -> str:
    args = ", ".join(f"{k} {json.dumps(v, ensure_ascii=False)}" for k, v in call["arguments"].items())
    return f"{call['name']}" + (f" with {args}" if args else "")


_TEMPLATES_SINGLE = ("Please use {desc}.", "Can you run {desc}?", "I need you to call {desc}.")
_TEMPLATES_MULTI = ("First use {a}, then {b}.", "Please do two things: {a}; and after that, {b}.")

WRITER_PROMPT = """Write the message a user would send to an AI assistant who has these tools:
{tools}

The request must require exactly these tool calls, and state every argument value they need:
{calls}

Reply with the user's message only."""


def _write_requests(calls: list[list[dict]], toolkit: Toolkit, backend: Backend | None, rng: random.Random,
                    seed: int) -> list[str]:
    if backend is None:
        out = []
        for cs in calls:
            descs = [_describe(c).replace(c["name"], f"the {c['name']} tool", 1) for c in cs]
            if len(descs) == 1:
                out.append(rng.choice(_TEMPLATES_SINGLE).format(desc=descs[0]))
            else:
                out.append(rng.choice(_TEMPLATES_MULTI).format(a=", then ".join(descs[:-1]), b=descs[-1]))
        return out
    requests = []
    for i, cs in enumerate(calls):
        tools = "\n".join(f"- {c['name']}: {toolkit.tools[c['name']].description}" for c in cs)
        prompt = WRITER_PROMPT.format(tools=tools, calls="\n".join(f"- {_describe(c)}" for c in cs))
        requests.append(ChatRequest(messages=[{"role": "user", "content": prompt}], temperature=0.7,
                                    max_tokens=256, enable_thinking=False, seed=seed + i))
    return [r.samples[0].content.strip() for r in backend.chat(requests)]


def synthesize_tasks(toolkit: Toolkit, n: int, seed: int = 0, *, kinds: Sequence[str] = SYNTH_KINDS,
                     tools_per_task: int = 3, backend: Backend | None = None,
                     names: Sequence[str] | None = None) -> list[AgentTask]:
    """`n` tasks over `toolkit` (or its tools `names`), each offering `tools_per_task` tools of which
    one (single) or two to three (multi) must be called, in order."""
    if any(k not in SYNTH_KINDS for k in kinds) or not kinds:
        raise SFTError(f"kinds must be a non-empty subset of {SYNTH_KINDS}, got {list(kinds)}")
    pool = list(names or toolkit.names())
    if len(pool) < 2:
        raise SFTError("task synthesis needs at least two tools")
    rng = random.Random(f"glm45.sft.synth/{seed}")
    drafts: list[tuple[str, list[str], list[dict]]] = []
    misses = 0
    while len(drafts) < n:
        kind = rng.choice(list(kinds))
        offered = rng.sample(pool, min(max(tools_per_task, 2), len(pool)))
        k = 1 if kind == "single" else rng.randint(2, min(3, len(offered)))
        calls = []
        for name in offered[:k]:
            args = sample_arguments(toolkit.tools[name], rng)
            if args is None:
                break
            calls.append({"name": name, "arguments": args})
        if len(calls) < k:
            misses += 1
            if misses > 50 * (n + 1):
                raise SFTError("cannot fill the arguments of these tools from their schemas (patterns no sample "
                               "matches?); give examples in the parameter descriptions ('e.g. ...')")
            continue
        rng.shuffle(offered)
        drafts.append((kind, offered, calls))
    texts = _write_requests([d[2] for d in drafts], toolkit, backend, rng, seed)
    return [AgentTask(id=f"synth-{seed}-{i}", kind=kind, user=text, tools=offered, expected=calls, instruction=text)
            for i, ((kind, offered, calls), text) in enumerate(zip(drafts, texts))]
