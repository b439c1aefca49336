"""SFT datasets: assistant-only masks checked against the rendered text, turn splitting, the
thinking / non-thinking ratio, best-fit packing with per-sample attention isolation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glm45.chat import render
from glm45.data.document import Document
from glm45.data.loader import PackedLoader
from glm45.data.shards import PackedDataset
from glm45.sft.dataset import SFTDataConfig, build_sft_dataset, encode_sample, encode_samples
from glm45.sft.records import SFTError, read_samples, sample_document, thinking_mode, with_thinking_mode
from glm45.tokenizer import train_tokenizer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "reasoning_content": "I should call the tool.", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"sky": "rain"}'},
    {"role": "assistant", "content": "It rains in Oslo.", "reasoning_content": "The tool says rain."},
    {"role": "user", "content": "And tomorrow?"},
    {"role": "assistant", "content": "I cannot tell.", "reasoning_content": "No forecast tool."},
]


@pytest.fixture(scope="module")
def tok():
    texts = [json.dumps(CONV), json.dumps(TOOLS), "the weather in Oslo is rainy, call the tool"] * 20
    return train_tokenizer(texts, 400)


def runs(tok, ids, mask):
    """Decoded runs of trained tokens."""
    out, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(int(i))
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


def doc(messages, tools=None, **meta):
    return Document(text="", id=meta.pop("id", ""), meta=meta, messages=messages, tools=tools)


def test_masks_cover_exactly_the_assistant_text(tok):
    """Unsplit: every trained run is assistant output in the rendered text, and the untrained
    text is exactly the rest of the render."""
    (t,) = encode_sample(tok, doc(CONV[:5], TOOLS), split_turns=True)  # one user turn: nothing to split
    text = render(CONV[:5], TOOLS)
    trained = runs(tok, t.ids, t.mask)
    assert trained == [
        "\n<think>I should call the tool.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
        "<arg_value>Oslo</arg_value>\n</tool_call><|observation|>",
        "\n<think>The tool says rain.</think>\nIt rains in Oslo.<|endoftext|>",
    ]
    untrained = tok.decode([int(i) for i, m in zip(t.ids, t.mask) if not m])
    # the render with the trained runs removed (the appended stop token is not in the render)
    rest = text
    for r in trained:
        rest = rest.replace(r.removesuffix("<|endoftext|>"), "", 1)
    assert untrained == rest
    assert tok.decode([int(i) for i in t.ids[:-1]]) == text


def test_split_turns_trains_each_turn_with_its_reasoning(tok):
    seqs = encode_sample(tok, doc(CONV, TOOLS), split_turns=True)
    assert len(seqs) == 2
    first, second = (runs(tok, s.ids, s.mask) for s in seqs)
    assert first[-1] == "\n<think>The tool says rain.</think>\nIt rains in Oslo.<|endoftext|>"
    assert second == ["\n<think>No forecast tool.</think>\nI cannot tell.<|endoftext|>"]
    # the second sequence is the whole conversation; its earlier turns are context only
    assert tok.decode([int(i) for i in seqs[1].ids[:-1]]) == render(CONV, TOOLS)
    # without splitting, the earlier turns are trained with the empty think block the template gives them
    (whole,) = encode_sample(tok, doc(CONV, TOOLS), split_turns=False)
    assert "\n<think></think>\nIt rains in Oslo.<|user|>" in runs(tok, whole.ids, whole.mask)


def test_non_thinking_sample_has_no_reasoning_and_trains_no_think_block(tok):
    d = with_thinking_mode(doc(CONV[:5], TOOLS, enable_thinking=False), non_thinking_ratio=0.0)
    (t,) = encode_sample(tok, d)
    trained = runs(tok, t.ids, t.mask)
    assert trained == ["\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n"
                       "</tool_call><|observation|>", "\nIt rains in Oslo.<|endoftext|>"]
    full = tok.decode([int(i) for i in t.ids])
    assert "/nothink" in full and "should call" not in full and full.count("<think></think>") == 2


def test_thinking_ratio_is_deterministic_and_forced_mode_wins():
    docs = [doc([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}], id=f"s{i}")
            for i in range(2000)]
    modes = [thinking_mode(d, 0.3, seed=1) for d in docs]
    assert modes == [thinking_mode(d, 0.3, seed=1) for d in docs]
    assert abs(modes.count(False) / len(modes) - 0.3) < 0.04
    assert all(thinking_mode(d, 0.0) for d in docs[:50]) and not any(thinking_mode(d, 1.0) for d in docs[:50])
    forced = doc([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], enable_thinking=True)
    assert thinking_mode(forced, 1.0)
    with pytest.raises(SFTError):
        thinking_mode(doc(CONV, enable_thinking="yes"), 0.5)


def test_drop_rules_are_counted(tok):
    from glm45.sft.dataset import DataStats

    stats = DataStats()
    docs = [doc(CONV[:5], TOOLS, id="ok"),
            doc([{"role": "user", "content": "no answer"}], id="noassistant"),
            doc([{"role": "wizard", "content": "x"}], id="badrole"),
            doc([{"role": "user", "content": "long " * 1500}, {"role": "assistant", "content": "a"}], id="long")]
    out = list(encode_samples(docs, tok, SFTDataConfig(seq_len=1024), stats))
    assert len(out) == 1
    assert stats.dropped_invalid == 2 and stats.dropped_overlong == 1 and stats.encoded == 1
    assert any("no assistant message" in e for e in stats.invalid_examples)


def test_packed_rows_isolate_samples(tok, tmp_path):
    samples = []
    for i in range(12):
        q = {"role": "user", "content": f"What is {i} plus {i}?"}
        a = {"role": "assistant", "content": f"It is {2 * i}.", "reasoning_content": f"{i} + {i} = {2 * i}"}
        samples.append({"id": f"s{i}", "messages": [q, a]})
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    index = build_sft_dataset(read_samples(path), tok, tmp_path / "shards", SFTDataConfig(seq_len=128, seed=3))
    assert index["mode"] == "best_fit" and index["sft"]["encoded"] == 12
    assert index["num_rows"] < 12  # several samples share a row
    ds = PackedDataset(tmp_path / "shards")
    expected = {tuple(int(i) for i in t.ids): t.mask for t in encode_samples(
        [sample_document(s) for s in samples], tok, SFTDataConfig(seq_len=128))}
    seen = 0
    for r in range(len(ds)):
        ex = ds.example(r)
        seg, labels, pos, ids = ex["segment_ids"], ex["labels"], ex["position_ids"], ex["input_ids"]
        for s in np.unique(seg):
            where = np.flatnonzero(seg == s)
            chunk = tuple(int(i) for i in ids[where])
            if chunk not in expected:  # padding
                assert (labels[where] == -100).all()
                continue
            seen += 1
            assert (pos[where] == np.arange(len(where))).all()  # positions restart per sample
            mask = expected[chunk]
            # label at t is token t+1 exactly where token t+1 is trained, else -100
            want = np.where(mask[1:] == 1, ids[where][1:], -100)
            assert (labels[where][:-1] == want).all() and labels[where][-1] == -100
    assert seen == 12
    batch = next(iter(PackedLoader(tmp_path / "shards", batch_size=2, seed=0)))
    assert set(batch) == {"input_ids", "labels", "position_ids", "segment_ids"}


def test_packed_logits_equal_unpacked(tok, tmp_path):
    from glm45.config import ModelConfig
    from glm45.model import GLM45ForCausalLM

    cfg = ModelConfig.preset("tiny", vocab_size=tok.vocab_size, torch_dtype="float32")
    model = GLM45ForCausalLM(cfg).eval()
    a = encode_sample(tok, doc(CONV[:5], TOOLS))[0].ids
    b = encode_sample(tok, doc([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]))[0].ids
    row = torch.tensor(np.concatenate([a, b]))[None]
    seg = torch.tensor([0] * len(a) + [1] * len(b))[None]
    with torch.no_grad():
        packed = model(row, segment_ids=seg).logits[0]
        alone_a = model(torch.tensor(a)[None]).logits[0]
        alone_b = model(torch.tensor(b)[None]).logits[0]
    torch.testing.assert_close(packed[:len(a)], alone_a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed[len(a):], alone_b, atol=1e-4, rtol=1e-4)
