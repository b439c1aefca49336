"""Multi-turn agent tasks (TAU-bench style): the model serves a simulated user with tools; a rule-based
check decides whether the task was completed.

An episode alternates agent turns and user turns. In an agent turn the model answers the conversation
so far; each tool call it makes runs in the record's environment and the result goes back to it, until
it answers without a call — then the user speaks. The user is one of
- scripted (``user_script``: its lines in order; the episode ends after the last);
- rule-based (``user_sim``: ``{"request", "followups": [{"keywords": [...], "reply"}], "max_turns"}``,
  the offline user of ``glm45.tasks.UserSimulator``): it opens with the request, answers an agent's
  question (a ``?``) with the replies of the follow-ups whose keywords it mentions (all pending ones
  when it mentions none), and ends the episode when the agent says something that asks nothing;
- simulated by an LLM with the paper's user prompt (Figure 11) and the record's ``instruction``; it
  ends the episode by saying ``###STOP###``.
An episode also ends after ``max_turns`` agent turns.

Completion check (reward 1 only if all hold), from the record's ``expected``:
- ``actions``: the ground-truth tool calls. When the environment keeps state, they are replayed on a
  fresh environment and the two final states must be equal (TAU-bench's rule: how the agent got
  there does not matter); for a stateless environment each must appear among the agent's calls
  (compared in the environment's ``canonical_call`` form when it has one, else exactly).
- ``outputs``: strings the agent must have told the user (case-insensitive, commas ignored).
- ``state``: a literal expected final state.

Environments are registered by name (glm45.tasks registers its own):
``register_environment("retail", lambda config: RetailEnv(**config))``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from glm45.eval.backend import Backend, ChatRequest, ChatSample, EvalError
from glm45.eval.kinds import ItemResult, RunContext, Score, TaskKind, get_field, item_seed, mean

__all__ = ["AgentKind", "Episode", "LLMUser", "RuleUser", "ScriptedUser", "STOP", "ToolEnvironment",
           "check_episode", "make_environment", "register_environment", "USER_PROMPT"]

STOP = "###STOP###"

USER_PROMPT = """You are a user interacting with an agent.

Instruction: {instruction}

# Rules:
- Just generate one line at a time to simulate the user's message.
- Do not give away all the instruction at once. Only provide the information that is necessary for the current step.
- Do not hallucinate information that is not provided in the instruction. Follow these guidelines:
1. If the agent asks for information NOT in the instruction:
- Say you don't remember or don't have it
- Offer alternative information that IS mentioned in the instruction
2. Examples:
- If asked for order ID (not in instruction): "Sorry, I don't remember the order ID, can you search for it? My name/email/phone number/zipcode is ..."
- If asked for email (not in instruction): "I don't have my email handy, but I can give you my name and zip code which are..."
- Do not repeat the exact instruction in the conversation. Instead, use your own words to convey the same information.
- Try to make the conversation as natural as possible, and stick to the personalities in the instruction.

# Constraint Handling:
- Provide requests strictly based on what is explicitly stated in the instruction.
- Do not assume, extend, substitute, or generalize in any form.
- Do not modify or relax constraints on:
- Time / Date
- Budget
- Specific terms (e.g., "same" must not be replaced with "similar")
- Core Rule: Any attribute NOT mentioned in the instruction can be either changed or kept the same
- Examples:
- If instruction says "exchange red item to blue": Only color must change, other attributes (size, material, etc.) are flexible
- If instruction says "exchange red item to blue, keep the same size": Both color must change AND size must stay the same
- Exception: Only follow additional constraints when explicitly stated in the instruction

# When NOT to finish the conversation:
- Do not end until you have clearly and completely expressed all your requirements and constraints.
- Do not end until the agent has completed all tasks mentioned in the instruction and verified no operations were missed.
- Do not end if the agent's execution results do not match your expectations or are incorrect/incomplete.

# When you CAN finish the conversation:
- Only when all above conditions are satisfied AND all tasks are completed correctly.
- OR when you have clearly expressed complete requirements but the system explicitly states it cannot complete them due to technical limitations - in this case, accept transfer to human.

# How to finish the conversation:
- If the agent has completed all tasks, generate "###STOP###" as a standalone message without anything else to end the conversation.

