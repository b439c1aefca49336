"""The generation endpoints: /v1/chat/completions and /v1/completions over the engine backend.

Each request: validate -> render + tokenize (in a worker thread, so a long prompt never stalls
the event loop) -> check the context budget -> one engine request per choice -> stream SSE
chunks or collect one response. A client that goes away cancels its engine requests.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from glm45.chat import ChatFormatError
from glm45.infer import SamplingParams
from glm45.serve.backend import EngineBackend, GenerationOutput
from glm45.serve.chat_output import ChoiceAssembler
from glm45.serve.errors import APIError, error_body, from_validation_error
from glm45.serve.metrics import ServerMetrics
from glm45.serve.prompting import ChatPlan, plan_chat
from glm45.serve.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    SamplingFields,
)
from glm45.serve.sse import DONE, cancel_on_disconnect, merge, sse
from glm45.tokenizer.incremental import token_bytes

MAX_BODY_BYTES = 32 * 1024 * 1024
OFFLOAD_BYTES = 256 * 1024  # bodies this large are parsed in a worker thread
M = TypeVar("M", bound=BaseModel)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class ServeConfig:
    served_model_name: str
    api_key: str | None = None
    default_thinking: bool = True
    # Sampling defaults for fields a request leaves out (from the checkpoint's generation_config.json).
    sampling_defaults: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Tally:
    """Token and timing counts of one HTTP request (all its choices)."""

    token_ids: list[list[int]]  # generated ids per choice
    start: float = field(default_factory=time.monotonic)
    first_token: float | None = None

    def add(self, i: int, out: GenerationOutput) -> None:
        if self.first_token is None and out.token_ids:
            self.first_token = time.monotonic()
        self.token_ids[i].extend(out.token_ids)


async def read_body(request: Request) -> bytes:
    """The raw body, or a 413 once it passes MAX_BODY_BYTES (checked while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise APIError(f"request body of {declared} bytes exceeds the limit of {MAX_BODY_BYTES}", status=413,
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise APIError(f"request body exceeds the limit of {MAX_BODY_BYTES} bytes", status=413,
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(body: bytes, model: type[M]) -> tuple[M, dict[str, Any]]:
    """(validated request, the JSON object as sent), or a 400 naming what is wrong."""
    if not body.strip():
        raise APIError("request body is empty; expected a JSON object", code="invalid_json")
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        detail = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise APIError(f"request body is not valid JSON: {detail}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise APIError(f"request body must be a JSON object, got {type(obj).__name__}", code="invalid_json")
    try:
        return model.model_validate(obj), obj
    except ValidationError as e:
        raise from_validation_error(e) from None
    except RecursionError:
        raise APIError("request body is nested too deeply", code="invalid_json") from None


async def read_request(request: Request, model: type[M]) -> tuple[M, dict[str, Any]]:
    body = await read_body(request)
    if len(body) > OFFLOAD_BYTES:  # parsing megabytes takes long enough to stall other requests
        return await anyio.to_thread.run_sync(parse_body, body, model)
    return parse_body(body, model)


class OpenAIService:
    def __init__(self, backend: EngineBackend, config: ServeConfig, metrics: ServerMetrics) -> None:
        self.backend = backend
        self.config = config
        self.metrics = metrics
        tok = backend.tokenizer
        self._think_close_id = tok.special_ids["</think>"]

    # ------------------------------------------------------------------ shared steps
    def check_model(self, name: str) -> None:
        if name != self.config.served_model_name:
            raise APIError(f"The model {name!r} does not exist; this server serves "
                           f"{self.config.served_model_name!r}", status=404, param="model", code="model_not_found")

    def budget(self, n_prompt: int, requested: int | None, prompt_param: str, limit_param: str) -> int:
        """Tokens the completion may use: as requested, or all the room left when unspecified."""
        limit = self.backend.max_model_len
        if n_prompt >= limit:
            raise APIError(f"This model's maximum context length is {limit} tokens, but the prompt is "
                           f"{n_prompt} tokens long; shorten it", param=prompt_param, code="context_length_exceeded")
        room = limit - n_prompt
        if requested is not None and requested > room:
            raise APIError(f"This model's maximum context length is {limit} tokens, but {n_prompt + requested} "
                           f"were requested ({n_prompt} in the prompt, {requested} for the completion); reduce "
                           f"{limit_param} to at most {room}", param=limit_param, code="context_length_exceeded")
        return requested if requested is not None else room

    def sampling(self, req: SamplingFields, max_tokens: int, logprobs: int | None) -> SamplingParams:
        d = self.config.sampling_defaults

        def pick(name: str, fallback):
            v = getattr(req, name)
            return v if v is not None else d.get(name, fallback)

        return SamplingParams(
            max_tokens=max_tokens, temperature=pick("temperature", 1.0), top_p=pick("top_p", 1.0),
            top_k=pick("top_k", 0), min_p=pick("min_p", 0.0), repetition_penalty=pick("repetition_penalty", 1.0),
            presence_penalty=pick("presence_penalty", 0.0), frequency_penalty=pick("frequency_penalty", 0.0),
            stop=req.stop or [], ignore_eos=req.ignore_eos, seed=req.seed, logprobs=logprobs, n=req.n)

    def _streams(self, prompt_ids: list[int], params: SamplingParams, rid: str, copies: int = 1):
        return [self.backend.generate(prompt_ids, params.single(i), f"{rid}-{i}") for i in range(copies)]

    def _record(self, endpoint: str, tally: _Tally, n_prompt: int, reasons: list[str | None]) -> None:
        m = self.metrics
        m.prompt_tokens.inc(n_prompt)
        m.generation_tokens.inc(sum(len(t) for t in tally.token_ids))
        m.latency.observe(time.monotonic() - tally.start, endpoint=endpoint)
        if tally.first_token is not None:
            m.ttft.observe(tally.first_token - tally.start, endpoint=endpoint)
        for r in reasons:
            m.finished.inc(reason=r or "abort")

    # ------------------------------------------------------------------ chat
    def _prepare_chat(self, req: ChatCompletionRequest, raw: dict) -> tuple[ChatPlan, list[int]]:
        try:
            plan = plan_chat(req, raw["messages"], raw.get("tools"), self.config.default_thinking)
        except ChatFormatError as e:
            raise APIError(str(e), param="messages", code="invalid_messages") from None
        return plan, self.backend.tokenizer.encode(plan.prompt)

    async def chat(self, request: Request) -> Response:
        req, raw = await read_request(request, ChatCompletionRequest)
        self.check_model(req.model)
        plan, prompt_ids = await anyio.to_thread.run_sync(self._prepare_chat, req, raw)
        limit_param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_tokens = self.budget(len(prompt_ids), req.completion_limit, "messages", limit_param)
        k = (req.top_logprobs or 0) if req.logprobs else None
        params = self.sampling(req, max_tokens, k)
        rid = "chatcmpl-" + uuid.uuid4().hex
        if req.stream:
            return StreamingResponse(self._chat_stream(req, plan, prompt_ids, params, rid),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        body = await cancel_on_disconnect(request, self._chat_full(req, plan, prompt_ids, params, rid))
        return JSONResponse(body) if body is not None else Response(status_code=499)

    def _token(self, token_id: int) -> dict[str, Any]:
        """A token as OpenAI logprobs show it: its text, and its raw bytes (a token may hold part
        of a UTF-8 character, which the text shows as U+FFFD)."""
        raw = token_bytes(self.backend.tokenizer.id_to_token(token_id))
        return {"token": raw.decode("utf-8", errors="replace"), "bytes": list(raw)}

    def _logprob_entries(self, out: GenerationOutput) -> list[dict[str, Any]]:
        tops = out.top_logprobs or [[]] * len(out.token_ids)
        return [{**self._token(tid), "logprob": lp,
                 "top_logprobs": [{**self._token(i), "logprob": v} for i, v in top]}
                for tid, lp, top in zip(out.token_ids, out.logprobs or [], tops)]

    def _usage(self, n_prompt: int, tally: _Tally, choices: list[ChoiceAssembler] | None) -> dict[str, Any]:
        completion = sum(len(t) for t in tally.token_ids)
        usage: dict[str, Any] = {"prompt_tokens": n_prompt, "completion_tokens": completion,
                                 "total_tokens": n_prompt + completion}
        if choices is not None:
            reasoning = sum(c.reasoning_tokens(t, self._think_close_id) for c, t in zip(choices, tally.token_ids))
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    async def _chat_full(self, req: ChatCompletionRequest, plan: ChatPlan, prompt_ids: list[int],
                         params: SamplingParams, rid: str) -> dict[str, Any]:
        self.metrics.in_flight.inc()
        tally = _Tally([[] for _ in range(req.n)])
        choices = [ChoiceAssembler(i, plan) for i in range(req.n)]
        logprobs: list[list[dict]] = [[] for _ in range(req.n)]
        try:
            async for i, out in merge(self._streams(prompt_ids, params, rid, req.n)):
                tally.add(i, out)
                choices[i].feed(out.text)
                if req.logprobs:
                    logprobs[i].extend(self._logprob_entries(out))
                if out.finished:
                    choices[i].finish(out.finish_reason)
        finally:
            self.metrics.in_flight.dec()
            self._record("chat", tally, len(prompt_ids), [c.finish_reason for c in choices])
        return ChatCompletion(
            id=rid, model=req.model, usage=self._usage(len(prompt_ids), tally, choices),
            choices=[ChatChoice(index=c.index, message=c.message(), finish_reason=c.finish_reason,
                                logprobs={"content": logprobs[c.index]} if req.logprobs else None)
                     for c in choices]).model_dump()

    async def _chat_stream(self, req: ChatCompletionRequest, plan: ChatPlan, prompt_ids: list[int],
                           params: SamplingParams, rid: str) -> AsyncIterator[str]:
        created = int(time.time())
        include_usage = req.stream_options is not None and req.stream_options.include_usage
        tally = _Tally([[] for _ in range(req.n)])
        choices = [ChoiceAssembler(i, plan) for i in range(req.n)]
        pending_lp: list[list[dict]] = [[] for _ in range(req.n)]

        def chunk(i: int, delta: dict, finish: str | None = None) -> str:
            lp = None
            if pending_lp[i]:
                lp, pending_lp[i] = {"content": pending_lp[i]}, []
            return _stream_chunk(rid, "chat.completion.chunk", created, req.model, include_usage,
                                 {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish})

        self.metrics.in_flight.inc()
        try:
            for c in choices:
                yield chunk(c.index, {"role": "assistant", "content": ""})
            async for i, out in merge(self._streams(prompt_ids, params, rid, req.n)):
                tally.add(i, out)
                if req.logprobs:
                    pending_lp[i].extend(self._logprob_entries(out))
                deltas = choices[i].feed(out.text)
                if out.finished:
                    deltas += choices[i].finish(out.finish_reason)
                for d in deltas:
                    yield chunk(i, d)
                if out.finished:
                    yield chunk(i, {}, choices[i].finish_reason)
            if include_usage:
                yield sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                           "choices": [], "usage": self._usage(len(prompt_ids), tally, choices)})
            yield DONE
        except Exception as e:  # the response has started: report in-band, never crash the server
            yield sse(error_body(f"generation failed: {e}", type="server_error", code="internal_error"))
            yield DONE
        finally:
            self.metrics.in_flight.dec()
            self._record("chat", tally, len(prompt_ids), [c.finish_reason for c in choices])

    # ------------------------------------------------------------------ completions
    def _prepare_completion(self, req: CompletionRequest) -> list[list[int]]:
        tok = self.backend.tokenizer
        p = req.prompt
        if isinstance(p, str):
            return [tok.encode(p)]
        if isinstance(p[0], str):
            return [tok.encode(s) for s in p]
        prompts = [p] if isinstance(p[0], int) else p
        vocab = tok.vocab_size
        for _j, ids in enumerate(prompts):
            bad = [t for t in ids if t >= vocab]
            if bad:
                raise APIError(f"prompt token ids {bad[:5]} are outside the vocabulary (size {vocab})",
                               param="prompt", code="invalid_token_ids")
        return prompts

    async def completions(self, request: Request) -> Response:
        req, _ = await read_request(request, CompletionRequest)
        self.check_model(req.model)
        if req.echo and req.logprobs is not None:
            raise APIError("echo together with logprobs is not supported (no prompt log-probabilities)",
                           param="echo", code="unsupported")
        prompts = await anyio.to_thread.run_sync(self._prepare_completion, req)
        for ids in prompts:
            if not ids:
                raise APIError("prompt encodes to no tokens", param="prompt", code="empty_prompt")
        budgets = [self.budget(len(ids), req.max_tokens, "prompt", "max_tokens") for ids in prompts]
        rid = "cmpl-" + uuid.uuid4().hex
        # Choice index = prompt index * n + sample index, as OpenAI numbers them.
        jobs = [(ids, self.sampling(req, b, req.logprobs), j) for j, (ids, b) in enumerate(zip(prompts, budgets))]
        if req.stream:
            return StreamingResponse(self._completion_stream(req, jobs, rid), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        body = await cancel_on_disconnect(request, self._completion_full(req, jobs, rid))
        return JSONResponse(body) if body is not None else Response(status_code=499)

    def _completion_streams(self, req: CompletionRequest, jobs, rid: str):
        return [self.backend.generate(ids, params.single(s), f"{rid}-{j * req.n + s}")
                for ids, params, j in jobs for s in range(req.n)]

    def _completion_logprobs(self, out: GenerationOutput, offset: int) -> dict[str, list]:
        res: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        tops = out.top_logprobs or [[]] * len(out.token_ids)
        for tid, lp, top in zip(out.token_ids, out.logprobs or [], tops):
            text = self._token(tid)["token"]
            res["tokens"].append(text)
            res["token_logprobs"].append(lp)
            res["top_logprobs"].append({self._token(i)["token"]: v for i, v in top})
            res["text_offset"].append(offset)
            offset += len(text)
        return res

    async def _completion_full(self, req: CompletionRequest, jobs, rid: str) -> dict[str, Any]:
        n_choices = len(jobs) * req.n
        prompt_text = [self.backend.tokenizer.decode(ids) if req.echo else "" for ids, _, _ in jobs]
        texts = [prompt_text[c // req.n] for c in range(n_choices)]
        reasons: list[str | None] = [None] * n_choices
        lps = [{"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []} for _ in range(n_choices)]
        tally = _Tally([[] for _ in range(n_choices)])
        n_prompt = sum(len(ids) for ids, _, _ in jobs)
        self.metrics.in_flight.inc()
        try:
            async for c, out in merge(self._completion_streams(req, jobs, rid)):
                tally.add(c, out)
                if req.logprobs is not None:
                    for key, vals in self._completion_logprobs(out, len(texts[c])).items():
                        lps[c][key].extend(vals)
                texts[c] += out.text
                if out.finished:
                    reasons[c] = out.finish_reason or "stop"
        finally:
            self.metrics.in_flight.dec()
            self._record("completions", tally, n_prompt, reasons)
        return Completion(
            id=rid, model=req.model, usage=self._usage(n_prompt, tally, None),
            choices=[CompletionChoice(index=c, text=texts[c], finish_reason=reasons[c],
                                      logprobs=lps[c] if req.logprobs is not None else None)
                     for c in range(n_choices)]).model_dump()

    async def _completion_stream(self, req: CompletionRequest, jobs, rid: str) -> AsyncIterator[str]:
        created = int(time.time())
        include_usage = req.stream_options is not None and req.stream_options.include_usage
        n_choices = len(jobs) * req.n
        tally = _Tally([[] for _ in range(n_choices)])
        reasons: list[str | None] = [None] * n_choices
        offsets = [0] * n_choices
        n_prompt = sum(len(ids) for ids, _, _ in jobs)

        def chunk(c: int, text: str, lp: dict | None, finish: str | None) -> str:
            return _stream_chunk(rid, "text_completion", created, req.model, include_usage,
                                 {"index": c, "text": text, "logprobs": lp, "finish_reason": finish})

        self.metrics.in_flight.inc()
        try:
            if req.echo:
                for c in range(n_choices):
                    text = self.backend.tokenizer.decode(jobs[c // req.n][0])
                    offsets[c] = len(text)
                    yield chunk(c, text, None, None)
            async for c, out in merge(self._completion_streams(req, jobs, rid)):
                tally.add(c, out)
                lp = self._completion_logprobs(out, offsets[c]) if req.logprobs is not None else None
                offsets[c] += len(out.text)
                if out.finished:
                    reasons[c] = out.finish_reason or "stop"
                if out.text or lp or out.finished:
                    yield chunk(c, out.text, lp, reasons[c])
            if include_usage:
                yield sse({"id": rid, "object": "text_completion", "created": created, "model": req.model,
                           "choices": [], "usage": self._usage(n_prompt, tally, None)})
            yield DONE
        except Exception as e:  # the response has started: report in-band, never crash the server
            yield sse(error_body(f"generation failed: {e}", type="server_error", code="internal_error"))
            yield DONE
        finally:
            self.metrics.in_flight.dec()
            self._record("completions", tally, n_prompt, reasons)


def _stream_chunk(rid: str, obj: str, created: int, model: str, include_usage: bool, choice: dict) -> str:
    """One SSE chunk with one choice; `usage` is null on every chunk but the final one when the
    client asked for it (stream_options.include_usage), as OpenAI sends it."""
    body = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}
    if include_usage:
        body["usage"] = None
    return sse(body)
