"""Tokenizer: BPE training, special tokens, save/load, transformers parity, released layout, streaming decode."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers

from glm45.chat import CHAT_TEMPLATE, render
from glm45.cli import main as cli_main
from glm45.tokenizer import (
    RELEASED_SPECIAL_IDS,
    SPECIAL_TOKENS,
    GLMTokenizer,
    IncrementalDecoder,
    TokenizerError,
    train_tokenizer,
)
from glm45.tokenizer.incremental import BYTE_OF_CHAR

CORPUS = [
    f"Document {i}: the quick brown fox jumps over the lazy dog; 中文文本 {i * 37} ünïcödé "
    f"def f(x):\n    return x * {i}\n\n<tool_call>search <arg_key>q</arg_key> emoji 🙂 café"
    for i in range(200)
]
SAMPLES = [
    "",
    "hello world",
    "  leading and trailing spaces  \n\n\t",
    "<|user|>\nhi<|assistant|>\n<think>r</think>\nanswer<|endoftext|>",
    "[gMASK]<sop><|system|>\nsys",
    "中文 日本語 한국어 emoji 🙂👍🏽 combining é",
    "code:\n\tif (a < b) { return \"x\\n\"; }",
    "<tool_call>f\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>\n</tool_call>/nothink",
    "almost special: <|user| <think </tool_call",
]


@pytest.fixture(scope="module")
def tok() -> GLMTokenizer:
    return train_tokenizer(CORPUS, 600)


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tok.save(d)
    return d


@pytest.fixture(scope="module")
def hf(saved):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(saved)


def test_special_tokens_first_and_single(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.special_ids == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.encode(t) == [i]
        assert tok.id_to_token(i) == t
        assert tok.decode([i]) == t
    # matched inside text too, as the released tokenizer does, and never split
    ids = tok.encode("a<|user|>b</think>c")
    assert tok.special_ids["<|user|>"] in ids and tok.special_ids["</think>"] in ids


def test_stop_eos_pad(tok):
    assert tok.stop_token_ids == [0, 7, 9]
    assert [tok.id_to_token(i) for i in tok.stop_token_ids] == ["<|endoftext|>", "<|user|>", "<|observation|>"]
    assert tok.eos_token_id == 0 and tok.pad_token_id == 0


def test_vocab_size_and_merges(tok):
    assert 280 < tok.vocab_size <= 600
    assert len(tok) == tok.vocab_size
    # merges were learned: a frequent word is shorter than its byte count
    assert len(tok.encode(" quick")) < len(" quick")


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_add_special_tokens_prefix_and_skip(tok):
    ids = tok.encode("hi", add_special_tokens=True)
    assert ids[:2] == [tok.special_ids["[gMASK]"], tok.special_ids["<sop>"]]
    assert ids[2:] == tok.encode("hi")
    assert tok.decode(tok.encode("<|user|>hi<|assistant|>"), skip_special_tokens=True) == "hi"


def test_encode_batch_and_offsets(tok):
    assert tok.encode_batch(SAMPLES) == [tok.encode(s) for s in SAMPLES]
    text = "ab<|user|>中c"
    ids, offsets = tok.encode_with_offsets(text)
    assert ids == tok.encode(text)
    special_at = ids.index(tok.special_ids["<|user|>"])
    assert offsets[special_at] == (2, 10)


def test_errors(tok):
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_tokenizer(CORPUS, 100)
    with pytest.raises(TokenizerError, match="training text 1 is a int"):
        train_tokenizer(["ok", 5], 300)  # type: ignore[list-item]
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        tok.token_to_id("<no such token>")
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.id_to_token(10**6)
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([1, -3])
    with pytest.raises(TokenizerError, match="expected text as str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
    assert issubclass(TokenizerError, ValueError)


def test_save_and_load(tok, saved):
    files = sorted(p.name for p in saved.iterdir())
    assert files == ["tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((saved / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["chat_template"] == CHAT_TEMPLATE
    assert cfg["eos_token"] == cfg["pad_token"] == "<|endoftext|>"
    assert cfg["added_tokens_decoder"]["7"] == {"content": "<|user|>", "lstrip": False, "normalized": False,
                                                "rstrip": False, "single_word": False, "special": True}
    again = GLMTokenizer.from_pretrained(saved)
    assert again.chat_template == CHAT_TEMPLATE
    for s in SAMPLES:
        assert again.encode(s) == tok.encode(s)
    assert again.vocab_size == tok.vocab_size


def test_load_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        GLMTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read"):
        GLMTokenizer.from_pretrained(tmp_path)


def test_transformers_loads_and_encodes_identically(tok, hf):
    for s in SAMPLES + CORPUS[:5]:
        assert hf.encode(s, add_special_tokens=False) == tok.encode(s)
        assert hf.encode(s) == tok.encode(s, add_special_tokens=True)
        ids = tok.encode(s)
        assert hf.decode(ids) == tok.decode(ids)
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)
    assert hf.eos_token_id == tok.eos_token_id and hf.pad_token_id == tok.pad_token_id
    assert len(hf) == tok.vocab_size
    assert hf.convert_tokens_to_ids("/nothink") == tok.special_ids["/nothink"]


def test_transformers_chat_template_tokenized(tok, hf):
    msgs = [{"role": "user", "content": "what is 2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "add"},
            {"role": "user", "content": "thanks"}]
    ids = hf.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert list(ids) == tok.encode(render(msgs, add_generation_prompt=True))


# ---- the released GLM-4.5 layout (special tokens at 151329..) --------------------------------
@pytest.fixture(scope="module")
def released_dir(tmp_path_factory):
    """A tokenizer.json laid out like the released one: 151329 BPE entries, then added tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({f"<filler_{i}>": i for i in range(len(vocab), 151329)})
    names = {i: t for t, i in RELEASED_SPECIAL_IDS.items()}
    added = [{"id": i, "content": names.get(i, f"<|reserved_{i}|>"), "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i in range(151329, 151552)]
    data = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    d = tmp_path_factory.mktemp("released")
    (d / "tokenizer.json").write_text(json.dumps(data))
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                         "chat_template": "from config"}))
    (d / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return d


def test_released_layout(released_dir):
    tok = GLMTokenizer.from_pretrained(released_dir)
    assert tok.special_ids == RELEASED_SPECIAL_IDS
    assert tok.stop_token_ids == [151329, 151336, 151338]
    assert tok.eos_token_id == tok.pad_token_id == 151329
    assert tok.vocab_size == 151552
    assert tok.chat_template == CHAT_TEMPLATE  # chat_template.jinja wins over the config entry
    text = render([{"role": "user", "content": "héllo"}], add_generation_prompt=True)
    ids = tok.encode(text)
    assert ids[:3] == [151331, 151333, 151336] and ids[-1] == 151337
    assert tok.decode(ids) == text
    dec = IncrementalDecoder(tok)
    assert "".join(dec.feed([i]) for i in ids) + dec.finish() == text


def test_missing_special_tokens_rejected(tmp_path):
    from tokenizers import Tokenizer, models

    bare = Tokenizer(models.BPE(vocab={"a": 0}, merges=[]))
    with pytest.raises(TokenizerError, match="lacks the GLM-4.5 special tokens"):
        GLMTokenizer(bare)


# ---- incremental decoding -------------------------------------------------------------------
def test_byte_alphabet_matches_tokenizers():
    assert set(BYTE_OF_CHAR) == set(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(BYTE_OF_CHAR.values()) == list(range(256))


def test_incremental_never_splits_characters(tok):
    text = "中文 🙂👍🏽 café " * 3
    ids = tok.encode(text)
    dec = tok.incremental_decoder()
    pieces = [dec.feed([i]) for i in ids]
    assert "".join(pieces) + dec.finish() == text
    assert all("\ufffd" not in p for p in pieces)
    # a 4-byte emoji spread over several byte tokens comes out whole, in one piece
    assert any("🙂" in p for p in pieces)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_incremental_equals_decode(tok, data):
    n = tok.vocab_size
    ids = data.draw(st.lists(st.integers(0, n - 1), max_size=40))
    skip = data.draw(st.booleans())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ids)), max_size=6)))
    dec = IncrementalDecoder(tok, skip_special_tokens=skip)
    out, prev = [], 0
    for c in [*cuts, len(ids)]:
        out.append(dec.feed(ids[prev:c]))
        prev = c
    out.append(dec.finish())
    assert "".join(out) == tok.decode(ids, skip_special_tokens=skip)


