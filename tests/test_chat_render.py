"""render(): the GLM-4.5 chat template, rule by rule and against transformers' apply_chat_template."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glm45.chat import CHAT_TEMPLATE, ChatFormatError, render, render_pieces
from glm45.tokenizer import train_tokenizer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "天气 for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}

TOOLS_BLOCK = (
    "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "天气 for a city", "parameters": '
    '{"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}\n'
    "</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n"
    "<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
    "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)


def call(name, args):
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}


# ---- rule by rule ------------------------------------------------------------------------------
def test_prefix_and_basic_turns():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    assert render(msgs) == ("[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi<|assistant|>\n<think></think>\nHello!"
                            "<|user|>\nBye")
    assert render(msgs, add_generation_prompt=True).endswith("<|user|>\nBye<|assistant|>")
    assert render([]) == "[gMASK]<sop>"


def test_tools_block_then_system():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render(msgs, [WEATHER, CLOCK]) == "[gMASK]<sop>" + TOOLS_BLOCK + "<|system|>\nS<|user|>\nU"
    assert render(msgs, []) == render(msgs)  # an empty tool list writes no block


def test_reasoning_only_after_last_user():
    msgs = [{"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1", "reasoning_content": "old thoughts"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "  a2  ", "reasoning_content": "\n new thoughts \n"}]
    out = render(msgs)
    assert "old thoughts" not in out
    assert out.endswith("<|user|>\nq1<|assistant|>\n<think></think>\na1<|user|>\nq2<|assistant|>"
                        "\n<think>new thoughts</think>\na2")


def test_reasoning_from_inline_think():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nplan\n</think>\n\nanswer"}]
    assert render(msgs).endswith("<|assistant|>\n<think>plan</think>\nanswer")
    # an explicit reasoning_content wins and the content is then taken as written
    msgs[1]["reasoning_content"] = "R"
    assert render(msgs).endswith("<|assistant|>\n<think>R</think>\n<think>\nplan\n</think>\n\nanswer")
    # other names for reasoning, as transformers aliases them
    assert render([{"role": "assistant", "content": "c", "reasoning": "via alias"}]).endswith(
        "\n<think>via alias</think>\nc")


def test_tool_calls_format():
    args = {"city": "Zürich", "days": 3, "opts": {"unit": "°C", "alerts": [True, None]}, "note": "a\nb \"q\""}
    msgs = [{"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [call("get_weather", args), call("now", {})]}]
    assert render(msgs, [WEATHER]).endswith(
        "<|assistant|>\n<think></think>\n<tool_call>get_weather\n"
        "<arg_key>city</arg_key>\n<arg_value>Zürich</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n"
        '<arg_key>opts</arg_key>\n<arg_value>{"unit": "°C", "alerts": [true, null]}</arg_value>\n'
        '<arg_key>note</arg_key>\n<arg_value>a\nb "q"</arg_value>\n'
        "</tool_call>\n<tool_call>now\n</tool_call>")
    # JSON-string arguments render like the dict; the bare {"name", "arguments"} shape works too
    as_string = [msgs[0], {"role": "assistant", "content": "", "tool_calls": [
        call("get_weather", json.dumps(args)), {"name": "now", "arguments": "{}"}]}]
    assert render(as_string, [WEATHER]) == render(msgs, [WEATHER])


def test_content_before_tool_calls():
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": "\nLet me check.\n", "tool_calls": [call("now", {})]}]
    assert render(msgs).endswith("<|assistant|>\n<think></think>\nLet me check.\n<tool_call>now\n</tool_call>")


def test_tool_results_grouped():
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [call("now", {}), call("now", {})]},
            {"role": "tool", "content": "12:00"}, {"role": "tool", "content": "12:01"},
            {"role": "assistant", "content": "It is noon."}]
    assert render(msgs).endswith(
        "</tool_call><|observation|>\n<tool_response>\n12:00\n</tool_response>\n<tool_response>\n12:01\n"
        "</tool_response><|assistant|>\n<think></think>\nIt is noon.")


def test_thinking_off():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c/nothink"}]
    out = render(msgs, enable_thinking=False, add_generation_prompt=True)
    assert out == ("[gMASK]<sop><|user|>\na/nothink<|assistant|>\n<think></think>\nb<|user|>\nc/nothink"
                   "<|assistant|>\n<think></think>")


def test_content_parts_and_none():
    parts = [{"type": "text", "text": "one "}, {"type": "image_url", "image_url": {"url": "x"}}, "two"]
    assert render([{"role": "user", "content": parts}]) == "[gMASK]<sop><|user|>\none two"
    assert render([{"role": "system", "content": parts}]) == "[gMASK]<sop><|system|>\none two"
    # None-valued keys count as absent, as transformers drops them
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "reasoning_content": None, "tool_calls": [call("now", {})]}]
    assert render(msgs).endswith("<|assistant|>\n<think></think>\n<tool_call>now\n</tool_call>")


def test_unknown_roles_render_nothing():
    assert render([{"role": "developer", "content": "x"}, {"content": "y"}]) == "[gMASK]<sop>"


def test_errors():
    with pytest.raises(ChatFormatError, match="messages must be a list"):
        render("hello")  # type: ignore[arg-type]
    with pytest.raises(ChatFormatError, match="message 0 must be an object"):
        render(["hello"])  # type: ignore[list-item]
    with pytest.raises(ChatFormatError, match="not valid JSON"):
        render([{"role": "assistant", "tool_calls": [call("f", "{bad")]}])
    with pytest.raises(ChatFormatError, match="must be a JSON object"):
        render([{"role": "assistant", "tool_calls": [call("f", "[1, 2]")]}])
    with pytest.raises(ChatFormatError, match="needs a string 'name'"):
        render([{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}])
    with pytest.raises(ChatFormatError, match="not JSON-serialisable"):
        render([{"role": "assistant", "tool_calls": [call("f", {"x": object()})]}])
    assert issubclass(ChatFormatError, ValueError)


def test_pieces_join_to_render():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_calls": [call("now", {})]},
            {"role": "tool", "content": "r"}, {"role": "assistant", "content": "done"}]
    pieces = render_pieces(msgs, [CLOCK])
    assert "".join(p.text for p in pieces) == render(msgs, [CLOCK])
    trained = "".join(p.text for p in pieces if p.trained)
    assert trained == ("\n<think></think>\na\n<tool_call>now\n</tool_call><|observation|>"
                       "\n<think></think>\ndone")


# ---- against transformers' apply_chat_template --------------------------------------------------
@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(["some text for a tiny tokenizer"] * 20, 300).save(d)
    tok = transformers.AutoTokenizer.from_pretrained(d)
    assert tok.chat_template == CHAT_TEMPLATE
    return tok


def hf_render(hf, messages, tools=None, **kw):
    return hf.apply_chat_template(messages, tools=tools, tokenize=False, **kw)


CASES = [
    ([{"role": "user", "content": "hi"}], None),
    ([{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": "a"}, "b"]},
      {"role": "assistant", "content": "<think>\nx\n</think>\ny"}], [WEATHER]),
    ([{"role": "user", "content": "w?"},
      {"role": "assistant", "content": None, "reasoning_content": "call it",
       "tool_calls": [call("get_weather", {"city": "Paris", "days": 2, "x": [1, {"é": None}]}), call("now", {})]},
      {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "10:00"},
      {"role": "assistant", "content": "Sunny at 10.", "reasoning_content": "done"}], [WEATHER, CLOCK]),
    ([{"role": "tool", "content": [{"type": "text", "text": "t"}, {"output": "o"}, "s"]},
      {"role": "tool", "content": "after list"}, {"role": "user", "content": "u/nothink"}], None),
    ([{"role": "assistant", "content": "no user at all", "reasoning_content": "kept"},
      {"role": "developer", "content": "ignored"}, {"role": "system", "content": 42}], []),
    ([{"role": "user", "content": "  spaced  "}, {"role": "assistant", "content": "  \n  ", "reasoning_content": "  "}],
     None),
]


@pytest.mark.parametrize("messages,tools", CASES)
@pytest.mark.parametrize("enable_thinking", [True, False])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_apply_chat_template(hf, messages, tools, enable_thinking, add_generation_prompt):
    kw = dict(enable_thinking=enable_thinking, add_generation_prompt=add_generation_prompt)
    assert render(messages, tools, **kw) == hf_render(hf, messages, tools, **kw)


def test_matches_apply_chat_template_thinking_unset(hf):
    for messages, tools in CASES:
        assert render(messages, tools, add_generation_prompt=True) == hf_render(
            hf, messages, tools, add_generation_prompt=True)


# Random conversations: text with markup-like characters, every message shape the template knows.
TEXT = st.lists(st.sampled_from([*"ab c\n\t<>/\"\\{}中é🙂", "<think>", "</think>", "/nothink", "<tool_call>"]),
                max_size=12).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
CONTENT = TEXT | st.none() | st.lists(TEXT | st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=3)
TOOL_CALL = st.builds(lambda n, a, wrap: call(n, a) if wrap else {"name": n, "arguments": a},
                      st.sampled_from(["get_weather", "now", "f"]), st.dictionaries(TEXT, JSON_VALUES, max_size=3),
                      st.booleans())
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.just("user"), "content": CONTENT}),
    st.fixed_dictionaries({"role": st.just("system"), "content": CONTENT}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": CONTENT},
                          optional={"reasoning_content": TEXT | st.none(),
                                    "tool_calls": st.lists(TOOL_CALL, max_size=2)}),
    st.fixed_dictionaries({"role": st.just("tool"), "content": TEXT | st.none() | st.lists(
        TEXT | st.fixed_dictionaries({"output": TEXT}) | st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
        max_size=2)}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(MESSAGE, min_size=1, max_size=6), tools=st.sampled_from([None, [], [WEATHER], [WEATHER, CLOCK]]),
       enable_thinking=st.booleans(), add_generation_prompt=st.booleans())
def test_random_conversations_match_apply_chat_template(hf, messages, tools, enable_thinking, add_generation_prompt):
    kw = dict(enable_thinking=enable_thinking, add_generation_prompt=add_generation_prompt)
    assert render(messages, tools, **kw) == hf_render(hf, messages, tools, **kw)