# Note:
- You should carefully check if the agent has completed all tasks mentioned in the instruction before generating "###STOP###"."""

AGENT_GREETING = "Hi! How can I help you today?"  # what the simulated user first "hears"


class ToolEnvironment(Protocol):
    """The world an agent acts on."""

    def tools(self) -> list[dict]:
        """OpenAI-style tool schemas."""
        ...

    def call(self, name: str, arguments: dict) -> str:
        """Run a tool; bad calls are answered with an error text, not an exception."""
        ...

    def state(self) -> Any:
        """A JSON-able snapshot of what the tools changed, or None for a stateless environment."""
        ...

    # Optional: ``canonical_call(name, arguments) -> comparable`` — the form in which two calls of a
    # stateless environment count as the same action (e.g. defaults filled in, case folded).


EnvironmentFactory = Callable[[dict], ToolEnvironment]
_ENVIRONMENTS: dict[str, EnvironmentFactory] = {}


def register_environment(name: str, factory: EnvironmentFactory, *, replace: bool = False) -> None:
    """Make `name` usable as a record's ``env``; `factory(env_config)` builds a fresh environment."""
    if name in _ENVIRONMENTS and not replace:
        raise EvalError(f"environment {name!r} is already registered")
    _ENVIRONMENTS[name] = factory


def make_environment(name: str, config: dict | None = None) -> ToolEnvironment:
    if name not in _ENVIRONMENTS:
        known = ", ".join(sorted(_ENVIRONMENTS)) or "none"
        raise EvalError(f"unknown agent environment {name!r} (registered: {known})")
    return _ENVIRONMENTS[name](dict(config or {}))


