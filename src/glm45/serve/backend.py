"""What the server needs from the inference stack: a tokenizer, the context limit, streamed
generation over the continuous-batching `AsyncEngine`, and load statistics.

The `AsyncEngine` (its thread) is created when the app starts and shut down when it stops, so
one `EngineBackend` can serve several app lifetimes (tests start and stop servers).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch

from glm45.infer import AsyncEngine, Engine, SamplingParams
from glm45.tokenizer import GLMTokenizer

# generation_config.json fields that become defaults for requests that leave them out.
SAMPLING_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class BackendError(ValueError):
    """A checkpoint or engine setting the server cannot run with."""


@dataclass
class GenerationOutput:
    """One engine step's news for one request, in the server's terms."""

    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    logprobs: list[float] | None  # of token_ids, when requested
    top_logprobs: list[list[tuple[int, float]]] | None


class EngineBackend:
    def __init__(self, engine: Engine) -> None:
        if engine.tokenizer is None:
            raise BackendError("the server needs a tokenizer; the checkpoint has no tokenizer.json")
        self.engine = engine
        self.tokenizer: GLMTokenizer = engine.tokenizer
        self.max_model_len: int = engine.max_seq_len
        self._async: AsyncEngine | None = None

    @classmethod
    def load(cls, model_dir: str, *, max_batch_size: int = 16, speculative: bool = False,
             max_model_len: int | None = None, dtype: str | None = None, device: str | None = None,
             compile: bool = False) -> EngineBackend:
        if not os.path.isdir(model_dir):
            raise BackendError(f"{model_dir} is not a directory")
        if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
            raise BackendError(f"{model_dir} has no tokenizer.json; the server needs the tokenizer")
        torch_dtype = getattr(torch, dtype) if dtype else None
        engine = Engine.from_pretrained(model_dir, dtype=torch_dtype, device=device, max_batch_size=max_batch_size,
                                        max_seq_len=max_model_len, speculative=speculative, compile=compile)
        if compile:
            engine.warm_up()  # compile now, not on the first clients' requests
        return cls(engine)

    async def start(self) -> None:
        if self._async is None:
            self._async = AsyncEngine(self.engine)

    async def stop(self) -> None:
        if self._async is not None:
            self._async.shutdown()
            self._async = None

    def healthy(self) -> bool:
        return self._async is not None

    async def generate(self, prompt_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[GenerationOutput]:
        """The request's outputs as steps produce them. Closing the iterator early (client gone)
        aborts the request, which frees its batch row at once."""
        if self._async is None:
            raise BackendError("the engine is not running")
        async for out in self._async.generate_stream(prompt_ids, params, request_id):
            lps = out.logprobs
            yield GenerationOutput(
                token_ids=out.new_token_ids, text=out.new_text, finished=out.finished,
                finish_reason=out.finish_reason,
                logprobs=[e["logprob"] for e in lps] if lps is not None else None,
                top_logprobs=[e["top"] for e in lps] if lps is not None else None)

    def stats(self) -> dict[str, Any]:
        """queue_depth and running (batch size) now, plus the engine's totals."""
        s = self.engine.stats()
        return {**s, "queue_depth": s["waiting"], "running": s["running"]}


def load_generation_defaults(model_dir: str) -> dict[str, Any]:
    """Sampling defaults from the checkpoint's generation_config.json (absent: none)."""
    path = os.path.join(model_dir, "generation_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    out = {k: cfg[k] for k in SAMPLING_DEFAULT_FIELDS
           if isinstance(cfg.get(k), (int, float)) and not isinstance(cfg.get(k), bool)}
    if cfg.get("do_sample") is False:  # the checkpoint asks for greedy decoding
        out["temperature"] = 0.0
    return out
