"""Function calling: BFCL-style AST checking of the model's tool calls against possible answers.

Ground truth follows BFCL's possible-answer format: a list with one entry per expected call,
``{"function_name": {"param": [acceptable values...]}}``; ``""`` among the acceptable values means the
parameter may be left out. An empty list means the request is irrelevant to the tools: the model
must not call any. A call passes when
- the function name matches;
- every parameter the schema requires is given, and no parameter outside the schema;
- every value has its schema type (``integer`` accepts only ints; ``number``/``float`` accepts ints
  too — int-to-float promotion; ``boolean`` is never an int; arrays and objects are checked
  element-wise);
- every value is one of the acceptable ones: strings compared after normalisation (case, spaces and
  the punctuation ``,./-_*^`` ignored, quotes unified), numbers by value, lists in order, nested
  objects key by key (their values are again lists of acceptable values);
- every parameter the ground truth lists without ``""`` is given.
Parallel calls are matched order-free: any assignment of calls to expected calls will do.
Schemas may use JSON-schema types or BFCL's (``dict``, ``float``, ``tuple``, ``any``); tools are sent
to the model with JSON-schema types, and function names the OpenAI API refuses (``math.factorial``)
are sent as ``math_factorial`` and mapped back.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass
from typing import Any

from glm45.eval.backend import ChatSample, EvalError
from glm45.eval.kinds import ChatKind, Prompt, Score, check_messages, get_field

__all__ = ["CallCheck", "FunctionCallKind", "api_tools", "check_calls", "normalise_string"]

_TYPE_ALIASES = {"dict": "object", "float": "number", "double": "number", "tuple": "array",
                 "list": "array", "int": "integer", "bool": "boolean", "str": "string"}
_API_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class CallCheck:
    ok: bool
    reason: str = ""


def normalise_string(s: str) -> str:
    return re.sub(r"[ ,./\-_*^]", "", s).lower().replace("'", '"')


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    if t is None:
        return ["any"]
    return [_TYPE_ALIASES.get(x, x) for x in (t if isinstance(t, list) else [t])]


def _is_type(value: Any, t: str) -> bool:
    if t == "any":
        return True
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    if t == "null":
        return value is None
    return True  # a type this checker does not know (e.g. a BFCL Java type): not held against the model


def type_error(value: Any, schema: dict) -> str | None:
    """Why `value` does not fit `schema`'s type, or None when it does."""
    types = _types(schema)
    matching = [t for t in types if _is_type(value, t)]
    if not matching:
        return f"expected {'/'.join(types)}, got {type(value).__name__} {value!r}"
    if matching[0] == "array" and isinstance(schema.get("items"), dict):
        for i, element in enumerate(value):
            err = type_error(element, schema["items"])
            if err:
                return f"element {i}: {err}"
    if matching[0] == "object" and isinstance(schema.get("properties"), dict):
        for key, element in value.items():
            if key in schema["properties"]:
                err = type_error(element, schema["properties"][key])
                if err:
                    return f"key {key!r}: {err}"
    return None


def value_matches(value: Any, accepted: Any, schema: dict) -> bool:
    """Whether `value` equals one acceptable value (see module docstring for the rules)."""
    if isinstance(value, bool) or isinstance(accepted, bool):
        return isinstance(value, bool) and isinstance(accepted, bool) and value == accepted
    if isinstance(value, str):
        return isinstance(accepted, str) and normalise_string(value) == normalise_string(accepted)
    if isinstance(value, (int, float)):
        return isinstance(accepted, (int, float)) and float(value) == float(accepted)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return (isinstance(accepted, list) and len(value) == len(accepted)
                and all(value_matches(v, a, items) for v, a in zip(value, accepted)))
    if isinstance(value, dict):
        if not isinstance(accepted, dict):
            return False
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        for key, v in value.items():
            if key not in accepted:
                return False
            alternatives = accepted[key] if isinstance(accepted[key], list) else [accepted[key]]
            if not any(value_matches(v, a, props.get(key, {})) for a in alternatives if a != ""):
                return False
        return all(key in value or (isinstance(alts, list) and "" in alts) for key, alts in accepted.items())
    return value == accepted


def _function(tool: dict) -> dict:
    return tool["function"] if tool.get("type") == "function" and "function" in tool else tool


def _check_one(call: dict, expected: dict, functions: dict[str, dict]) -> str | None:
    (name, params), = expected.items()
    if call.get("name") != name:
        return f"wrong function: expected {name}, got {call.get('name')}"
    if "invalid_arguments" in call:
        return f"{name}: arguments are not valid JSON: {call['invalid_arguments'][:200]!r}"
    schema = functions[name].get("parameters") or {}
    props = schema.get("properties") or {}
    args = call.get("arguments") or {}
    for key in schema.get("required") or []:
        if key not in args:
            return f"{name}: missing required parameter {key!r}"
    for key, value in args.items():
        if key not in props:
            return f"{name}: unknown parameter {key!r}"
        err = type_error(value, props[key])
        if err:
            return f"{name}.{key}: {err}"
        if key not in params:
            return f"{name}: parameter {key!r} should not be given"
        alternatives = [a for a in params[key] if a != ""]
        if not any(value_matches(value, a, props[key]) for a in alternatives):
            return f"{name}.{key}: {value!r} is not one of {alternatives!r}"
    for key, alternatives in params.items():
        if key not in args and "" not in alternatives:
            return f"{name}: parameter {key!r} is missing (expected one of {alternatives!r})"
    return None


