"""encode_chat(): ids equal tokenising the render; the mask covers what the assistant produced."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glm45.chat import ChatFormatError, encode_chat, normalize_messages, render
from glm45.tokenizer import train_tokenizer
from test_chat_render import MESSAGE, WEATHER

TOOL_CALL = {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
CONV = [
    {"role": "system", "content": "Be helpful."},
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "reasoning_content": "Use the tool.", "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "call_9", "content": "rain, 8°C"},
    {"role": "assistant", "content": "Rainy, 8°C.", "reasoning_content": "Report it."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You're welcome."},
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([json.dumps(CONV), "the weather in Oslo is rainy and 8 degrees"] * 30, 500)


def masked_text(tok, ids, mask, want=1):
    """The decoded runs of tokens with mask == want, one string per run."""
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m == want:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_ids_equal_tokenised_render(tok):
    ids, mask = encode_chat(tok, CONV, [WEATHER])
    clean = normalize_messages(CONV)
    assert ids[:-1] == tok.encode(render(clean, [WEATHER]))
    assert ids[-1] == tok.special_ids["<|endoftext|>"] and mask[-1] == 1
    assert len(mask) == len(ids) and set(mask) <= {0, 1}


def test_mask_covers_assistant_turns_and_stop_tokens(tok):
    ids, mask = encode_chat(tok, CONV, [WEATHER])
    # the first two assistant turns come before the last user message: the template drops their reasoning
    assert masked_text(tok, ids, mask) == [
        "\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n"
        "</tool_call><|observation|>",
        "\n<think></think>\nRainy, 8°C.<|user|>",
        "\n<think></think>\nYou're welcome.<|endoftext|>",
    ]
    prompt = "".join(masked_text(tok, ids, mask, want=0))
    assert "<|assistant|>" in prompt and "Weather in Oslo?" in prompt and "rain, 8°C" in prompt


def test_reasoning_of_final_turn_is_trained(tok):
    conv = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "add"}]
    ids, mask = encode_chat(tok, conv)
    assert masked_text(tok, ids, mask) == ["\n<think>add</think>\n4<|endoftext|>"]


def test_final_tool_call_turn_ends_with_observation(tok):
    conv = [{"role": "user", "content": "w?"}, {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]}]
    ids, mask = encode_chat(tok, conv, [WEATHER])
    assert ids[-1] == tok.special_ids["<|observation|>"] and mask[-1] == 1


def test_thinking_off_empty_think_is_prompt(tok):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}]
    ids, mask = encode_chat(tok, conv, enable_thinking=False)
    assert ids[:-1] == tok.encode(render(conv, enable_thinking=False))
    assert masked_text(tok, ids, mask) == ["\nhello<|user|>", "\nciao<|endoftext|>"]
    assert "/nothink" in tok.decode(ids)


def test_no_trailing_stop_after_user(tok):
    conv = [{"role": "user", "content": "hi"}]
    ids, mask = encode_chat(tok, conv)
    assert ids == tok.encode(render(conv)) and set(mask) == {0}


def test_openai_shapes_encode_like_clean_messages(tok):
    clean = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}]
    openai = [{"role": "developer", "content": [{"type": "text", "text": "sys"}]}, {"role": "user", "content": "q"},
              {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}]
    assert encode_chat(tok, openai, [WEATHER]) == encode_chat(tok, clean, [WEATHER])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(MESSAGE, max_size=6), thinking=st.booleans())
def test_random_conversations(tok, messages, thinking):
    try:
        clean = normalize_messages(messages)
    except ChatFormatError:
        return  # e.g. a tool call without a usable name; rejected before encoding
    ids, mask = encode_chat(tok, messages, [WEATHER], enable_thinking=thinking)
    text_ids = tok.encode(render(clean, [WEATHER], enable_thinking=thinking))
    ends_assistant = bool(clean) and clean[-1]["role"] == "assistant"
    assert ids == text_ids + ([ids[-1]] if ends_assistant else [])
    assert len(mask) == len(ids)
    for i, m in zip(ids, mask):
        if i in (tok.special_ids["<|assistant|>"], tok.special_ids["<|system|>"], tok.special_ids["[gMASK]"]):
            assert m == 0
    # every trained run starts right after an <|assistant|> token or is a stop token after assistant output
    for k in range(len(ids)):
        if mask[k] and (k == 0 or not mask[k - 1]):
            assert ids[k - 1] == tok.special_ids["<|assistant|>"] or (
                not thinking and ids[k - 1] == tok.special_ids["</think>"]) or (
                ids[k] in tok.stop_token_ids and k > 0)


# ---- normalize_messages ----------------------------------------------------------------------
def test_normalize_messages():
    out = normalize_messages([
        {"role": "developer", "content": "d"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, "b", {"type": "input_text", "text": "c"}]},
        {"role": "assistant", "content": None, "reasoning": "r", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": None, "tool_call_id": "call_9", "extra": 1},
    ])
    assert out == [
        {"role": "system", "content": "d"},
        {"role": "user", "content": "abc"},
        {"role": "assistant", "content": "", "reasoning_content": "r", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}, "id": "call_9"}]},
        {"role": "tool", "content": "", "tool_call_id": "call_9"},
    ]


@pytest.mark.parametrize("messages,match", [
    ("hi", "messages must be a list"),
    ([{"role": "robot", "content": "x"}], "role must be one of"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "'image_url' is not supported"),
    ([{"role": "user", "content": 5}], "content must be a string"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}], "not valid JSON"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": " ", "arguments": "{}"}}]}], "needs a function name"),
])
def test_normalize_errors(messages, match):
    with pytest.raises(ChatFormatError, match=match):
        normalize_messages(messages)
