"""The inference engine: continuous batching over a pre-allocated KV cache, optional MTP
speculative decoding, stop handling and streaming text.

Shape legend: B rows in a forward, T tokens per row, V vocabulary, D model width.

A step admits waiting requests (prefill: one padded forward, first token sampled, first MTP
draft made), then advances every request that was already running by one decode forward:
one token each, or with speculation [last token, draft] each, keeping the draft when verified
plus the token after it. Requests leave between steps; their cache rows are reused.

Not thread-safe: one thread drives an Engine (`AsyncEngine` does that for servers).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from glm45.infer.detok import TextTracker
from glm45.infer.kv_cache import KVCache
from glm45.infer.outputs import GenerationResult, RequestOutput, TokenLogprob
from glm45.infer.params import SamplingParams
from glm45.infer.sampling import (RandomStreams, SamplingBatch, apply_penalties, sample, sample_from_probs,
                                  token_logprobs)
from glm45.infer.scheduler import Scheduler
from glm45.infer.speculative import draft_distribution, verify_greedy, verify_sampled
from glm45.model.moe import compiled_gather_max_tokens


class InferenceError(ValueError):
    """A request or engine setting the engine cannot serve (the message says why)."""


Prompt = Sequence[int] | str | Sequence[Mapping[str, Any]] | Mapping[str, Any]


class _Request:
    """Engine-side state of one request."""

    def __init__(self, request_id: str, prompt_ids: list[int], params: SamplingParams, stop_ids: set[int],
                 tracker: TextTracker, generator: torch.Generator | None):
        self.id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.stop_ids = stop_ids
        self.tracker = tracker
        self.generator = generator
        self.output_ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.row = -1
        self.cached = 0  # positions of this request in the KV cache
        self.last = -1  # the newest token: generated, not yet in the cache
        self.draft = -1  # MTP's guess for the token after `last`
        self.draft_probs: torch.Tensor | None = None  # the distribution `draft` was drawn from
        self.counts: torch.Tensor | None = None  # generated-token counts (penalties only)
        self.seen: torch.Tensor | None = None  # prompt or generated (repetition penalty)
        self.finished = False
        self.finish_reason: str | None = None
        self.forwards = self.drafted = self.accepted = 0
        self.t_arrival = time.perf_counter()
        self.t_first: float | None = None
        self.t_end: float | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def stats(self) -> dict[str, Any]:
        n = len(self.output_ids)
        end = self.t_end or time.perf_counter()
        return {
            "prompt_tokens": len(self.prompt_ids), "generated_tokens": n, "forwards": self.forwards,
            "tokens_per_forward": n / self.forwards if self.forwards else 0.0,
            "drafted": self.drafted, "accepted": self.accepted,
            "acceptance_rate": self.accepted / self.drafted if self.drafted else None,
            "time_to_first_token_s": (self.t_first - self.t_arrival) if self.t_first else None,
            "latency_s": end - self.t_arrival,
        }

    def result(self) -> GenerationResult:
        return GenerationResult(self.id, list(self.prompt_ids), list(self.output_ids), self.tracker.text,
                                self.finish_reason or "abort", self.logprobs, self.stats())


class Engine:
    """Generate with a `GLM45ForCausalLM` (see the module docstring).

    `max_seq_len` bounds prompt + generated tokens per request (the cache holds that many per
    row); `max_batch_size` is the number of rows. `speculative` drafts with the MTP layer.
    `compile` runs decode forwards through `torch.compile` (prefill stays eager: its shapes vary
    and it is not bound by per-op overhead). The first steps of each batch shape compile
    (seconds to a minute); after that a decode step is one fused graph.
    """

    def __init__(self, model, tokenizer=None, *, max_batch_size: int = 8, max_seq_len: int | None = None,
                 speculative: bool = False, device: str | torch.device | None = None, seed: int | None = None,
                 max_prefill_tokens: int = 16384, compile: bool = False):
        config = model.config
        if not (isinstance(max_batch_size, int) and max_batch_size >= 1):
            raise InferenceError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        if max_seq_len is None:
            max_seq_len = min(config.max_position_embeddings, 8192)
        if not (isinstance(max_seq_len, int) and max_seq_len >= 2):
            raise InferenceError(f"max_seq_len must be an integer >= 2, got {max_seq_len!r}")
        if speculative and getattr(model, "mtp", None) is None:
            raise InferenceError("speculative decoding needs the model's MTP layer, and this model has none "
                                 "(num_nextn_predict_layers = 0, or a checkpoint saved without MTP weights)")
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        _heads_column_major(model)
        self.config = config
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.dtype = model.model.embed_tokens.weight.dtype
        self.speculative = speculative
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len
        self.vocab_size = config.vocab_size
        eos = tokenizer.stop_token_ids if tokenizer is not None else config.eos_token_id
        self.eos_ids: set[int] = set(eos)
        self.pad_id = config.pad_token_id
        self.rng = RandomStreams(seed)
        self.scheduler: Scheduler[_Request] = Scheduler(max_batch_size, max_prefill_tokens)
        self.requests: dict[str, _Request] = {}
        self._pending: list[RequestOutput] = []  # outputs of aborts, returned by the next step
        self._ids = itertools.count()
        self._decode_batch: tuple[tuple[str, ...], SamplingBatch] | None = None
        self.compiled = compile
        self._decode_forward, self._decode_mtp = model.forward, model.mtp_forward
        if compile:
            model.model.rotary.reserve(max_seq_len, self.device)
            # dynamic: batch size and cache length vary step to step; one graph serves them all.
            self._decode_forward = torch.compile(model.forward, dynamic=True)
            if speculative:
                self._decode_mtp = torch.compile(model.mtp_forward, dynamic=True)
        layers = config.num_hidden_layers + (1 if speculative else 0)
        with torch.inference_mode():
            self.cache = KVCache(layers, max_batch_size, config.num_key_value_heads, config.head_dim,
                                 max_seq_len, self.dtype, self.device)
        self.totals = _zero_totals()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: torch.dtype | None = None, *,
                        fp8: bool | None = None, device: str | torch.device | None = None, **kwargs) -> "Engine":
        """Load a checkpoint directory (and its tokenizer when it has one). `fp8`: run linear
        weights as block-wise e4m3 (None = iff the checkpoint stores them so)."""
        from glm45.infer.fp8 import is_fp8_checkpoint, load_fp8_pretrained
        from glm45.model import GLM45ForCausalLM

        directory = os.fspath(directory)
        if fp8 is None:
            fp8 = is_fp8_checkpoint(directory)
        if fp8:
            model = load_fp8_pretrained(directory, dtype=dtype)
        else:
            model = GLM45ForCausalLM.from_pretrained(directory, dtype=dtype)
        tokenizer = None
        if os.path.exists(os.path.join(directory, "tokenizer.json")):
            from glm45.tokenizer import GLMTokenizer

            tokenizer = GLMTokenizer.from_pretrained(directory)
        return cls(model, tokenizer, device=device, **kwargs)

    # ------------------------------------------------------------------ requests
    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: ids as given, text encoded, chat messages rendered with the
        generation prompt (a dict {"messages", "tools"?, "enable_thinking"?} also works)."""
        if isinstance(prompt, str):
            return self._need_tokenizer("a text prompt").encode(prompt)
        if isinstance(prompt, Mapping):
            if "messages" not in prompt:
                raise InferenceError(f"a dict prompt needs 'messages'; got keys {sorted(prompt)}")
            return self._chat_ids(prompt["messages"], prompt.get("tools"), prompt.get("enable_thinking", True))
        if isinstance(prompt, Sequence) and prompt and all(isinstance(m, Mapping) for m in prompt):
            return self._chat_ids(prompt, None, True)
        if isinstance(prompt, (Sequence, torch.Tensor)):
            ids = prompt.tolist() if isinstance(prompt, torch.Tensor) else list(prompt)
            if all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                return ids
        raise InferenceError("a prompt must be a list of token ids, a string, or a list of chat messages; "
                             f"got {type(prompt).__name__}")

    def _chat_ids(self, messages, tools, enable_thinking: bool) -> list[int]:
        from glm45.chat import render

        tok = self._need_tokenizer("a chat prompt")
        return tok.encode(render(messages, tools, enable_thinking=enable_thinking, add_generation_prompt=True))

    def _need_tokenizer(self, what: str):
        if self.tokenizer is None:
            raise InferenceError(f"{what} needs a tokenizer; this engine has none (pass token ids)")
        return self.tokenizer

    def add_request(self, prompt: Prompt, params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        """Queue a request; it joins the running batch at a coming step. Returns its id."""
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise InferenceError(f"params must be SamplingParams, got {type(params).__name__}")
        if params.n != 1:
            raise InferenceError(f"add_request takes n = 1 (got n = {params.n}); add one request per sample "
                                 "or use generate()")
        ids = self.prompt_ids(prompt)
        if not ids:
            raise InferenceError("the prompt is empty")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise InferenceError(f"prompt token ids {bad[:5]} are outside the vocabulary (size {self.vocab_size})")
        if len(ids) >= self.max_seq_len:
            raise InferenceError(f"the prompt has {len(ids)} tokens; this engine's max_seq_len is {self.max_seq_len} "
                                 "(prompt + generated), so at most max_seq_len - 1 prompt tokens fit")
        if params.stop and self.tokenizer is None:
            raise InferenceError("stop strings need a tokenizer; this engine has none (use stop_token_ids)")
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise InferenceError(f"request id {request_id!r} is already in use")
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_ids)
        req = _Request(request_id, ids, params, stop_ids, TextTracker(self.tokenizer, params.stop),
                       self.rng.generator_for(params.seed))
        self.requests[request_id] = req
        self.scheduler.add(req)
        self.totals["requests"] += 1
        self.totals["prompt_tokens"] += len(ids)
        return request_id

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its row; the next `step` reports it finished ("abort").
        Returns False if no such unfinished request exists."""
        req = self.requests.get(request_id)
        if req is None or req.finished:
            return False
        self.scheduler.remove_waiting(req)
        self._finish(req, "abort")
        self._release()
        self._pending.append(self._output(req, [], None))
        return True

    def has_unfinished(self) -> bool:
        return bool(self.scheduler.num_waiting or self.scheduler.num_running or self._pending)

    # ---------------------------------------------------------------------- step
    def step(self) -> list[RequestOutput]:
        """Admit waiting requests (prefill), advance running ones by one decode forward."""
        t0 = time.perf_counter()
        outputs, self._pending = self._pending, []
        with torch.inference_mode():
            decoding = list(self.scheduler.running)
            admitted = self.scheduler.admit()
            if decoding:
                (self._decode_speculative if self.speculative else self._decode)(decoding, outputs)
            if admitted:
                self._prefill(admitted, outputs)
            self._release()
        if decoding or admitted:
            self.totals["steps"] += 1
            self.totals["step_time_s"] += time.perf_counter() - t0
        return outputs

    def _release(self) -> None:
        for req in self.scheduler.compact(self.cache.move_row):
            del self.requests[req.id]

    def _prefill(self, reqs: list[_Request], outputs: list[RequestOutput]) -> None:
        lens = [r.num_prompt_tokens for r in reqs]
        T = max(lens)
        rows = [r.prompt_ids + [self.pad_id] * (T - len(r.prompt_ids)) for r in reqs]
        ids_BT = torch.tensor(rows, device=self.device)
        cb = self.cache.batch(reqs[0].row, [0] * len(reqs), T)
        out = self.model(ids_BT, position_ids=cb.position_ids, attn_mask=cb.mask, cache=cb, compute_logits=False)
        last_B = torch.tensor([n - 1 for n in lens], device=self.device)
        ar_B = torch.arange(len(reqs), device=self.device)
        logits_BV = self.model.lm_head(out.hidden_states[ar_B, last_B])
        for r in reqs:
            if r.params.uses_penalties:
                r.counts = torch.zeros(self.vocab_size, device=self.device)
                r.seen = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
                r.seen[torch.tensor(r.prompt_ids, device=self.device)] = True
        batch = SamplingBatch.build([r.params for r in reqs], self.device)
        tokens_B = self._choose(reqs, batch, logits_BV)
        logprobs = self._logprobs(reqs, logits_BV, tokens_B)
        drafts: list[int] | None = None
        if self.speculative:
            next_BT = torch.cat([ids_BT[:, 1:], ids_BT[:, :1]], dim=1)  # the token after each position...
            next_BT[ar_B, last_B] = tokens_B  # ...and after the prompt's end, the token just sampled
            mtp_BV = self.model.mtp_forward(out.hidden_states, next_BT, cb.position_ids, cb.mask, cb,
                                            logits_index=last_B[:, None])[:, 0]
            drafts = self._draft(reqs, batch, mtp_BV)
        now = time.perf_counter()
        self.totals["forwards"] += 1
        self.totals["row_forwards"] += len(reqs)
        for i, (r, tok) in enumerate(zip(reqs, tokens_B.tolist())):
            r.cached, r.forwards, r.t_first = len(r.prompt_ids), 1, now
            if drafts is not None:
                r.draft = drafts[i]
            self._commit(r, [tok], logprobs[i:i + 1] if logprobs else None, outputs)

    def _decode(self, reqs: list[_Request], outputs: list[RequestOutput]) -> None:
        cb = self.cache.batch(0, [r.cached for r in reqs], 1)
        ids_B1 = torch.tensor([[r.last] for r in reqs], device=self.device)
        logits_BV = self._decode_forward(ids_B1, position_ids=cb.position_ids, attn_mask=cb.mask, cache=cb,
                                         logits_to_keep=1).logits[:, 0]
        batch = self._batch(reqs)
        tokens_B = self._choose(reqs, batch, logits_BV)
        logprobs = self._logprobs(reqs, logits_BV, tokens_B)
        self.totals["forwards"] += 1
        self.totals["row_forwards"] += len(reqs)
        for i, (r, tok) in enumerate(zip(reqs, tokens_B.tolist())):
            r.cached += 1
            r.forwards += 1
            self._commit(r, [tok], logprobs[i:i + 1] if logprobs else None, outputs)

    def _decode_speculative(self, reqs: list[_Request], outputs: list[RequestOutput]) -> None:
        B = len(reqs)
        cb = self.cache.batch(0, [r.cached for r in reqs], 2)
        ids_B2 = torch.tensor([[r.last, r.draft] for r in reqs], device=self.device)
        out = self._decode_forward(ids_B2, position_ids=cb.position_ids, attn_mask=cb.mask, cache=cb)
        logits_B2V = out.logits
        draft_B = ids_B2[:, 1]
        batch = self._batch(reqs)
        if batch.all_greedy and not batch.any_penalties:
            verdict = verify_greedy(logits_B2V, draft_B)
        else:
            l0, l1 = logits_B2V[:, 0], logits_B2V[:, 1]
            if batch.any_penalties:
                l0, l1 = self._penalize(reqs, l0), self._penalize(reqs, l1, extra_B=draft_B)
            q_BV = torch.stack([r.draft_probs if r.draft_probs is not None
                                else _one_hot(r.draft, self.vocab_size, self.device) for r in reqs])
            verdict = verify_sampled(l0, l1, draft_B, q_BV, batch, self.rng.uniforms([r.generator for r in reqs], 3))
        accept_B = verdict.accept_B
        # MTP input per row: accepted -> positions (draft, token after it), draft from the second;
        # rejected -> (resampled token, filler), draft from the first. Its cache entry for the
        # filler lies past the row's length and is overwritten next step.
        next_B2 = torch.where(accept_B[:, None], torch.stack([draft_B, verdict.second_B], 1),
                              verdict.first_B[:, None].expand(B, 2))
        mtp_BV = self._decode_mtp(out.hidden_states, next_B2, cb.position_ids, cb.mask, cb,
                                  logits_index=accept_B.long()[:, None])[:, 0]
        drafts = self._draft(reqs, batch, mtp_BV)
        logprobs = None
        if any(r.logprobs is not None for r in reqs):
            lp0 = self._logprobs(reqs, logits_B2V[:, 0], verdict.first_B)
            lp1 = self._logprobs(reqs, logits_B2V[:, 1], verdict.second_B)
            logprobs = list(zip(lp0, lp1))
        accept, first, second = torch.stack([accept_B.long(), verdict.first_B, verdict.second_B]).tolist()
        self.totals["forwards"] += 1
        self.totals["row_forwards"] += B
        self.totals["drafted"] += B
        for i, r in enumerate(reqs):
            r.forwards += 1
            r.drafted += 1
            r.draft = drafts[i]
            if accept[i]:
                r.accepted += 1
                self.totals["accepted"] += 1
                r.cached += 2
                self._commit(r, [first[i], second[i]], list(logprobs[i]) if logprobs else None, outputs)
            else:
                r.cached += 1
                self._commit(r, [first[i]], [logprobs[i][0]] if logprobs else None, outputs)

    # ------------------------------------------------------------------ sampling
    def _batch(self, reqs: list[_Request]) -> SamplingBatch:
        """The decode batch's sampling tensors, rebuilt only when its membership changes."""
        key = tuple(r.id for r in reqs)
        if self._decode_batch is None or self._decode_batch[0] != key:
            self._decode_batch = (key, SamplingBatch.build([r.params for r in reqs], self.device))
        return self._decode_batch[1]

    def _penalize(self, reqs: list[_Request], logits_BV: torch.Tensor,
                  extra_B: torch.Tensor | None = None) -> torch.Tensor:
        """Apply penalties; `extra_B` adds one more generated token per row (the draft, for the
        position after it)."""
        zeros = torch.zeros(self.vocab_size, device=self.device)
        counts = torch.stack([r.counts if r.counts is not None else zeros for r in reqs])
        seen = torch.stack([r.seen if r.seen is not None else zeros.bool() for r in reqs])
        if extra_B is not None:
            counts = counts.scatter_add(1, extra_B[:, None], torch.ones_like(counts[:, :1]))
            seen = seen.scatter(1, extra_B[:, None], True)
        return apply_penalties(logits_BV, [r.params for r in reqs], counts, seen)

    def _choose(self, reqs: list[_Request], batch: SamplingBatch, logits_BV: torch.Tensor) -> torch.Tensor:
        if batch.any_penalties:
            logits_BV = self._penalize(reqs, logits_BV)
        u = None if batch.all_greedy else self.rng.uniforms([r.generator for r in reqs])[:, 0]
        return sample(logits_BV, batch, u)

    def _draft(self, reqs: list[_Request], batch: SamplingBatch, mtp_BV: torch.Tensor) -> list[int]:
        if batch.all_greedy:
            for r in reqs:
                r.draft_probs = None
            return mtp_BV.argmax(-1).tolist()
        q_BV = draft_distribution(mtp_BV, batch)
        drafts = sample_from_probs(q_BV, self.rng.uniforms([r.generator for r in reqs])[:, 0])
        for i, r in enumerate(reqs):
            r.draft_probs = q_BV[i]
        return drafts.tolist()

    def _logprobs(self, reqs: list[_Request], logits_BV: torch.Tensor,
                  tokens_B: torch.Tensor) -> list[TokenLogprob | None] | None:
        want = [r.params.logprobs for r in reqs]
        if all(w is None for w in want):
            return None
        chosen, vals, ids = token_logprobs(logits_BV, tokens_B, max(w or 0 for w in want))
        chosen, vals, ids, toks = chosen.tolist(), vals.tolist(), ids.tolist(), tokens_B.tolist()
        return [None if w is None else
                {"token_id": toks[i], "logprob": chosen[i], "top": list(zip(ids[i][:w], vals[i][:w]))}
                for i, w in enumerate(want)]

    # ------------------------------------------------------------ bookkeeping
    def _commit(self, r: _Request, tokens: list[int], logprobs: list | None, outputs: list[RequestOutput]) -> None:
        """Append generated tokens (stopping at the first that finishes the request)."""
        new: list[int] = []
        new_lp: list[TokenLogprob] = []
        for j, tok in enumerate(tokens):
            new.append(tok)
            r.output_ids.append(tok)
            if r.logprobs is not None and logprobs:
                new_lp.append(logprobs[j])
                r.logprobs.append(logprobs[j])
            if r.counts is not None:
                r.counts[tok] += 1
                r.seen[tok] = True
            if tok in r.stop_ids:  # a stop token ends the request; its text is not added
                reason = "stop"
            elif r.tracker.add(tok):  # the text now holds a stop string (and was cut there)
                self._finish(r, "stop")
                break
            elif len(r.output_ids) >= r.params.max_tokens or \
                    len(r.prompt_ids) + len(r.output_ids) >= self.max_seq_len:
                reason = "length"
            else:
                continue
            r.tracker.flush()
            self._finish(r, reason)
            break
        r.last = new[-1]
        self.totals["generated_tokens"] += len(new)
        outputs.append(self._output(r, new, new_lp if r.logprobs is not None else None))

    def _finish(self, r: _Request, reason: str) -> None:
        r.finished, r.finish_reason, r.t_end = True, reason, time.perf_counter()
        r.draft_probs = None
        self.totals["finished"] += 1
        if reason == "abort" and r.row < 0:
            del self.requests[r.id]  # never admitted: no row to free

    def _output(self, r: _Request, new: list[int], logprobs) -> RequestOutput:
        return RequestOutput(r.id, new, r.tracker.take(final=r.finished), r.finished, r.finish_reason, logprobs,
                             len(r.prompt_ids), len(r.output_ids), r.result() if r.finished else None)

    # ------------------------------------------------------------- whole calls
    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[GenerationResult]:
        """Run prompts to completion (batched and continuously refilled); one result per prompt.
        Requests already in the engine keep running alongside; their outputs come from the next
        `step()`."""
        if _is_single_prompt(prompts):
            prompts = [prompts]
        prompts = list(prompts)
        plist = list(params) if isinstance(params, Sequence) else [params or SamplingParams()] * len(prompts)
        if len(plist) != len(prompts):
            raise InferenceError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        tag = uuid.uuid4().hex[:8]
        ids_of: list[list[str]] = []
        for i, (prompt, p) in enumerate(zip(prompts, plist)):
            ids = self.prompt_ids(prompt)
            ids_of.append([self.add_request(ids, p.single(s), f"gen-{tag}-{i}-{s}") for s in range(p.n)])
        wanted = {rid for group in ids_of for rid in group}
        done: dict[str, GenerationResult] = {}
        others: list[RequestOutput] = []
        while wanted - done.keys():
            for out in self.step():
                if out.request_id not in wanted:
                    others.append(out)
                elif out.finished:
                    done[out.request_id] = out.result
        self._pending = others + self._pending  # other requests' outputs: the next step() returns them
        results = []
        for group in ids_of:
            first = done[group[0]]
            if len(group) > 1:
                first.samples = [done[rid] for rid in group]
            results.append(first)
        return results

    def score(self, prompt_ids: Sequence[int], completion_ids: Sequence[int], *,
              temperature: float = 1.0) -> list[float]:
        """Log-probability of each completion token given the prompt and the tokens before it
        (logits / temperature), from one cache-free forward."""
        return self.score_batch([(prompt_ids, completion_ids)], temperature=temperature)[0]

    def score_batch(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                    temperature: float = 1.0) -> list[list[float]]:
        if temperature <= 0:
            raise InferenceError(f"temperature must be > 0 for scoring, got {temperature}")
        seqs = []
        for prompt, completion in pairs:
            p, c = list(prompt), list(completion)
            if not p:
                raise InferenceError("score needs a non-empty prompt")
            if any(not 0 <= t < self.vocab_size for t in p + c):
                raise InferenceError(f"token ids must lie in [0, {self.vocab_size})")
            seqs.append((p, c))
        T = max(len(p) + len(c) for p, c in seqs)
        ids = torch.tensor([p + c + [self.pad_id] * (T - len(p) - len(c)) for p, c in seqs], device=self.device)
        mask = torch.tensor([[1] * (len(p) + len(c)) + [0] * (T - len(p) - len(c)) for p, c in seqs],
                            device=self.device)
        with torch.inference_mode():
            logits = self.model(ids, attention_mask=mask).logits.float() / temperature
            logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None]).squeeze(2).tolist()
        return [logp[i][len(p) - 1:len(p) - 1 + len(c)] for i, (p, c) in enumerate(seqs)]

    def update_weights(self, weights, *, strict: bool = True) -> None:
        """Load new weights between steps (RL pushes the policy): a model or a state dict with
        glm45 or checkpoint (per-expert, optionally FP8 + weight_scale_inv) names. FP8 layers of
        this engine re-quantise high-precision weights. Running requests continue with the new
        weights on top of their existing KV cache."""
        from glm45.infer.weights import assign_weights

        state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        with torch.inference_mode():
            assign_weights(self.model, state, strict=strict)

    def warm_up(self) -> None:
        """Run the decode shapes a server meets on throwaway requests, so a compiled engine
        compiles them now: one row, then rows at different positions and at the same position,
        for a batch small enough to gather its experts' weights and one past it (where the
        experts run sorted, `compiled_gather_max_tokens`). Several rows means three: two would
        equal the two key/value heads of the small presets, and the compiler would tie the batch
        size to them and compile again for every other size. The totals are reset afterwards."""
        if self.has_unfinished():
            raise InferenceError("warm_up needs an idle engine")
        params = SamplingParams(max_tokens=3, ignore_eos=True, temperature=0.0)
        batches = {1, 3}
        cfg = self.config
        if any(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers)):
            tokens_per_row = 2 if self.speculative else 1  # a speculative step verifies two tokens a row
            batches.add(compiled_gather_max_tokens(cfg.n_routed_experts, cfg.num_experts_per_tok) // tokens_per_row + 1)
        # largest first: a compiled frame tries its newest graph first, and the large batch's
        # (broken at the experts) would otherwise also take the small batches it admits
        for rows in sorted({min(b, self.max_batch_size) for b in batches}, reverse=True):
            ragged = [[self.pad_id] * min(1 + i, self.max_seq_len - 1) for i in range(rows)]
            self.generate(ragged, params)
            if rows > 1:
                self.generate([[self.pad_id]] * rows, params)
        self.totals = _zero_totals()

    def stats(self) -> dict[str, Any]:
        t = dict(self.totals)
        t["waiting"] = self.scheduler.num_waiting
        t["running"] = self.scheduler.num_running
        t["acceptance_rate"] = t["accepted"] / t["drafted"] if t["drafted"] else None
        t["tokens_per_forward"] = t["generated_tokens"] / t["row_forwards"] if t["row_forwards"] else 0.0
        return t


def _zero_totals() -> dict[str, Any]:
    """The engine's running counters. forwards: model forwards run; row_forwards: summed over the
    rows in them (what tokens_per_forward divides by: 1.0 without speculation, up to 2.0 with it)."""
    return {"requests": 0, "finished": 0, "prompt_tokens": 0, "generated_tokens": 0, "forwards": 0,
            "row_forwards": 0, "drafted": 0, "accepted": 0, "steps": 0, "step_time_s": 0.0}


def _heads_column_major(model) -> None:
    """Store the output heads' [V, D] weights column-major (same shape and values, transposed
    memory). On CPU the head is the largest matmul of a decode step, and MKL runs
    x @ W.T about twice as fast when W.T is the contiguous one."""
    heads = [model.lm_head] + ([model.mtp.shared_head.head] if getattr(model, "mtp", None) is not None else [])
    with torch.no_grad():
        for head in heads:
            w = head.weight
            if w.device.type == "cpu" and w.is_contiguous() and w.dim() == 2:
                w.data = w.data.t().contiguous().t()


def _one_hot(index: int, size: int, device) -> torch.Tensor:
    v = torch.zeros(size, device=device)
    v[index] = 1.0
    return v


def _is_single_prompt(p) -> bool:
    """A text, a {"messages": ...} dict, a token-id list or one conversation (vs a list of prompts)."""
    if isinstance(p, (str, Mapping)):
        return True
    if isinstance(p, torch.Tensor):
        return p.ndim == 1
    if isinstance(p, Sequence) and p:
        return all(isinstance(t, int) for t in p) or all(isinstance(m, Mapping) and "role" in m for m in p)
    return False
