"""StreamParser: any chunking gives parse()'s result, consistent deltas, no leaked markup."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glm45.chat import StreamParser, parse
from test_chat_parse import ASSISTANT, SOUP, TOOLS, rendered_output


def run(text, cuts, tools=TOOLS, enable_thinking=True):
    """Feed `text` split at `cuts`; return (per-feed delta lists, parser)."""
    p = StreamParser(tools, enable_thinking=enable_thinking)
    steps, prev = [], 0
    for c in [*sorted(set(cuts)), len(text)]:
        steps.append(p.feed(text[prev:c]))
        prev = c
    steps.append(p.finish())
    return steps, p


def collect(steps):
    """Join deltas: (reasoning, content, {index: header}, {index: arguments string})."""
    reasoning, content, headers, args = [], [], {}, {}
    for deltas in steps:
        for d in deltas:
            assert len(d) == 1
            if "reasoning_content" in d:
                reasoning.append(d["reasoning_content"])
            elif "content" in d:
                content.append(d["content"])
            else:
                (tc,) = d["tool_calls"]
                i = tc["index"]
                if "id" in tc:
                    assert i not in headers and i == len(headers)  # headers in order, once each
                    headers[i] = tc
                    args[i] = ""
                assert i in headers
                args[i] += tc["function"]["arguments"]
    return "".join(reasoning), "".join(content), headers, args


def check_stream(text, cuts, tools=TOOLS, enable_thinking=True):
    steps, p = run(text, cuts, tools, enable_thinking)
    final = parse(text, tools, enable_thinking=enable_thinking)
    assert p.result == final
    reasoning, content, headers, args = collect(steps)
    assert reasoning == (final["reasoning_content"] or "")
    assert content == final["content"]
    calls = final["tool_calls"]
    extra = len(headers) - len(calls)
    assert extra == 0 or (extra == 1 and final["incomplete_tool_call"] is not None)
    for i, c in enumerate(calls):
        assert headers[i]["function"]["name"] == c["name"]
        assert headers[i]["type"] == "function" and re.fullmatch(r"call_[0-9a-f]{24}", headers[i]["id"])
        assert json.loads(args[i]) == c["arguments"]
        if len(set(c["arguments"])) == len(c["arguments"]):
            assert args[i] == json.dumps(c["arguments"], ensure_ascii=False)
    assert p.tool_call_ids == [headers[i]["id"] for i in range(len(headers))]
    return steps, final


def cut_points(text):
    return st.lists(st.integers(0, len(text)), max_size=len(text) // 2 + 3)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_chunkings_of_rendered_outputs(data):
    text = rendered_output(data.draw(ASSISTANT))
    check_stream(text, data.draw(cut_points(text)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_chunkings_of_tag_soup(data):
    text = data.draw(SOUP)
    check_stream(text, data.draw(cut_points(text)), enable_thinking=data.draw(st.booleans()))


@settings(max_examples=100, deadline=None)
@given(ASSISTANT)
def test_single_characters(a):
    text = rendered_output(a)
    check_stream(text, range(len(text)))


CALL = ("\n<think>Check the weather.</think>\nLet me look.\n<tool_call>t\n<arg_key>s</arg_key>\n"
        "<arg_value>Paris, \"FR\"</arg_value>\n<arg_key>i</arg_key>\n<arg_value>3</arg_value>\n</tool_call>")


def test_whole_call_in_one_step():
    # several tokens per step, as MTP produces: everything in one feed still comes out right
    steps, final = check_stream(CALL, [])
    assert steps[0] == [
        {"reasoning_content": "Check the weather."},
        {"content": "Let me look."},
        {"tool_calls": [{"index": 0, "id": steps[0][2]["tool_calls"][0]["id"], "type": "function",
                         "function": {"name": "t", "arguments": '{"s": "Paris, \\"FR\\"", "i": 3}'}}]},
    ]


def test_arguments_stream_before_call_ends():
    p = StreamParser(TOOLS)
    p.feed("<tool_call>t\n<arg_key>i</arg_key>\n<arg_value>3</arg_value>\n")
    d = p.feed("<arg_key>s</arg_key>\n<arg_value>par")  # a string value streams while it is written
    assert d == [{"tool_calls": [{"index": 0, "function": {"arguments": ', "s": "par'}}]}]
    assert p.feed("t") == [{"tool_calls": [{"index": 0, "function": {"arguments": "t"}}]}]
    assert p.feed("</arg_v") == []  # maybe the closing tag: held back
    assert p.feed("alue>") == [{"tool_calls": [{"index": 0, "function": {"arguments": '"'}}]}]
    assert p.feed("\n</tool_call>") == [{"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}]
    assert p.finish() == []
    assert p.result["tool_calls"] == [{"name": "t", "arguments": {"i": 3, "s": "part"}}]


def test_non_string_value_sent_when_complete():
    p = StreamParser(TOOLS)
    header = p.feed("<tool_call>t\n<arg_key>")
    assert header[0]["tool_calls"][0]["function"] == {"name": "t", "arguments": ""}
    assert p.feed("o</arg_key><arg_value>{\"a\": ") == []
    assert p.feed("1}</arg_value>") == [{"tool_calls": [{"index": 0, "function": {"arguments": '{"o": {"a": 1}'}}]}]


def test_zero_argument_call_streamed():
    p = StreamParser(TOOLS)
    deltas = []
    for ch in "\n<think></think>\n<tool_call>now\n</tool_call>":
        deltas += p.feed(ch)
    deltas += p.finish()
    # the name is known at </tool_call>, so header and empty arguments arrive together
    assert [d["tool_calls"][0]["function"] for d in deltas] == [{"name": "now", "arguments": "{}"}]
    assert p.result["tool_calls"] == [{"name": "now", "arguments": {}}]


def test_tool_call_inside_think_streamed():
    steps, final = check_stream("<think>plan<tool_call>t\n<arg_key>i</arg_key><arg_value>1</arg_value></tool_call>"
                                "more</think>done", [3, 9, 14, 30, 60])
    assert final["tool_calls"] == [{"name": "t", "arguments": {"i": 1}}]
    assert final["reasoning_content"] == "planmore" and final["content"] == "done"


def test_thinking_off_never_reasoning():
    text = "<think>x</think>\nanswer"
    steps, final = check_stream(text, range(len(text)), enable_thinking=False)
    assert all("reasoning_content" not in d for ds in steps for d in ds)
    assert final["content"] == text


def test_no_markup_leaks_while_undecided():
    p = StreamParser(TOOLS)
    assert p.feed("Hello <") == [{"content": "Hello"}]
    assert p.feed("tool_c") == []
    assert p.feed("all>t") == []
    p.finish()
    assert p.result["content"] == "Hello"
    p = StreamParser(TOOLS)
    assert p.feed("<thi") == []  # could still open reasoning
    assert p.feed("nk>r") == [{"reasoning_content": "r"}]
    p = StreamParser(TOOLS)
    assert p.feed("\n<t") == []
    assert p.feed("x") == [{"content": "<tx"}]  # decided: not a tag after all


def test_truncated_stream_reports_incomplete():
    text = "ok <tool_call>t\n<arg_key>i</arg_key><arg_value>1</arg_value><arg_key>s</arg_key><arg_value>cut"
    steps, final = check_stream(text, [5, 20, 40])
    assert final["tool_calls"] == [] and final["incomplete_tool_call"]["arguments"] == {"i": 1}


def test_feed_errors():
    p = StreamParser()
    with pytest.raises(TypeError):
        p.feed(b"bytes")  # type: ignore[arg-type]
    p.finish()
    assert p.finish() == []
    with pytest.raises(RuntimeError, match="after finish"):
        p.feed("x")


def test_call_ids_unique():
    text = "<tool_call>a</tool_call>" * 5
    _, p = run(text, [])
    assert len(set(p.tool_call_ids)) == 5
