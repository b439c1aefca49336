"""The tool registry of agentic data synthesis (paper §3.1, step 1: tool collection).

A `Toolkit` holds tools of three origins, all described by an OpenAI-style JSON schema:
- the built-in fake world of `glm45.tasks` (14 tools over a stateful `World`): `Toolkit.builtin()`;
- Python functions: `add_function(fn)` reads the schema off the signature (type hints, defaults,
  `Literal` choices) and the docstring, unless one is given;
- simulated tools, declared only by a schema (`add_schema`): an OpenAI tool definition or an MCP
  tool description (`name`, `description`, `inputSchema`, optional `outputSchema`; `add_mcp` takes
  a whole `tools/list` answer). Their results come from a simulator: `SchemaSimulator` (offline,
  deterministic: a value shaped by the output schema, drawn from a hash of the call) or
  `LLMSimulator` (a model role-plays the tool, as the paper's LLM-simulated tools do).

`toolkit.environment(names)` makes a fresh `ToolEnvironment` for one episode: it validates each call
against the schema, runs it, logs it, and answers with JSON text (errors too, as a tool would).
It has the `tools() / call() / state()` interface of `glm45.eval.agent.ToolEnvironment`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from glm45.eval.backend import Backend, ChatRequest
from glm45.sft.records import SFTError
from glm45.tasks.tool_schema import check_object, parse_arguments
from glm45.tasks.tool_world import REGISTRY, World, execute_call


class ToolError(SFTError):
    """A tool that cannot be registered (bad schema, name clash, unreadable signature)."""


Runner = Callable[["ToolEnvironment", dict], Any]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    run: Runner | None = None  # None: a simulated tool
    output_schema: dict | None = None  # what a simulated tool returns (MCP outputSchema)
    stateful: bool = False  # changes the environment (its effects are part of the terminal state)
    origin: str = "python"  # "builtin" | "python" | "simulated"

    def schema(self) -> dict:
        """The OpenAI tool definition."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


class ToolSimulator(Protocol):
    def __call__(self, tool: Tool, arguments: dict) -> Any:
        ...


# ---- simulators -----------------------------------------------------------------------------

