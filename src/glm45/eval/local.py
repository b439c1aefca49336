"""The local inference engine behind the evaluation harness's backend protocols.

`LocalBackend` implements `Backend` (chat) and `LoglikelihoodBackend` over a `glm45.infer.Engine`,
so the same evaluation runs on an in-process checkpoint or, through `OpenAIBackend`, on any
OpenAI-compatible endpoint (SFT data generation uses it the same way).

Chat: requests are rendered with the chat template, generated in one continuously batched
`Engine.generate` call, and parsed with `glm45.chat.parse` into reasoning, content and tool calls.
Sample j of a request with seed s uses seed s + j, as every backend does. An answer that ends in
complete tool calls reports finish_reason "tool_calls", as OpenAI-compatible servers do.

Log-likelihood: one cache-free forward per batch of texts (right-padded), log-softmax over the
LM head at the scored positions only. Texts are scored after `<|endoftext|>`, because that is
what precedes every document in pre-training (documents are concatenated, each ending in it).
Context and continuation are tokenized together and split where the context's own tokens end
(so a continuation's leading space merges as it would in running text); when a merge crosses
the boundary, the continuation is tokenized on its own. A sequence longer than the engine's
`max_seq_len` is scored in strided windows: each window scores at most half the window of new
tokens, with the tokens before them as context.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError

from glm45.chat import normalize_messages, parse
from glm45.eval.backend import (ChatRequest, ChatResult, ChatSample, EvalError, LoglikelihoodRequest,
                                LoglikelihoodResult, OnResult)
from glm45.infer import Engine, SamplingParams

__all__ = ["LocalBackend", "make_backend", "score_windows", "to_sample"]

_HEAD_BUDGET = 1 << 26  # floats of logits alive at once when scoring (256 MB in float32)


class LocalBackend:
    def __init__(self, engine: Engine, name: str = "local", *, max_batch_tokens: int = 16384):
        if engine.tokenizer is None:
            raise ValueError("LocalBackend needs an engine with a tokenizer (chat prompts are rendered to text)")
        self.engine = engine
        self.name = name
        self.max_batch_tokens = max_batch_tokens  # padded tokens per scoring forward

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **engine_kwargs) -> LocalBackend:
        return cls(Engine.from_pretrained(directory, **engine_kwargs), name=f"local:{os.fspath(directory)}")

    # ------------------------------------------------------------------ chat
    def chat(self, requests: Sequence[ChatRequest], on_result: OnResult | None = None) -> list[ChatResult]:
        prompts, params, where = [], [], []
        samples: list[list[ChatSample | None]] = [[None] * r.n for r in requests]
        limit = self.engine.max_seq_len
        for i, r in enumerate(requests):
            ids = self.engine.prompt_ids({"messages": normalize_messages(r.messages), "tools": r.tools,
                                          "enable_thinking": r.enable_thinking})
            for j in range(r.n):
                if len(ids) >= limit - 1:  # no room to generate: report it as cut off
                    samples[i][j] = ChatSample(finish_reason="length")
                    continue
                prompts.append(ids)
                params.append(SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                             seed=None if r.seed is None else r.seed + j))
                where.append((i, j))
        results = self.engine.generate(prompts, params) if prompts else []
        for (i, j), res in zip(where, results):
            r = requests[i]
            samples[i][j] = to_sample(res.text, r.tools, r.enable_thinking, res.finish_reason, len(res.token_ids))
        out = [ChatResult(list(s)) for s in samples]
        if on_result is not None:
            for i, result in enumerate(out):
                on_result(i, result)
        return out

    # --------------------------------------------------------- log-likelihood
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        tok = self.engine.tokenizer
        if not context:
            return [], tok.encode(continuation)
        context_ids, whole = tok.encode(context), tok.encode(context + continuation)
        if whole[:len(context_ids)] == context_ids and len(whole) > len(context_ids):
            return context_ids, whole[len(context_ids):]
        return context_ids, tok.encode(continuation)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        prefix = [self.engine.tokenizer.eos_token_id]
        pieces: list[tuple[int, list[int], int]] = []  # (request, window ids, first scored index)
        n_tokens = []
        for i, r in enumerate(requests):
            context_ids, continuation_ids = self._encode_pair(r.context, r.continuation)
            if not continuation_ids:
                raise EvalError(f"request {i}: the continuation {r.continuation!r} has no tokens to score")
            n_tokens.append(len(continuation_ids))
            for ids, start in score_windows(prefix + context_ids, continuation_ids, self.engine.max_seq_len):
                pieces.append((i, ids, start))
        logprob = [0.0] * len(requests)
        greedy = [True] * len(requests)
        order = sorted(range(len(pieces)), key=lambda p: -len(pieces[p][1]))  # similar lengths share a batch
        batches: list[list[int]] = []
        for p in order:  # a batch's first piece is its longest: it sets the padded width
            if batches and (len(batches[-1]) + 1) * len(pieces[batches[-1][0]][1]) <= self.max_batch_tokens:
                batches[-1].append(p)
            else:
                batches.append([p])
        for batch in batches:
            for p, (lp, is_greedy) in zip(batch, self._score([pieces[p][1:] for p in batch])):
                i = pieces[p][0]
                logprob[i] += lp
                greedy[i] = greedy[i] and is_greedy
        return [LoglikelihoodResult(logprob=lp, n_tokens=n, is_greedy=g)
                for lp, n, g in zip(logprob, n_tokens, greedy)]

    def _score(self, windows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(sum of log-probabilities, all argmax) of tokens ids[start:] of each (ids, start)."""
        engine = self.engine
        dev = engine.device
        T = max(len(ids) for ids, _ in windows)
        pad = engine.pad_id if engine.pad_id is not None else 0
        ids_BT = torch.full((len(windows), T), pad, dtype=torch.long, device=dev)
        mask_BT = torch.zeros((len(windows), T), dtype=torch.long, device=dev)
        rows, cols, targets = [], [], []
        for b, (ids, start) in enumerate(windows):
            ids_BT[b, :len(ids)] = torch.tensor(ids, device=dev)
            mask_BT[b, :len(ids)] = 1
            rows += [b] * (len(ids) - start)
            cols += range(start - 1, len(ids) - 1)  # position t predicts token t + 1
            targets += ids[start:]
        rows_N = torch.tensor(rows, device=dev)
        cols_N = torch.tensor(cols, device=dev)
        targets_N = torch.tensor(targets, device=dev)
        lp_N = torch.empty(len(targets), dtype=torch.float64, device=dev)
        greedy_N = torch.empty(len(targets), dtype=torch.bool, device=dev)
        chunk = max(1, _HEAD_BUDGET // engine.vocab_size)
        with torch.inference_mode():
            hidden_BTD = engine.model(ids_BT, attention_mask=mask_BT, compute_logits=False).hidden_states
            for a in range(0, len(targets), chunk):
                h = hidden_BTD[rows_N[a:a + chunk], cols_N[a:a + chunk]]
                logits = engine.model.lm_head(h).float()
                t = targets_N[a:a + chunk, None]
                lp_N[a:a + chunk] = logits.log_softmax(-1).gather(1, t).squeeze(1).double()
                greedy_N[a:a + chunk] = logits.gather(1, t).squeeze(1) >= logits.max(-1).values
        out, pos = [], 0
        for ids, start in windows:
            n = len(ids) - start
            out.append((float(lp_N[pos:pos + n].sum()), bool(greedy_N[pos:pos + n].all())))
            pos += n
        return out


def score_windows(context_ids: list[int], continuation_ids: list[int],
                  max_len: int) -> list[tuple[list[int], int]]:
    """Windows (ids, first scored index) that score every continuation token exactly once, each at
    most `max_len` tokens, each scored token with at least one token of context: the whole
    sequence when it fits; else strided windows scoring up to `max_len // 2` new tokens after the
    context that precedes them (the first window keeps as much of `context_ids` as fits)."""
    if not context_ids:
        raise EvalError("scoring needs at least one context token")
    if max_len < 2:
        raise EvalError(f"scoring needs windows of at least 2 tokens, got {max_len}")
    seq = context_ids + continuation_ids
    end = len(seq)
    if end <= max_len:
        return [(seq, len(context_ids))]
    stride = max_len // 2
    out = []
    a = len(context_ids)
    b = min(end, a + max(max_len - a, stride))
    while True:
        lo = max(0, b - max_len)
        out.append((seq[lo:b], a - lo))
        if b == end:
            return out
        a, b = b, min(end, b + stride)


def make_backend(model_dir: str | os.PathLike, **engine_kwargs) -> LocalBackend:
    """A LocalBackend for a checkpoint directory (config.json, safetensors weights, tokenizer.json),
    on the GPU when there is one; a clear EvalError when the directory is not such a checkpoint."""
    d = Path(model_dir)
    if not d.is_dir():
        raise EvalError(f"--model {str(d)!r} is not a directory")
    missing = [f for f in ("config.json", "tokenizer.json") if not (d / f).is_file()]
    if not (d / "model.safetensors").is_file() and not (d / "model.safetensors.index.json").is_file():
        missing.append("model.safetensors (or model.safetensors.index.json)")
    if missing:
        raise EvalError(f"--model {str(d)!r} is not a glm45 checkpoint with a tokenizer: it has no "
                        f"{', '.join(missing)} (write one with `glm45 init`, a training run, or `glm45 convert`)")
    engine_kwargs.setdefault("max_batch_size", 16)
    if torch.cuda.is_available():
        engine_kwargs.setdefault("device", "cuda")
    try:
        return LocalBackend.from_pretrained(d, **engine_kwargs)
    # CheckpointError, ConfigError, TokenizerError, InferenceError are ValueErrors; a corrupt
    # weights file can surface as safetensors' own error (the FP8 probe reads headers first)
    except (ValueError, SafetensorError) as e:
        raise EvalError(f"cannot load the checkpoint {str(d)!r}: {e}") from e


def to_sample(text: str, tools, enable_thinking: bool, finish_reason: str, n_tokens: int) -> ChatSample:
    """A generated text as a ChatSample. A tool call cut off mid-way is kept with its raw text as
    `invalid_arguments`, so protocol checks see it (a tool never runs it)."""
    parsed = parse(text, tools, enable_thinking=enable_thinking)
    calls = [dict(c) for c in parsed["tool_calls"]]
    if finish_reason == "stop" and calls:
        finish_reason = "tool_calls"
    if parsed["incomplete_tool_call"] is not None:
        cut = parsed["incomplete_tool_call"]
        calls.append({"name": cut["name"] or "", "arguments": cut["arguments"], "invalid_arguments": cut["raw"]})
    return ChatSample(content=parsed["content"], reasoning_content=parsed["reasoning_content"] or "",
                      tool_calls=calls, finish_reason=finish_reason, completion_tokens=n_tokens)