def test_incremental_random_text(tok):
    rng = random.Random(0)
    alphabet = "ab 中文🙂é\n<|user|>"
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        ids = tok.encode(text)
        dec = IncrementalDecoder(tok)
        assert "".join(dec.feed(i) for i in ids) + dec.finish() == text


# ---- CLI --------------------------------------------------------------------------------------
def test_cli_trains_from_text_and_jsonl(tmp_path, capsys):
    txt = tmp_path / "a.txt"
    txt.write_text("\n\n".join(CORPUS[:50]))
    jl = tmp_path / "b.jsonl"
    jl.write_text("\n".join(json.dumps({"body": c}) for c in CORPUS[50:100]) + "\n")
    out = tmp_path / "out"
    rc = cli_main(["tokenizer", "--input", str(txt), str(jl), "--vocab-size", "400", "--field", "body",
                   "--out", str(out)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    tok = GLMTokenizer.from_pretrained(out)
    assert report["vocab_size"] == tok.vocab_size <= 400
    assert tok.decode(tok.encode(CORPUS[0])) == CORPUS[0]


def test_cli_errors(tmp_path, capsys):
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"text": "ok"}\n{"other": 1}\n')
    rc = cli_main(["tokenizer", "--input", str(jl), "--vocab-size", "400", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "b.jsonl:2: record has no string field 'text'" in capsys.readouterr().err
    rc = cli_main(["tokenizer", "--input", str(tmp_path / "missing.txt"), "--vocab-size", "400",
                   "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "input file not found" in capsys.readouterr().err
