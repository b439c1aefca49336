"""Shared builders for the server tests: a tiny checkpoint, "scripted" tiny models whose greedy
(and near-greedy) output is a fixed text, and a running server around either.

A random tiny model writes garbage, so tool calls and thinking could not be tested through the
real engine. A scripted model is a real GLM45ForCausalLM whose attention and MLP outputs are
zeroed, so its logits depend on the current token only, with embeddings and LM head set so that
token chain[i] is followed by chain[i+1] with probability ~1 (logit margin 80). Its MTP layer
follows the same script, so speculative decoding accepts its drafts (two tokens per step). The
engine, the sampler and the server then produce the scripted text for real.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import torch

from glm45.checkpoint.init_cli import init_checkpoint
from glm45.config import ModelConfig
from glm45.infer import Engine
from glm45.model import GLM45ForCausalLM
from glm45.serve.app import create_app
from glm45.serve.backend import EngineBackend
from glm45.serve.server import ServerThread
from glm45.serve.service import ServeConfig
from glm45.tokenizer import GLMTokenizer

MODEL_NAME = "glm45-tiny"
REASONING = "Hi there"
CONTENT = "Sky is blue"
TOOL = {"type": "function", "function": {
    "name": "find", "description": "Look up a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOL_CALL_TEXT = "<tool_call>find\n<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call>"


@functools.cache
def tiny_checkpoint() -> str:
    """A random tiny checkpoint directory with tokenizer (made once per test process)."""
    d = tempfile.mkdtemp(prefix="glm45-serve-ckpt-")
    atexit.register(shutil.rmtree, d, True)
    init_checkpoint("tiny", d, seed=0)
    return d


@functools.cache
def tokenizer() -> GLMTokenizer:
    return GLMTokenizer.from_pretrained(tiny_checkpoint())


def scripted_model(chain: list[int]) -> GLM45ForCausalLM:
    """A tiny model whose next token after chain[i] is chain[i+1] (chain[:-1] must be distinct)."""
    tok = tokenizer()
    cfg = ModelConfig.from_hf(tiny_checkpoint())
    sources = chain[:-1]
    if len(set(sources)) != len(sources) or len(sources) > cfg.hidden_size:
        raise AssertionError(f"a scripted chain needs distinct tokens (<= hidden size); got "
                             f"{[tok.decode([t]) for t in sources]}")
    model = GLM45ForCausalLM(cfg)
    model.init_weights(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "down_proj")):
                p.zero_()  # every sublayer adds nothing: the last hidden state is the token's embedding
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for i, (src, dst) in enumerate(zip(sources, chain[1:])):
            emb[src].zero_()
            emb[src, i] = 1.0  # RMSNorm makes this sqrt(hidden) = 8 in direction i
            head[dst, i] = 10.0
        if model.mtp is not None:  # MTP drafts the token after the next one by the same script
            model.mtp.embed_tokens.weight.copy_(emb)
            model.mtp.shared_head.head.weight.copy_(head)
            h = cfg.hidden_size
            model.mtp.eh_proj.weight.zero_()
            model.mtp.eh_proj.weight[:, :h] = torch.eye(h)  # keep the embedding half of [embed, hidden]
    return model.eval()


def chain_of(*pieces: str | int) -> list[int]:
    tok = tokenizer()
    out: list[int] = []
    for p in pieces:
        out += [p] if isinstance(p, int) else tok.encode(p)
    return out


def content_chain() -> list[int]:
    """Thinking on: `<think>Hi there</think>Sky is blue`; thinking off: `Sky is blue`; then EOS."""
    sp = tokenizer().special_ids
    return chain_of(sp["<|assistant|>"], "<think>" + REASONING + "</think>" + CONTENT, sp["<|endoftext|>"])


def tool_chain() -> list[int]:
    """Thinking on: `<think>Hi there</think>` + the call; thinking off: the call; then <|observation|>."""
    sp = tokenizer().special_ids
    return chain_of(sp["<|assistant|>"], "<think>" + REASONING + "</think>" + TOOL_CALL_TEXT, sp["<|observation|>"])


def make_backend(model: GLM45ForCausalLM | None = None, **engine_kwargs) -> EngineBackend:
    if model is None:
        return EngineBackend.load(tiny_checkpoint(), **engine_kwargs)
    return EngineBackend(Engine(model, tokenizer(), **engine_kwargs))


def start_server(backend: EngineBackend, **config) -> ServerThread:
    config.setdefault("served_model_name", MODEL_NAME)
    return ServerThread(create_app(backend, ServeConfig(**config))).start()
