"""Text in and out: prompts through the tokenizer and chat template, streaming text, stop
strings across token boundaries, and the `glm45 generate` / `glm45 chat` commands."""

import io
import json

import pytest

from glm45.chat import render
from glm45.cli import main as cli_main
from glm45.infer import Engine, RequestOutput, SamplingParams
from glm45.infer.cli_chat import ChatSession
from glm45.infer.detok import TextTracker
from glm45.model import GLM45ForCausalLM
from glm45.tokenizer import train_tokenizer
from helpers_model import randomize, tiny_config

CORPUS = [f"The quick brown fox {i} jumps over the lazy dog. Hello world, stop here END of line {i * 7}."
          for i in range(300)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 400)


@pytest.fixture(scope="module")
def model(tok):
    cfg = tiny_config(vocab_size=tok.vocab_size, eos_token_id=tok.stop_token_ids, pad_token_id=tok.pad_token_id)
    return randomize(GLM45ForCausalLM(cfg), seed=41).eval()


@pytest.fixture(scope="module")
def ckpt(model, tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(d, tokenizer=tok)
    return d


def stream(engine, prompt, params):
    rid = engine.add_request(prompt, params)
    pieces, final = [], None
    while final is None:
        for out in engine.step():
            if out.request_id == rid:
                pieces.append(out.new_text)
                final = out.result if out.finished else None
    return pieces, final


def test_stop_string_is_found_across_token_boundaries_and_excluded(model, tok):
    engine = Engine(model, tok, max_seq_len=128)
    prompt = "The quick brown"
    free = engine.generate(prompt, SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))[0]
    assert free.text == tok.decode(free.token_ids)
    ids = free.token_ids
    # A two-character stop string made of the last character of token k and the first of k + 1.
    for k in range(1, len(ids) - 1):
        before, upto = tok.decode(ids[:k]), tok.decode(ids[:k + 1])
        if not before or before + tok.decode(ids[k:k + 1]) != upto or not free.text.startswith(upto):
            continue  # bytes of one character split across these tokens
        a = len(before)
        stop = free.text[a - 1:a + 1]
        if len(stop) == 2 and "\ufffd" not in stop and free.text.find(stop) == a - 1:
            break
    else:
        pytest.skip("no usable token boundary in this output")
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=[stop, "never-there"])
    pieces, res = stream(engine, prompt, params)
    assert res.finish_reason == "stop"
    assert res.text == free.text[:a - 1]
    assert "".join(pieces) == res.text  # nothing streamed that the stop string later took back
    assert res.token_ids == ids[:k + 1]


def test_streamed_text_concatenates_to_the_decoded_output(model, tok):
    engine = Engine(model, tok, max_seq_len=128, speculative=True)
    pieces, res = stream(engine, "Hello world", SamplingParams(max_tokens=25, temperature=1.0, seed=4))
    assert "".join(pieces) == res.text
    body = res.token_ids[:-1] if res.finish_reason == "stop" else res.token_ids
    assert res.text == tok.decode(body)
    if res.finish_reason == "stop":
        assert res.token_ids[-1] in tok.stop_token_ids


def test_text_tracker_holds_back_possible_stop_prefixes(tok):
    t = TextTracker(tok, ["END"])
    ids = tok.encode("stop here END of line")
    sent, stopped = "", False
    for i in ids:
        stopped = t.add(i)
        sent += t.take(final=stopped)
        assert not sent.endswith(("E", "EN")) or stopped
        if stopped:
            break
    assert stopped and sent == t.text == "stop here "


def test_chat_prompts_use_the_template(model, tok):
    engine = Engine(model, tok, max_seq_len=256)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}]
    assert engine.prompt_ids(msgs) == tok.encode(render(msgs, add_generation_prompt=True))
    no_think = engine.prompt_ids({"messages": msgs, "enable_thinking": False})
    assert no_think == tok.encode(render(msgs, enable_thinking=False, add_generation_prompt=True))
    results = engine.generate([msgs, "Hello", [5, 6, 7]], SamplingParams(max_tokens=3, temperature=0.0))
    assert len(results) == 3 and results[0].prompt_token_ids == engine.prompt_ids(msgs)


def test_generate_command_jsonl(ckpt, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "prompt": "The quick", "max_tokens": 4, "temperature": 0},
        {"prompt_token_ids": [5, 6, 7], "max_tokens": 3, "logprobs": 1, "temperature": 0},
        {"messages": [{"role": "user", "content": "Hello"}], "enable_thinking": False, "max_tokens": 5},
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    rc = cli_main(["generate", "--model", str(ckpt), "-i", str(src), "-o", str(out), "--seed", "1",
                   "--ignore-eos", "--speculative"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", 1, 2]
    assert [len(r["token_ids"]) for r in rows] == [4, 3, 5]
    assert len(rows[1]["logprobs"]) == 3 and "message" in rows[2]
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["generated_tokens"] == 12 and "acceptance_rate" in summary
    # The same greedy prompt through the engine directly (eager, not speculative).
    engine = Engine.from_pretrained(ckpt)
    assert rows[0]["token_ids"] == engine.generate("The quick", SamplingParams(
        max_tokens=4, temperature=0, ignore_eos=True))[0].token_ids
    src.write_text('{"prompt": "ok"}\n{"prompt": 5}\n')
    assert cli_main(["generate", "--model", str(ckpt), "-i", str(src)]) == 2
    assert "in.jsonl:2" in capsys.readouterr().err


class ScriptedEngine:
    """Stands in for the engine to drive ChatSession with a known reply, chunk by chunk."""

    def __init__(self, chunks):
        self.chunks, self.prompts = chunks, []

    def add_request(self, prompt, params):
        self.prompts.append(prompt)
        return "r"

    def step(self):
        text = self.chunks.pop(0)
        return [RequestOutput("r", [1], text, not self.chunks, "stop" if not self.chunks else None)]


def test_chat_session_shows_reasoning_dimmed_and_tool_calls_parsed():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]
    reply = "\n<think>Need the weather.</think>\nLet me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n" \
            "<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"
    chunks = [reply[i:i + 7] for i in range(0, len(reply), 7)]
    out = io.StringIO()
    session = ChatSession(ScriptedEngine(chunks), SamplingParams(), tools, system="sys", out=out, color=True)
    session.messages.append({"role": "user", "content": "weather?"})
    result = session.reply()
    shown = out.getvalue()
    assert "\x1b[2mNeed the weather.\x1b[0m" in shown.replace("\x1b[0m\x1b[2m", "")
    assert "Let me check." in shown and "<tool_call>" not in shown
    assert '[tool call] get_weather {"city": "Paris", "days": 3}' in shown
    assert result["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]
    last = session.messages[-1]
    assert last["role"] == "assistant" and last["reasoning_content"] == "Need the weather."
    assert last["tool_calls"][0]["name"] == "get_weather"
    render(session.messages, tools)  # the recorded history renders


def test_chat_command_toggles_thinking_and_resets(ckpt, tmp_path, monkeypatch, capsys):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps({"tools": [{"type": "function", "function": {"name": "lookup"}}]}))
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/nothink\nagain\n/tools\n/reset\n/exit\n"))
    rc = cli_main(["chat", "--model", str(ckpt), "--tools", str(tools), "--max-tokens", "4", "--no-color",
                   "--seed", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "[thinking off]" in out and "[tools] lookup" in out and "[conversation cleared]" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli_main(["chat", "--model", str(ckpt), "--tools", str(bad)]) == 2