class ScriptedUser:
    """Says its lines in order, one per user turn; stops after the last."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)

    def respond(self, dialogue: list[dict]) -> str:
        said = sum(1 for m in dialogue if m["role"] == "user")
        return self.lines[said] if said < len(self.lines) else STOP


class RuleUser:
    """The rule-based offline user of `glm45.tasks.UserSimulator` (see module docstring)."""

    def __init__(self, request: str, followups: list[dict], max_turns: int = 3):
        from glm45.tasks import ToolTask, UserSimulator

        task = ToolTask(id="", kind="multiturn", user=request, tools=[], steps=[], results=[], answer="",
                        thoughts=[], followups=[dict(f) for f in followups])
        self.sim = UserSimulator(task, max_turns=max_turns)

    def respond(self, dialogue: list[dict]) -> str:
        if not any(m["role"] == "user" for m in dialogue):
            return self.sim.first_message()["content"]
        reply = self.sim.respond(dialogue[-1]["content"])  # the agent's last words
        return STOP if reply is None else reply["content"]


class LLMUser:
    """A model playing the user, from the paper's user prompt and the task's instruction."""

    temperature = 0.0
    max_tokens = 2048

    def __init__(self, instruction: str, seed: int):
        self.system = USER_PROMPT.format(instruction=instruction)
        self.seed = seed

    def respond(self, dialogue: list[dict]) -> ChatRequest:
        # Roles flip: the agent's words are what this model hears, the user's are what it said.
        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": AGENT_GREETING}]
        for m in dialogue:
            messages.append({"role": "assistant" if m["role"] == "user" else "user", "content": m["content"]})
        return ChatRequest(messages=messages, temperature=self.temperature, max_tokens=self.max_tokens,
                           enable_thinking=False, seed=self.seed)


@dataclass
class Episode:
    """One conversation, driven from outside: `pending()` says which model must answer what;
    `advance(sample)` applies its answer."""

    env: ToolEnvironment
    user: ScriptedUser | RuleUser | LLMUser
    agent_request: Callable[[list[dict], int], ChatRequest]  # (messages, turn) -> request
    system: str | None = None
    max_turns: int = 30
    messages: list[dict] = field(default_factory=list)  # the agent's view
    dialogue: list[dict] = field(default_factory=list)  # what agent and user said to each other
    actions: list[dict] = field(default_factory=list)  # tool calls the agent made, with results
    turns: int = 0
    end: str = ""  # why the episode ended ("user_stop", "max_turns"); "" while running
    _waiting: str = "user"  # whose answer is awaited

    def __post_init__(self):
        if self.system:
            self.messages.append({"role": "system", "content": self.system})

    @property
    def done(self) -> bool:
        return bool(self.end)

    def pending(self) -> tuple[str, ChatRequest] | None:
        """("agent" | "user", request), or None when the episode is over. A scripted user answers
        at once, so this only ever returns requests for models."""
        while not self.done:
            if self._waiting == "agent":
                if self.turns >= self.max_turns:
                    self.end = "max_turns"
                    return None
                return "agent", self.agent_request(self.messages, self.turns)
            reply = self.user.respond(self.dialogue)
            if isinstance(reply, ChatRequest):
                return "user", reply
            self._user_says(reply)
        return None

    def _user_says(self, text: str) -> None:
        if STOP in text:
            self.end = "user_stop"
            return
        self.dialogue.append({"role": "user", "content": text})
        self.messages.append({"role": "user", "content": text})
        self._waiting = "agent"

    def advance(self, sample: ChatSample) -> None:
        if self._waiting == "user":
            self._user_says(sample.content.strip())
            return
        self.turns += 1
        message: dict[str, Any] = {"role": "assistant", "content": sample.content}
        if sample.reasoning_content:
            message["reasoning_content"] = sample.reasoning_content
        if sample.tool_calls:
            ids = [f"call_{self.turns}_{i}" for i in range(len(sample.tool_calls))]
            message["tool_calls"] = [
                {"id": cid, "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {})}}
                for cid, c in zip(ids, sample.tool_calls)]
        self.messages.append(message)
        if not sample.tool_calls:
            self.dialogue.append({"role": "agent", "content": sample.content})
            self._waiting = "user"
            return
        for cid, call in zip(ids, sample.tool_calls):
            if "invalid_arguments" in call:
                result = f"Error: the arguments of {call['name']} are not valid JSON"
            else:
                try:
                    result = self.env.call(call["name"], dict(call.get("arguments") or {}))
                except Exception as e:  # an environment's own error on odd input is the tool's answer
                    result = f"Error: {type(e).__name__}: {e}"
            self.actions.append({"name": call["name"], "arguments": call.get("arguments") or {},
                                 "result": result})
            self.messages.append({"role": "tool", "tool_call_id": cid, "content": result})


def _exact_call(name: str, arguments: dict) -> tuple[str, str]:
    return name, json.dumps(arguments, sort_keys=True)


def _norm_output(s: str) -> str:
    return s.lower().replace(",", "")


def check_episode(record: dict, episode: Episode) -> Score:
    """The rule-based completion check (see module docstring)."""
    expected = record.get("expected") or {}
    failures = []
    final = episode.env.state()
    if "actions" in expected:
        if final is not None:
            reference = make_environment(record["env"], record.get("env_config"))
            for action in expected["actions"]:
                reference.call(action["name"], dict(action.get("arguments") or {}))
            if reference.state() != final:
                failures.append("final state differs from the state the expected actions lead to")
        else:
            canonical = getattr(episode.env, "canonical_call", None) or _exact_call
            made = [canonical(a["name"], a["arguments"]) for a in episode.actions]
            for action in expected["actions"]:
                arguments = dict(action.get("arguments") or {})
                key = canonical(action["name"], arguments)
                if key in made:
                    made.remove(key)
                else:
                    failures.append(f"expected action not taken: {action['name']}"
                                    f"({json.dumps(arguments, sort_keys=True)})")
    if "state" in expected and final != expected["state"]:
        failures.append("final state differs from the expected state")
    said = _norm_output(" ".join(m["content"] for m in episode.dialogue if m["role"] == "agent"))
    for output in expected.get("outputs") or []:
        if _norm_output(str(output)) not in said:
            failures.append(f"the agent never told the user {output!r}")
    return Score(0.0 if failures else 1.0, {"failures": failures, "end": episode.end, "turns": episode.turns,
                                            "actions": episode.actions})


def _check_user_sim(user_sim: dict, where: str) -> None:
    get_field(user_sim, "request", str, f"{where}: user_sim")
    get_field(user_sim, "max_turns", int, f"{where}: user_sim", required=False)
    followups = get_field(user_sim, "followups", list, f"{where}: user_sim", required=False, default=[])
    if not all(isinstance(f, dict) and isinstance(f.get("reply"), str) and isinstance(f.get("keywords"), list)
               and all(isinstance(k, str) for k in f["keywords"]) for f in followups):
        raise EvalError(f"{where}: 'user_sim.followups' must be a list of {{'keywords': [str], 'reply': str}}")


class AgentKind(TaskKind):
    name = "agent"
    description = "multi-turn tool use with a simulated user and a rule-based completion check"

    def validate(self, record: dict, where: str) -> None:
        make_environment(get_field(record, "env", str, where), get_field(record, "env_config", dict, where,
                                                                          required=False))
        script = get_field(record, "user_script", list, where, required=False)
        user_sim = get_field(record, "user_sim", dict, where, required=False)
        if script is not None:
            if not script or not all(isinstance(line, str) for line in script):
                raise EvalError(f"{where}: 'user_script' must be a non-empty list of strings")
        elif user_sim is not None:
            _check_user_sim(user_sim, where)
        else:
            get_field(record, "instruction", str, where)
        get_field(record, "system", str, where, required=False)
        get_field(record, "max_turns", int, where, required=False)
        expected = get_field(record, "expected", dict, where, required=False, default={})
        actions = expected.get("actions", [])
        if not isinstance(actions, list) or not all(isinstance(a, dict) and isinstance(a.get("name"), str)
                                                    for a in actions):
            raise EvalError(f"{where}: 'expected.actions' must be a list of {{'name', 'arguments'}}")
        if not isinstance(expected.get("outputs", []), list):
            raise EvalError(f"{where}: 'expected.outputs' must be a list of strings")

    def _episode(self, record: dict, seed: int, ctx: RunContext) -> Episode:
        env = make_environment(record["env"], record.get("env_config"))
        tools = env.tools()
        s = ctx.sampling
        if record.get("user_script"):
            user: ScriptedUser | RuleUser | LLMUser = ScriptedUser(record["user_script"])
        elif record.get("user_sim"):
            sim = record["user_sim"]
            user = RuleUser(sim["request"], sim.get("followups") or [], int(sim.get("max_turns", 3)))
        else:
            user = LLMUser(record["instruction"], seed)

        def agent_request(messages: list[dict], turn: int) -> ChatRequest:
            return ChatRequest(messages=[dict(m) for m in messages], tools=tools or None,
                               temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                               enable_thinking=s.enable_thinking, seed=(seed + 7919 * turn) % 2**31)

        return Episode(env=env, user=user, agent_request=agent_request, system=record.get("system"),
                       max_turns=int(record.get("max_turns", 30)))

    def evaluate(self, task, ctx: RunContext) -> list[ItemResult]:
        k = ctx.sampling.k
        episodes = [[self._episode(rec, item_seed(ctx.sampling.seed, task.name, rec["id"]) + j, ctx)
                     for j in range(k)] for rec in task.records]
        flat = [e for row in episodes for e in row]
        backends: dict[str, Backend] = {"agent": ctx.backend, "user": ctx.user_backend or ctx.backend}
        with ctx.progress(task.name, len(flat)) as advance:
            finished = 0
            while True:
                work: dict[str, list[tuple[Episode, ChatRequest]]] = {"agent": [], "user": []}
                for episode in flat:
                    turn = episode.pending()
                    if turn is not None:
                        work[turn[0]].append((episode, turn[1]))
                if not work["agent"] and not work["user"]:
                    break
                for who, pairs in work.items():
                    if pairs:
                        results = backends[who].chat([r for _, r in pairs])
                        for (episode, _), result in zip(pairs, results):
                            episode.advance(result.samples[0])
                now = sum(e.done for e in flat)
                advance(now - finished)
                finished = now
        items = []
        for rec, row in zip(task.records, episodes):
            scores = [check_episode(rec, e) for e in row]
            samples = [{"score": sc.value, "details": sc.details, "messages": e.messages}
                       for sc, e in zip(scores, row)]
            items.append(ItemResult(id=rec["id"], score=mean([sc.value for sc in scores]), samples=samples))
        return items
