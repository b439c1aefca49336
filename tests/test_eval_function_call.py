"""BFCL-style AST checking: every rule on its own."""

from __future__ import annotations

import random

import pytest

from glm45.eval.backend import ChatSample, EvalError
from glm45.eval.function_call import FunctionCallKind, api_tools, check_calls, normalise_string

AREA = {
    "name": "geometry.area",
    "description": "Area of a shape.",
    "parameters": {
        "type": "dict",
        "properties": {
            "shape": {"type": "string"},
            "base": {"type": "integer"},
            "height": {"type": "float"},
            "unit": {"type": "string", "description": "optional"},
            "exact": {"type": "boolean"},
            "sides": {"type": "array", "items": {"type": "integer"}},
            "options": {"type": "dict", "properties": {"precision": {"type": "integer"}, "label": {"type": "string"}}},
        },
        "required": ["shape", "base"],
    },
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOLS = [AREA, WEATHER]


def gt(**params):
    return [{"geometry.area": {"shape": ["triangle"], "base": [10], "height": [5.0, ""], "unit": ["cm", ""],
                               "exact": [True, ""], "sides": [[3, 4, 5], ""],
                               "options": [{"precision": [2], "label": ["x", ""]}, ""], **params}}]


def call(**arguments):
    return {"name": "geometry.area", "arguments": {"shape": "triangle", "base": 10, **arguments}}


def check(calls, ground_truth=None):
    return check_calls(calls, gt() if ground_truth is None else ground_truth, TOOLS)


def test_exact_match_passes():
    assert check([call(height=5.0, unit="cm", exact=True, sides=[3, 4, 5], options={"precision": 2})]).ok


def test_function_name_must_match():
    r = check([{"name": "geometry.perimeter", "arguments": {"shape": "triangle", "base": 10}}])
    assert not r.ok and "wrong function" in r.reason


def test_required_parameter_missing():
    r = check([{"name": "geometry.area", "arguments": {"shape": "triangle"}}])
    assert not r.ok and "missing required parameter 'base'" in r.reason


def test_unknown_parameter_rejected():
    r = check([call(colour="red")])
    assert not r.ok and "unknown parameter 'colour'" in r.reason


def test_parameter_outside_the_ground_truth_rejected():
    r = check([call(unit="cm")], ground_truth=[{"geometry.area": {"shape": ["triangle"], "base": [10]}}])
    assert not r.ok and "should not be given" in r.reason


def test_integer_type_is_strict():
    r = check([call(base=10.0)])
    assert not r.ok and "expected integer" in r.reason
    r = check([call(base="10")])
    assert not r.ok and "expected integer" in r.reason
    r = check([call(base=True)])  # a bool is not an int here
    assert not r.ok and "expected integer" in r.reason


def test_int_is_promoted_to_float():
    assert check([call(height=5)]).ok
    r = check([call(height=6)])
    assert not r.ok and "height" in r.reason
    r = check([call(height="5.0")])
    assert not r.ok and "expected number" in r.reason


def test_boolean_is_not_an_int():
    r = check([call(exact=1)])
    assert not r.ok and "expected boolean" in r.reason


def test_string_normalisation():
    assert normalise_string("New York, NY") == normalise_string("new york ny")
    assert check([call(shape="Triangle")]).ok
    assert check([call(shape=" tri-angle. ")]).ok
    assert not check([call(shape="square")]).ok


def test_optional_parameters_may_be_omitted_or_must_match():
    assert check([call()]).ok  # all optional ones left out
    r = check([call(unit="mm")])
    assert not r.ok and "'mm' is not one of ['cm']" in r.reason
    # a parameter the ground truth needs (no "") must be given even when the schema calls it optional
    r = check([call()], ground_truth=gt(unit=["cm"]))
    assert not r.ok and "parameter 'unit' is missing" in r.reason


def test_lists_are_checked_in_order_with_element_types():
    assert check([call(sides=[3, 4, 5])]).ok
    assert not check([call(sides=[5, 4, 3])]).ok
    r = check([call(sides=[3, 4.5, 5])])
    assert not r.ok and "element 1" in r.reason


def test_nested_objects():
    assert check([call(options={"precision": 2, "label": "X"})]).ok
    assert check([call(options={"precision": 2})]).ok
    assert not check([call(options={"precision": 3})]).ok
    assert not check([call(options={"precision": 2, "other": 1})]).ok
    r = check([call(options={"precision": "2"})])
    assert not r.ok and "expected integer" in r.reason


def test_parallel_calls_match_in_any_order():
    truth = [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Berlin", "Berlin, Germany"]}}]
    paris = {"name": "get_weather", "arguments": {"city": "paris"}}
    berlin = {"name": "get_weather", "arguments": {"city": "Berlin, Germany"}}
    assert check([paris, berlin], truth).ok
    assert check([berlin, paris], truth).ok
    r = check([paris, paris], truth)
    assert not r.ok
    r = check([paris], truth)
    assert not r.ok and "expected 2 call(s), got 1" in r.reason


def test_irrelevance_means_no_call():
    assert check([], []).ok
    r = check([{"name": "get_weather", "arguments": {"city": "Rome"}}], [])
    assert not r.ok and "expected no call" in r.reason
    assert not check([], gt()).ok


def test_invalid_json_arguments_fail():
    r = check([{"name": "get_weather", "arguments": {}, "invalid_arguments": "{city: Rome"}],
              [{"get_weather": {"city": ["Rome"]}}])
    assert not r.ok and "not valid JSON" in r.reason


def test_api_tools_rename_and_retype():
    tools, names = api_tools(TOOLS)
    fn = tools[0]["function"]
    assert tools[0]["type"] == "function" and fn["name"] == "geometry_area"
    assert names == {"geometry_area": "geometry.area", "get_weather": "get_weather"}
    assert fn["parameters"]["type"] == "object"
    assert fn["parameters"]["properties"]["height"]["type"] == "number"
    assert fn["parameters"]["properties"]["options"]["type"] == "object"
    assert AREA["name"] == "geometry.area"  # the record itself is untouched


def test_kind_maps_api_names_back_and_validates():
    kind = FunctionCallKind()
    record = {"id": "1", "question": "Area of a triangle, base 10?", "tools": TOOLS,
              "ground_truth": [{"geometry.area": {"shape": ["triangle"], "base": [10]}}]}
    kind.validate(record, "t:1")
    prompt = kind.prepare(record, random.Random(0))
    assert prompt.tools[0]["function"]["name"] == "geometry_area"
    sample = ChatSample(tool_calls=[{"name": "geometry_area", "arguments": {"shape": "triangle", "base": 10}}])
    assert kind.score(record, prompt, sample).value == 1.0
    assert kind.score(record, prompt, ChatSample(content="It is 25.")).value == 0.0
    with pytest.raises(EvalError, match="not among the tools"):
        kind.validate({**record, "ground_truth": [{"nope": {}}]}, "t:1")
    with pytest.raises(EvalError, match="list of acceptable values"):
        kind.validate({**record, "ground_truth": [{"get_weather": {"city": "Rome"}}]}, "t:1")