def check_calls(calls: list[dict], ground_truth: list[dict], tools: list[dict]) -> CallCheck:
    """Check the model's `calls` ([{"name", "arguments"}]) against BFCL-style `ground_truth`."""
    functions = {_function(t)["name"]: _function(t) for t in tools}
    if not ground_truth:
        if calls:
            return CallCheck(False, f"irrelevant request: expected no call, got {len(calls)}")
        return CallCheck(True)
    if len(calls) != len(ground_truth):
        return CallCheck(False, f"expected {len(ground_truth)} call(s), got {len(calls)}")
    errors = [[_check_one(call, expected, functions) for call in calls] for expected in ground_truth]

    def assign(g: int, used: set[int]) -> bool:  # a perfect matching, found by backtracking
        if g == len(ground_truth):
            return True
        return any(errors[g][c] is None and c not in used and assign(g + 1, used | {c})
                   for c in range(len(calls)))

    if assign(0, set()):
        return CallCheck(True)
    for g, row in enumerate(errors):
        if all(e is not None for e in row):
            name = next(iter(ground_truth[g]))
            same_name = [e for c, e in enumerate(row) if calls[c].get("name") == name]
            return CallCheck(False, same_name[0] if same_name else row[0])
    return CallCheck(False, "no one-to-one assignment of the calls to the expected calls")


def _api_schema(schema: Any) -> Any:
    """A BFCL parameter schema with JSON-schema types, as the OpenAI API wants them."""
    if isinstance(schema, list):
        return [_api_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _api_schema(v) for k, v in schema.items() if k != "type"}
    if "type" in schema:
        types = [t for t in _types(schema) if t != "any"]
        if types:
            out["type"] = types[0] if len(types) == 1 else types
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _api_schema(v) for k, v in schema["properties"].items()}
    return out


def api_tools(tools: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """(OpenAI-style tools, {name sent: original name})."""
    out, names = [], {}
    for tool in tools:
        fn = copy.deepcopy(_function(tool))
        sent = _API_NAME.sub("_", fn["name"])
        names[sent] = fn["name"]
        fn["name"] = sent
        if "parameters" in fn:
            fn["parameters"] = _api_schema(fn["parameters"])
        out.append({"type": "function", "function": fn})
    return out, names


def validate_ground_truth(ground_truth: Any, functions: dict[str, dict], where: str) -> None:
    if not isinstance(ground_truth, list):
        raise EvalError(f"{where}: 'ground_truth' must be a list of {{function: {{param: [values]}}}}")
    for entry in ground_truth:
        if not (isinstance(entry, dict) and len(entry) == 1):
            raise EvalError(f"{where}: each ground-truth call must be one {{function: {{param: [values]}}}}")
        (name, params), = entry.items()
        if name not in functions:
            raise EvalError(f"{where}: ground truth calls {name!r}, which is not among the tools")
        if not isinstance(params, dict) or not all(isinstance(v, list) for v in params.values()):
            raise EvalError(f"{where}: ground truth of {name!r} must map each parameter to a list of "
                            f"acceptable values")


class FunctionCallKind(ChatKind):
    name = "function_call"
    description = "BFCL-style AST check of tool calls (parallel, optional params, irrelevance)"

    def validate(self, record: dict, where: str) -> None:
        if record.get("messages") is not None:
            check_messages(record["messages"], where)
        else:
            get_field(record, "question", str, where)
        tools = get_field(record, "tools", list, where)
        if not all(isinstance(t, dict) and isinstance(_function(t).get("name"), str) for t in tools):
            raise EvalError(f"{where}: each tool must be a function schema with a 'name'")
        validate_ground_truth(get_field(record, "ground_truth", list, where),
                              {_function(t)["name"]: _function(t) for t in tools}, where)

    def prepare(self, record: dict, rng: random.Random) -> Prompt:
        tools, names = api_tools(record["tools"])
        if record.get("messages"):
            messages = [dict(m) for m in record["messages"]]
        else:
            messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
            messages.append({"role": "user", "content": record["question"]})
        return Prompt(messages, tools, context={"names": names})

    def score(self, record: dict, prompt: Prompt, sample: ChatSample) -> Score:
        names = prompt.context["names"]
        calls = [{**c, "name": names.get(c.get("name"), c.get("name"))} for c in sample.tool_calls]
        result = check_calls(calls, record["ground_truth"], record["tools"])
        return Score(float(result.ok), {"reason": result.reason} if result.reason else {})