def _seed_of(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper")


def fake_value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value that satisfies a simple JSON schema (enum, type, min/max, items, properties)."""
    if not isinstance(schema, Mapping):
        return None
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    if "default" in schema and rng.random() < 0.3:
        return schema["default"]
    t = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if t == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)), float(schema.get("maximum", 100))), 2)
    if t == "boolean":
        return rng.random() < 0.5
    if t == "array":
        return [fake_value(schema.get("items", {"type": "string"}), rng, depth + 1) for _ in range(rng.randint(1, 3))]
    if t == "object":
        if depth > 4:
            return {}
        return {k: fake_value(v, rng, depth + 1) for k, v in (schema.get("properties") or {}).items()}
    return f"{rng.choice(_WORDS)}-{rng.randint(1, 999)}"


class SchemaSimulator:
    """Offline simulated results: the output schema filled with values drawn from a hash of
    (tool, arguments), so the same call always gets the same answer. Without an output schema
    the result acknowledges the call: {"status": "ok", "tool", "arguments", "id"}."""

    def __call__(self, tool: Tool, arguments: dict) -> Any:
        seed = _seed_of(tool.name, arguments)
        if tool.output_schema:
            return fake_value(tool.output_schema, random.Random(seed))
        return {"status": "ok", "tool": tool.name, "arguments": arguments, "id": f"{tool.name}-{seed % 10**6:06d}"}


SIMULATOR_PROMPT = """You are simulating the tool `{name}` for testing an AI assistant.
Tool description: {description}
Input schema: {parameters}
{output}
The assistant called it with these arguments:
{arguments}

Reply with only the tool's result as one JSON object, realistic and consistent with the arguments. No prose."""


class LLMSimulator:
    """A model plays the tool: it is shown the tool's description and schemas and the call, and
    answers with the result as JSON (text that is not JSON is wrapped as {"result": text}).
    Answers are cached per call, so a repeated call gets the same result."""

    def __init__(self, backend: Backend, temperature: float = 0.0, max_tokens: int = 512):
        self.backend, self.temperature, self.max_tokens = backend, temperature, max_tokens
        self._cache: dict[str, Any] = {}

    def __call__(self, tool: Tool, arguments: dict) -> Any:
        key = json.dumps([tool.name, arguments], sort_keys=True, ensure_ascii=False)
        if key not in self._cache:
            output = f"Output schema: {json.dumps(tool.output_schema)}" if tool.output_schema else ""
            prompt = SIMULATOR_PROMPT.format(name=tool.name, description=tool.description,
                                             parameters=json.dumps(tool.parameters, ensure_ascii=False),
                                             output=output, arguments=json.dumps(arguments, ensure_ascii=False))
            request = ChatRequest(messages=[{"role": "user", "content": prompt}], temperature=self.temperature,
                                  max_tokens=self.max_tokens, enable_thinking=False, seed=_seed_of(key) % 2**31)
            text = self.backend.chat([request])[0].samples[0].content.strip()
            text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
            try:
                self._cache[key] = json.loads(text)
            except ValueError:
                self._cache[key] = {"result": text}
        return self._cache[key]


# ---- schemas from Python functions ------------------------------------------------------------

_PY_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _type_schema(hint: Any, where: str) -> dict:
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return _type_schema(options[0], where)
        return {"anyOf": [_type_schema(a, where) for a in options]}
    if origin in (list, Sequence, tuple):
        args = typing.get_args(hint)
        return {"type": "array", **({"items": _type_schema(args[0], where)} if args else {})}
    if origin in (dict, Mapping):
        return {"type": "object"}
    if hint in _PY_TYPES:
        return {"type": _PY_TYPES[hint]}
    raise ToolError(f"{where}: cannot describe the type {hint!r} in JSON schema; pass parameters= explicitly")


def function_schema(fn: Callable, name: str | None = None, description: str | None = None) -> tuple[str, str, dict]:
    """(name, description, parameters) of a Python function: its signature's type hints and
    defaults, and its docstring's first paragraph. "Args:"-style lines `name: text` in the
    docstring become parameter descriptions."""
    name = name or fn.__name__
    doc = inspect.getdoc(fn) or ""
    description = description or doc.split("\n\n")[0].replace("\n", " ").strip() or name
    try:
        hints = typing.get_type_hints(fn)
        sig = inspect.signature(fn)
    except (TypeError, ValueError, NameError) as e:
        raise ToolError(f"tool {name!r}: cannot read the signature ({e})") from None
    arg_docs = dict(re.findall(r"^\s*(\w+)\s*(?:\([^)]*\))?:\s*(.+)$", doc, re.MULTILINE))
    props, required = {}, []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolError(f"tool {name!r}: *args / **kwargs cannot be described; pass parameters= explicitly")
        prop = _type_schema(hints.get(p.name, p.annotation), f"tool {name!r}, argument {p.name!r}")
        if p.name in arg_docs:
            prop["description"] = arg_docs[p.name].strip()
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        else:
            prop["default"] = p.default
        props[p.name] = prop
    return name, description, {"type": "object", "properties": props, "required": required}


# ---- the registry -----------------------------------------------------------------------------

def _check_schema(name: str, parameters: Any) -> dict:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", name):
        raise ToolError(f"tool name {name!r} must be 1-64 letters, digits, _ . - (not starting with a digit)")
    if parameters is None:
        return {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping) or parameters.get("type", "object") != "object" or \
            not isinstance(parameters.get("properties", {}), Mapping):
        raise ToolError(f"tool {name!r}: parameters must be a JSON schema of type object with 'properties'")
    return dict(parameters)


class Toolkit:
    def __init__(self, simulator: ToolSimulator | None = None):
        self.tools: dict[str, Tool] = {}
        self.simulator: ToolSimulator = simulator or SchemaSimulator()

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)

    def add(self, tool: Tool) -> Tool:
        if tool.name in self.tools:
            raise ToolError(f"tool {tool.name!r} is already registered")
        _check_schema(tool.name, tool.parameters)
        self.tools[tool.name] = tool
        return tool

    def add_function(self, fn: Callable, *, name: str | None = None, description: str | None = None,
                     parameters: dict | None = None, stateful: bool = False) -> Tool:
        """Register a Python function; it is called with the arguments as keywords."""
        if parameters is None:
            name, description, parameters = function_schema(fn, name, description)
        name = name or fn.__name__
        return self.add(Tool(name, description or name, _check_schema(name, parameters),
                             run=lambda env, args: fn(**args), stateful=stateful, origin="python"))

    def add_schema(self, spec: Mapping, *, stateful: bool = False) -> Tool:
        """Register a simulated tool from an OpenAI tool definition or an MCP tool description."""
        if not isinstance(spec, Mapping):
            raise ToolError(f"a tool description must be an object, got {type(spec).__name__}")
        fn = spec.get("function", spec)
        if not isinstance(fn, Mapping):
            raise ToolError("a tool's 'function' must be an object")
        name = fn.get("name")
        parameters = fn.get("parameters", fn.get("inputSchema", fn.get("input_schema")))
        output = fn.get("outputSchema", fn.get("output_schema"))
        return self.add(Tool(name, str(fn.get("description") or name), _check_schema(name, parameters),
                             output_schema=dict(output) if isinstance(output, Mapping) else None,
                             stateful=stateful, origin="simulated"))

    def add_mcp(self, listing: Mapping | Sequence[Mapping]) -> list[Tool]:
        """Register every tool of an MCP `tools/list` result ({"tools": [...]}) or list."""
        tools = listing.get("tools") if isinstance(listing, Mapping) else listing
        if not isinstance(tools, Sequence):
            raise ToolError("an MCP listing must be {'tools': [...]} or a list of tools")
        return [self.add_schema(t) for t in tools]

    @classmethod
    def builtin(cls, simulator: ToolSimulator | None = None) -> Toolkit:
        """The 14 tools of glm45.tasks over its fake world."""
        kit = cls(simulator)
        stateful = {"set_alarm", "send_email", "send_text", "add_todo", "create_event"}
        for t in REGISTRY.values():
            kit.add(Tool(t.name, t.description, t.parameters, run=_builtin_runner(t.name),
                         stateful=t.name in stateful, origin="builtin"))
        return kit

    def names(self) -> list[str]:
        return list(self.tools)

    def schemas(self, names: Sequence[str] | None = None) -> list[dict]:
        return [self._get(n).schema() for n in (self.names() if names is None else names)]

    def _get(self, name: str) -> Tool:
        if name not in self.tools:
            raise ToolError(f"unknown tool {name!r}; registered: {sorted(self.tools)}")
        return self.tools[name]

    def environment(self, names: Sequence[str] | None = None) -> ToolEnvironment:
        """A fresh environment offering `names` (all tools when None)."""
        names = self.names() if names is None else list(names)
        for n in names:
            self._get(n)
        return ToolEnvironment(self, names)


