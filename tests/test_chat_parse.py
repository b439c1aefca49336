"""parse(): reasoning, content and tool calls from model output; render -> parse round trips; fuzzing."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glm45.chat import StreamParser, parse, render

TOOLS = [{
    "type": "function",
    "function": {"name": "t", "parameters": {"type": "object", "properties": {
        "s": {"type": "string"}, "s2": {"type": "string"}, "n": {"type": "number"}, "i": {"type": "integer"},
        "o": {"type": "object"}, "a": {"type": "array"}, "b": {"type": "boolean"},
        "maybe": {"type": ["string", "null"]}, "choice": {"enum": ["x", "1"]},
        "either": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "mixed": {"type": ["string", "integer"]},
    }}},
}, {"name": "bare", "parameters": {"properties": {"q": {"type": "string"}}}}]


def out(reasoning=None, content="", calls=()):
    """Model output text as the template writes an assistant turn (the part after <|assistant|>)."""
    text = f"\n<think>{reasoning}</think>" if reasoning is not None else "\n<think></think>"
    if content:
        text += "\n" + content
    for name, args in calls:
        text += f"\n<tool_call>{name}\n" + "".join(
            f"<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n" for k, v in args) + "</tool_call>"
    return text


def test_plain_content_without_think():
    r = parse("Hello there.")
    assert r == {"reasoning_content": None, "content": "Hello there.", "tool_calls": [], "incomplete_tool_call": None}


def test_reasoning_and_content():
    r = parse("\n<think>Let me think.\nStep 2.</think>\nThe answer is 4.\n")
    assert r["reasoning_content"] == "Let me think.\nStep 2."
    assert r["content"] == "The answer is 4."


def test_empty_think_is_no_reasoning():
    assert parse("\n<think></think>\nhi")["reasoning_content"] is None
    assert parse("<think>  \n </think>hi")["reasoning_content"] is None


def test_unclosed_think_is_all_reasoning():
    r = parse("\n<think>still thinking <tool_ about </thi")
    assert r["reasoning_content"] == "still thinking <tool_ about </thi"
    assert r["content"] == ""


def test_think_not_at_start_is_content():
    assert parse("x <think>y</think> z") == parse("x <think>y</think> z", enable_thinking=False)
    assert parse("x <think>y</think> z")["content"] == "x <think>y</think> z"


def test_thinking_off_everything_is_content():
    r = parse("<think>not reasoning</think>\nanswer", enable_thinking=False)
    assert r["reasoning_content"] is None
    assert r["content"] == "<think>not reasoning</think>\nanswer"
    assert parse("\nplain answer", enable_thinking=False)["content"] == "plain answer"


def test_tool_call_typed_by_schema():
    text = out("need weather", "Checking.", [("t", [
        ("s", " 42 "), ("s2", '{"a": 1}'), ("n", "3.5"), ("i", "7"), ("o", '{"k": [1, "é"]}'), ("a", "[1, 2]"),
        ("b", "true"), ("maybe", "null"), ("choice", "1"), ("either", "5"), ("mixed", "5"),
    ])])
    r = parse(text, TOOLS)
    assert r["reasoning_content"] == "need weather" and r["content"] == "Checking."
    assert r["tool_calls"] == [{"name": "t", "arguments": {
        "s": " 42 ", "s2": '{"a": 1}', "n": 3.5, "i": 7, "o": {"k": [1, "é"]}, "a": [1, 2], "b": True,
        "maybe": "null", "choice": "1", "either": "5", "mixed": 5}}]


def test_bare_function_declaration():
    r = parse(out(calls=[("bare", [("q", "123")])]), TOOLS)
    assert r["tool_calls"] == [{"name": "bare", "arguments": {"q": "123"}}]


def test_invalid_json_kept_raw_and_nan_rejected():
    r = parse(out(calls=[("t", [("n", "about 3"), ("i", "NaN"), ("o", "{bad}"), ("b", "Infinity")])]), TOOLS)
    assert r["tool_calls"][0]["arguments"] == {"n": "about 3", "i": "NaN", "o": "{bad}", "b": "Infinity"}


def test_undeclared_tool_kept_and_values_decoded():
    r = parse(out(calls=[("mystery", [("x", "1"), ("y", "hello"), ("z", '"quoted"'), ("w", "[true]")])]), TOOLS)
    assert r["tool_calls"] == [{"name": "mystery", "arguments": {"x": 1, "y": "hello", "z": "quoted", "w": [True]}}]
    # undeclared parameter of a declared tool: decoded too
    r = parse(out(calls=[("t", [("extra", "2")])]), TOOLS)
    assert r["tool_calls"][0]["arguments"] == {"extra": 2}


def test_zero_argument_and_several_calls():
    r = parse(out(calls=[("t", []), ("mystery", [("k", "1")]), ("t", [])]), TOOLS)
    assert r["tool_calls"] == [{"name": "t", "arguments": {}}, {"name": "mystery", "arguments": {"k": 1}},
                               {"name": "t", "arguments": {}}]
    assert parse("<tool_call>now</tool_call>")["tool_calls"] == [{"name": "now", "arguments": {}}]


@pytest.mark.parametrize("value", [
    'say "hi"', "back\\slash \\n not newline", "multi\nline\n\n", "</>", "<div class=\"x\">a &amp; b</div>",
    "</tool_call> inside", "<arg_key>k</arg_key> fake", "<tool_call>nested", "ends with <", "  ", "",
    "emoji 🙂 中文", "</arg_value", "<think>x</think>",
])
def test_string_values_exact(value):
    r = parse(out(calls=[("t", [("s", value), ("i", "1")])]), TOOLS)
    assert r["tool_calls"] == [{"name": "t", "arguments": {"s": value, "i": 1}}]
    assert r["content"] == "" and r["incomplete_tool_call"] is None


def test_tool_call_inside_think():
    text = "\n<think>I should call.<tool_call>t\n<arg_key>i</arg_key>\n<arg_value>1</arg_value>\n</tool_call>"
    r = parse(text, TOOLS)
    assert r["reasoning_content"] == "I should call."
    assert r["tool_calls"] == [{"name": "t", "arguments": {"i": 1}}]
    r = parse(text + " more thoughts</think>\nanswer", TOOLS)
    assert r["reasoning_content"] == "I should call. more thoughts" and r["content"] == "answer"
    assert len(r["tool_calls"]) == 1


def test_content_around_calls():
    text = "Before.\n<tool_call>t\n</tool_call>\nBetween.\n<tool_call>t\n</tool_call>\nAfter.\n"
    r = parse(text)
    assert r["content"] == "Before.\n\nBetween.\n\nAfter."
    assert len(r["tool_calls"]) == 2


def test_truncated_outputs():
    cases = {
        "<tool_call>get_wea": ("get_wea", {}),
        "<tool_call>t\n<arg_key>i</arg_key>\n<arg_value>1</arg_value>\n<arg_key>s": ("t", {"i": 1}),
        "<tool_call>t\n<arg_key>s</arg_key>\n<arg_value>half a val": ("t", {}),
        "<tool_call>t\n<arg_key>i</arg_key>\n<arg_value>1</arg_value>\n</tool_ca": ("t", {"i": 1}),
        "<tool_call>": (None, {}),
    }
    for text, (name, args) in cases.items():
        r = parse("Sure.\n" + text, TOOLS)
        assert r["tool_calls"] == [], text
        assert r["content"] == "Sure."
        inc = r["incomplete_tool_call"]
        assert inc == {"name": name, "arguments": args, "raw": text}, text


def test_truncated_tag_in_content_is_text():
    assert parse("answer <tool_c")["content"] == "answer <tool_c"
    assert parse("<thi")["content"] == "<thi"


def test_malformed_calls():
    # no name: dropped
    assert parse("<tool_call>\n<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>ok") == {
        "reasoning_content": None, "content": "ok", "tool_calls": [], "incomplete_tool_call": None}
    # key without value, stray text, missing </arg_key>
    r = parse("<tool_call>f\n<arg_key>lost</arg_key>\n<arg_key>a<arg_value>1</arg_value> junk </tool_call>")
    assert r["tool_calls"] == [{"name": "f", "arguments": {"a": 1}}]
    # missing </tool_call> before the next call
    r = parse("<tool_call>f\n<arg_key>a</arg_key><arg_value>1</arg_value>\n<tool_call>g\n</tool_call>")
    assert r["tool_calls"] == [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]
    # name then garbage lines: first line is the name
    assert parse("<tool_call> f \nnoise\n</tool_call>")["tool_calls"] == [{"name": "f", "arguments": {}}]
    # repeated key: the last value wins
    r = parse("<tool_call>f<arg_key>a</arg_key><arg_value>1</arg_value><arg_key>a</arg_key><arg_value>2</arg_value>"
              "</tool_call>")
    assert r["tool_calls"] == [{"name": "f", "arguments": {"a": 2}}]


def test_bytes_and_bad_types():
    assert parse("héllo".encode())["content"] == "héllo"
    assert parse(b"\xff\xfeok")["content"] == "\ufffd\ufffdok"
    with pytest.raises(TypeError):
        parse(None)  # type: ignore[arg-type]


def test_malformed_tools_ignored():
    bad_tools = [None, "x", {"function": 3}, {"function": {"name": "t", "parameters": "nope"}}]
    r = parse(out(calls=[("t", [("i", "1")])]), bad_tools)  # type: ignore[arg-type]
    assert r["tool_calls"] == [{"name": "t", "arguments": {"i": 1}}]


# ---- render -> parse round trips -----------------------------------------------------------
TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"]
PIECES = [*"ab \n\t<>/\"\\{}[]:,&;中é🙂x1", "</>", "<div>", "<|user|>", "null", "true", "  "]
TEXT = st.lists(st.sampled_from(PIECES), max_size=15).map("".join)
SAFE = TEXT.filter(lambda s: not any(t in s for t in TAGS))
STRING_VALUE = st.lists(st.sampled_from([*PIECES, "<tool_call>", "</tool_call>", "<arg_key>", "</think>"]),
                        max_size=15).map("".join)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | SAFE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SAFE, inner, max_size=3), max_leaves=8)
TYPED = {
    "s": STRING_VALUE, "s2": STRING_VALUE, "n": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
    "i": st.integers(), "o": st.dictionaries(SAFE, JSON_VALUE, max_size=3), "a": st.lists(JSON_VALUE, max_size=3),
    "b": st.booleans(),
}
UNDECLARED = JSON_VALUE.filter(lambda v: not isinstance(v, str))  # a string like "1" would decode as a number
KEY = SAFE.map(str.strip).filter(lambda k: k and k not in TYPED)


@st.composite
def arguments(draw):
    args = {k: draw(v) for k, v in TYPED.items() if draw(st.booleans())}
    args.update(draw(st.dictionaries(KEY, UNDECLARED, max_size=2)))
    return args


NAME = st.sampled_from(["t", "x_tool", "do.it", "工具"])
ASSISTANT = st.fixed_dictionaries({
    "reasoning": SAFE | st.none(), "content": SAFE,
    "calls": st.lists(st.tuples(st.just("t"), arguments()) | st.tuples(NAME, st.dictionaries(KEY, UNDECLARED,
                                                                                            max_size=3)), max_size=3),
})


def rendered_output(a, enable_thinking=True):
    msg = {"role": "assistant", "content": a["content"], "reasoning_content": a["reasoning"],
           "tool_calls": [{"function": {"name": n, "arguments": args}} for n, args in a["calls"]]}
    text = render([{"role": "user", "content": "q"}, msg], enable_thinking=enable_thinking)
    prompt = render([{"role": "user", "content": "q"}], enable_thinking=enable_thinking, add_generation_prompt=True)
    assert text.startswith(prompt)
    return text[len(prompt):]


def expected(a):
    return {"reasoning_content": (a["reasoning"] or "").strip() or None, "content": a["content"].strip(),
            "tool_calls": [{"name": n, "arguments": args} for n, args in a["calls"]], "incomplete_tool_call": None}


@settings(max_examples=300, deadline=None)
@given(ASSISTANT)
def test_render_parse_round_trip(a):
    assert parse(rendered_output(a), TOOLS) == expected(a)


@settings(max_examples=100, deadline=None)
@given(ASSISTANT.map(lambda a: {**a, "reasoning": None}))
def test_render_parse_round_trip_thinking_off(a):
    # with thinking off the prompt ends in <think></think>; the model writes the rest
    assert parse(rendered_output(a, enable_thinking=False), TOOLS, enable_thinking=False) == expected(a)


# ---- fuzzing: never raises ----------------------------------------------------------------------
SOUP = st.lists(st.sampled_from([*TAGS, *PIECES, "\n", "<", "</", "<tool", "</arg_v", "<|observation|>"]),
                max_size=60).map("".join)


def check_result(r):
    assert set(r) == {"reasoning_content", "content", "tool_calls", "incomplete_tool_call"}
    assert r["reasoning_content"] is None or isinstance(r["reasoning_content"], str)
    assert isinstance(r["content"], str)
    for c in r["tool_calls"]:
        assert isinstance(c["name"], str) and c["name"] and isinstance(c["arguments"], dict)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    check_result(parse(data, TOOLS))
    text = data.decode("utf-8", errors="surrogateescape")  # lone surrogates included
    check_result(parse(text, TOOLS))
    check_result(parse(text, TOOLS, enable_thinking=False))


@settings(max_examples=300, deadline=None)
@given(SOUP, st.booleans())
def test_fuzz_tag_soup(text, thinking):
    r = parse(text, TOOLS, enable_thinking=thinking)
    check_result(r)
    p = StreamParser(TOOLS, enable_thinking=thinking)
    for ch in text:
        p.feed(ch)
    p.finish()
    assert p.result == r


def test_large_tag_soup_is_fast():
    rng = random.Random(1)
    parts = [*TAGS, "abc ", "\n", "<", "value", "</"]
    text = "".join(rng.choice(parts) for _ in range(100_000))
    t0 = time.perf_counter()
    check_result(parse(text, TOOLS))
    p = StreamParser(TOOLS)
    for i in range(0, len(text), 7):
        p.feed(text[i:i + 7])
    p.finish()
    assert time.perf_counter() - t0 < 10
    # a long unterminated value is linear too
    t0 = time.perf_counter()
    p = StreamParser(TOOLS)
    p.feed("<tool_call>t\n<arg_key>s</arg_key>\n<arg_value>")
    for _ in range(20_000):
        p.feed("xxxxxxxxx<")
    p.finish()
    assert time.perf_counter() - t0 < 5