def _builtin_runner(name: str) -> Runner:
    return lambda env, args: execute_call(name, args, env.world)


@dataclass
class ToolEnvironment:
    """One episode's tools and state. `call` never raises on a bad call: the error is the
    tool's answer, as the model would see it."""

    toolkit: Toolkit
    names: list[str]
    world: World = field(default_factory=World)
    log: list[dict] = field(default_factory=list)  # every call that ran: name, arguments, result

    def tools(self) -> list[dict]:
        return self.toolkit.schemas(self.names)

    def call(self, name: str, arguments: Any) -> str:
        return json.dumps(self.execute(name, arguments), ensure_ascii=False, default=str)

    def execute(self, name: str, arguments: Any) -> Any:
        """The call's result as a JSON-able value ({"error": ...} for a call that cannot run)."""
        if name not in self.names:
            return {"error": f"unknown tool {name!r}; available: {self.names}"}
        tool = self.toolkit.tools[name]
        try:
            args = parse_arguments(arguments)
        except ValueError as e:
            return {"error": str(e)}
        problems = check_object(args, tool.parameters, name)
        if problems:
            return {"error": f"bad arguments for {name}: " + "; ".join(problems)}
        try:
            result = tool.run(self, args) if tool.run is not None else self.toolkit.simulator(tool, args)
        except Exception as e:  # a tool's own failure is its answer
            result = {"error": f"{type(e).__name__}: {e}"}
        self.log.append({"name": name, "arguments": args, "result": result})
        return result

    def state(self) -> Any:
        """What the stateful tools changed: the world's state plus every stateful call made to a
        non-builtin tool; None when no offered tool changes anything."""
        tools = [self.toolkit.tools[n] for n in self.names]
        if not any(t.stateful for t in tools):
            return None
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in self.log
                 if self.toolkit.tools[c["name"]].stateful and self.toolkit.tools[c["name"]].origin != "builtin"]
        return {"world": self.world.snapshot(), "calls": calls}
