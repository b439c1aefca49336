"""Rollout: K samples per prompt through a rollout engine, scored into GRPO groups (paper §3.5).

Engines are anything with `generate(prompts, params) -> list[list[Completion]]` (token-id
prompts in, `params.n` completions per prompt out):

- `LocalEngine`: the in-process `glm45.infer.Engine` (continuous batching; weights pushed in place).
- `HTTPEngine`: a server. `api="openai"` posts token-id prompts to `/v1/completions` (vLLM,
  SGLang, `glm45 serve`); `api="generate"` posts to an SGLang-style `/generate`.

Tasks are the JSON-able records the data buffer holds:

- single-turn: `messages` (or a `prompt` string), optional `tools` and `enable_thinking`, and a
  `reward_kind`; the reward is `glm45.rl.rewards.compute_reward(record, raw text)`.
- multi-turn: an `env` naming a `glm45.envs` environment (optional `env_config`); `env.reset`
  gets the record's `task` when it has one (an environment record wrapped as is), else the
  record itself (environments that read their own fields from it). The trajectory is built token by token: model turns are trained (with
  their rollout logprobs), environment answers (tool results, user turns) are masked out, and
  the episode's reward goes to the whole trajectory (§3.3.2).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from glm45.rl.buffer import PromptItem
from glm45.rl.errors import RLError
from glm45.rl.sample import Sample, Status

__all__ = ["Completion", "HTTPEngine", "LocalEngine", "RolloutConfig", "RolloutEngine", "RolloutStats", "rollout",
           "task_prompt"]

_STATUS = {"stop": Status.COMPLETED, "length": Status.TRUNCATED, "abort": Status.ABORTED}


@dataclass
class Completion:
    """One generated continuation: its tokens (a stop token that ended it included), its text
    (special tokens kept, the stop token's text not), why it ended, and per-token logprobs."""

    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length" | "abort"
    logprobs: list[float] | None = None


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], params: Any) -> list[list[Completion]]:
        """`params.n` completions for each token-id prompt, in order; `params` is one
        `glm45.infer.SamplingParams` or a list of them, one per prompt."""


def _per_prompt(params: Any, n: int) -> list[Any]:
    plist = list(params) if isinstance(params, Sequence) else [params] * n
    if len(plist) != n:
        raise RLError(f"got {len(plist)} sampling parameters for {n} prompts")
    return plist


# ---- engines -----------------------------------------------------------------------------------


class LocalEngine:
    """`glm45.infer.Engine` as a rollout engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer

    def generate(self, prompts: Sequence[Sequence[int]], params: Any) -> list[list[Completion]]:
        if not prompts:
            return []
        results = self.engine.generate([list(p) for p in prompts], _per_prompt(params, len(prompts)))
        return [[Completion(list(s.token_ids), s.text, s.finish_reason,
                            None if s.logprobs is None else [float(e["logprob"]) for e in s.logprobs])
                 for s in (r.samples or [r])] for r in results]

    def update_weights(self, state: Mapping[str, Any]) -> None:
        self.engine.update_weights(state)


_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class HTTPEngine:
    """A rollout engine behind HTTP. Token ids come from the server when it reports them (SGLang
    `/generate`; vLLM with `return_tokens_as_token_ids`), else from the token strings of the
    logprobs when each names exactly one vocabulary entry (`glm45 serve`, same tokenizer). Failing
    both (a token holding part of a UTF-8 character shows as U+FFFD), the text is re-encoded
    with the local tokenizer plus the stop token named last; that may split it differently from
    the sampled ids, so the server's logprobs are then dropped and the trainer recomputes them."""

    def __init__(self, base_url: str, tokenizer: Any, *, api: str = "openai", model: str | None = None,
                 api_key: str | None = None, timeout_s: float = 600.0, max_concurrency: int = 16,
                 retries: int = 2) -> None:
        import httpx

        if api not in ("openai", "generate"):
            raise RLError(f"api must be 'openai' or 'generate', got {api!r}")
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.api = api
        self.model = model
        self.retries = retries
        self.max_concurrency = max_concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self._ids_by_text: dict[str, int] | None = None

    def _token_id(self, text: str) -> int | None:
        """The id of the one vocabulary entry whose text (as OpenAI logprobs show it) is `text`."""
        if self._ids_by_text is None:
            from glm45.tokenizer.incremental import token_bytes

            seen: dict[str, int] = {}
            for i in range(self.tokenizer.vocab_size):
                shown = token_bytes(self.tokenizer.id_to_token(i)).decode("utf-8", errors="replace")
                seen[shown] = -1 if shown in seen else i
            self._ids_by_text = seen
        i = self._ids_by_text.get(text, -1)
        return None if i < 0 else i

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                r = self._client.post(self.base_url + path, json=body)
            except httpx.TransportError as e:  # connection refused / reset: worth retrying
                last = e
                time.sleep(0.5 * 2**attempt)
                continue
            if r.status_code >= 500:
                last = RLError(f"{self.base_url}{path} answered {r.status_code}: {r.text[:300]}")
                time.sleep(0.5 * 2**attempt)
                continue
            if r.status_code != 200:
                raise RLError(f"{self.base_url}{path} answered {r.status_code}: {r.text[:300]}")
            return r.json()
        raise RLError(f"rollout request to {self.base_url}{path} failed after {self.retries + 1} tries: {last}")

    def _model_name(self) -> str:
        if self.model is None:
            r = self._client.get(self.base_url + "/v1/models")
            if r.status_code != 200 or not r.json().get("data"):
                raise RLError(f"{self.base_url}/v1/models gave no model; pass model=")
            self.model = r.json()["data"][0]["id"]
        return self.model

    def generate(self, prompts: Sequence[Sequence[int]], params: Any) -> list[list[Completion]]:
        if not prompts:
            return []
        one = self._openai if self.api == "openai" else self._generate
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
            return list(pool.map(one, [list(p) for p in prompts], _per_prompt(params, len(prompts))))

    def _openai(self, ids: list[int], params: Any) -> list[Completion]:
        body = {"model": self._model_name(), "prompt": ids, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "n": params.n, "logprobs": 0,
                # vLLM extensions (ignored elsewhere): ids in the logprobs, special tokens in the text.
                "return_tokens_as_token_ids": True, "skip_special_tokens": False}
        if params.seed is not None:
            body["seed"] = params.seed
        data = self._post("/v1/completions", body)
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != params.n:
            raise RLError(f"asked {self.base_url} for {params.n} completions, got {len(choices)}")
        out = []
        for c in choices:
            lp = c.get("logprobs") or {}
            tokens, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
            reason = c.get("finish_reason") or "stop"
            matched = [_TOKEN_ID.match(t) for t in tokens]
            looked_up = [self._token_id(t) for t in tokens] if tokens and not all(matched) else []
            if tokens and (all(matched) or None not in looked_up):
                ids_out = [int(m.group(1)) for m in matched] if all(matched) else looked_up
                stops = set(self.tokenizer.stop_token_ids)
                body = ids_out[:-1] if reason == "stop" and ids_out[-1] in stops else ids_out
                text = self.tokenizer.decode(body)
            else:
                text = c.get("text", "")
                ids_out = self.tokenizer.encode(text)
                stop = tokens[-1] if tokens and reason == "stop" else None
                if stop is not None and stop in self.tokenizer.special_ids:
                    ids_out.append(self.tokenizer.special_ids[stop])
            logprobs = [float(v) for v in values] if len(values) == len(ids_out) and None not in values else None
            out.append(Completion(ids_out, text, reason, logprobs))
        return out

    def _generate(self, ids: list[int], params: Any) -> list[Completion]:
        sampling = {"max_new_tokens": params.max_tokens, "temperature": params.temperature,
                    "top_p": params.top_p, "skip_special_tokens": False}
        data = self._post("/generate", {"input_ids": [ids] * params.n, "sampling_params": sampling,
                                        "return_logprob": True})
        if isinstance(data, dict):
            data = [data]
        if len(data) != params.n:
            raise RLError(f"asked {self.base_url}/generate for {params.n} completions, got {len(data)}")
        out = []
        for d in data:
            meta = d.get("meta_info") or {}
            entries = meta.get("output_token_logprobs") or []
            ids_out = list(d.get("output_ids") or [int(e[1]) for e in entries])
            finish = meta.get("finish_reason")
            reason = (finish.get("type") if isinstance(finish, dict) else finish) or "stop"
            logprobs = [float(e[0]) for e in entries] if len(entries) == len(ids_out) and entries else None
            stops = set(self.tokenizer.stop_token_ids)
            body_ids = ids_out[:-1] if reason == "stop" and ids_out and ids_out[-1] in stops else ids_out
            out.append(Completion(ids_out, self.tokenizer.decode(body_ids), reason, logprobs))
        return out


# ---- tasks ---------------------------------------------------------------------------------------


def task_prompt(task: Mapping[str, Any]) -> tuple[list[dict], list[dict], bool]:
    """(messages, tools, enable_thinking) of a single-turn task record."""
    if not isinstance(task, Mapping):
        raise RLError(f"a task must be a dict record, got {type(task).__name__}")
    messages = task.get("messages")
    if messages is None:
        if not isinstance(task.get("prompt"), str):
            raise RLError(f"task {task.get('id', '')!r} needs 'messages' or a 'prompt' string")
        messages = [{"role": "user", "content": task["prompt"]}]
    return list(messages), list(task.get("tools") or []), bool(task.get("enable_thinking", True))


def _multi_turn(task: Any) -> bool:
    return isinstance(task, Mapping) and task.get("env") not in (None, "single_turn")


@dataclass
class RolloutConfig:
    group_size: int = 8  # K samples per prompt
    max_tokens: int = 256  # per model turn
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0  # request seeds derive from (seed, group id, turn): reruns give the same samples
    max_turns: int = 8  # multi-turn episodes are cut after this many model turns
    max_context: int | None = None  # multi-turn: stop an episode whose trajectory outgrows this

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.max_tokens < 1 or self.max_turns < 1:
            raise RLError("group_size, max_tokens and max_turns must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise RLError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")


@dataclass
class RolloutStats:
    samples: int = 0
    tokens: int = 0  # generated (model) tokens
    seconds: float = 0.0
    reward_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def _seed(base: int, group_id: int, turn: int = 0) -> int:
    digest = hashlib.blake2b(f"{base}/{group_id}/{turn}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x3FFFFFFF


def _params(cfg: RolloutConfig, n: int, seed: int, temperature: float | None) -> Any:
    from glm45.infer import SamplingParams

    return SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature if temperature is None else temperature,
                          top_p=cfg.top_p, n=n, seed=seed, logprobs=0)


def rollout(engine: RolloutEngine, tokenizer: Any, items: Sequence[PromptItem], cfg: RolloutConfig, *,
            weight_version: int = 0, temperature: float | None = None, group_size: int | None = None,
            stats: RolloutStats | None = None) -> list[list[Sample]]:
    """One group of `group_size` (default cfg.group_size) scored samples per prompt item."""
    k = group_size or cfg.group_size
    t0 = time.perf_counter()
    stats = stats if stats is not None else RolloutStats()
    single = [it for it in items if not _multi_turn(it.prompt)]
    multi = [it for it in items if _multi_turn(it.prompt)]
    groups: dict[int, list[Sample]] = {}
    if single:
        groups.update(_single_turn(engine, tokenizer, single, cfg, k, weight_version, temperature, stats))
    if multi:
        groups.update(_episodes(engine, tokenizer, multi, cfg, k, weight_version, temperature, stats))
    stats.seconds += time.perf_counter() - t0
    return [groups[it.group_id] for it in items]


def _single_turn(engine, tokenizer, items, cfg, k, version, temperature, stats) -> dict[int, list[Sample]]:
    from glm45.chat import render
    from glm45.rl.rewards import compute_reward

    prompts = []
    for it in items:
        messages, tools, thinking = task_prompt(it.prompt)
        prompts.append(tokenizer.encode(render(messages, tools or None, enable_thinking=thinking,
                                               add_generation_prompt=True)))
    # One request per prompt (its K samples share it), each with its own seed.
    by_seed = [_params(cfg, k, _seed(cfg.seed, it.group_id), temperature) for it in items]
    completions = engine.generate(prompts, by_seed)
    out: dict[int, list[Sample]] = {}
    t_reward = time.perf_counter()
    for it, ids, group in zip(items, prompts, completions):
        samples = []
        for i, c in enumerate(group):
            s = Sample(prompt_ids=list(ids), response_ids=list(c.token_ids), rollout_logprobs=c.logprobs,
                       status=_STATUS.get(c.finish_reason, Status.ABORTED), group_id=it.group_id, index=i,
                       weight_version=version, prompt=it.prompt, response_text=c.text)
            reward = compute_reward(it.prompt, c.text)
            s.reward = float(reward.value)
            samples.append(s)
            stats.samples += 1
            stats.tokens += len(c.token_ids)
        out[it.group_id] = samples
    stats.reward_seconds += time.perf_counter() - t_reward
    return out


# ---- multi-turn episodes ------------------------------------------------------------------------


def _env_suffix(assistant: Mapping[str, Any], observation: Sequence[Mapping], tools: list[dict],
                enable_thinking: bool) -> str:
    """The text the chat template puts after an assistant turn for `observation` (tool results,
    a user turn), through the next generation prompt. Rendered after a stand-in conversation
    whose assistant turn has no text and no reasoning: the template drops an assistant turn's
    reasoning once a later user turn exists, so the model's own turn (kept as the tokens it
    generated) must not be re-rendered on either side."""
    from glm45.chat import render

    stand_in = [{"role": "user", "content": "."},
                {"role": "assistant", "content": "", "reasoning_content": "",
                 **({"tool_calls": assistant["tool_calls"]} if assistant.get("tool_calls") else {})}]
    before = render(stand_in, tools or None, enable_thinking=enable_thinking)
    after = render(stand_in + [dict(m) for m in observation], tools or None, enable_thinking=enable_thinking,
                   add_generation_prompt=True)
    if not after.startswith(before):
        raise RLError("the chat template did not render the observation after the assistant turn prefix-consistently")
    return after[len(before):]


@dataclass
class _Episode:
    item: PromptItem
    index: int
    env: Any
    tools: list[dict]
    thinking: bool
    sample: Sample
    turns: int = 0
    logprobs_complete: bool = True  # every model turn came with the engine's logprobs


def _episodes(engine, tokenizer, items, cfg, k, version, temperature, stats) -> dict[int, list[Sample]]:
    from glm45.chat import render
    from glm45.envs.base import make_env

    live: list[_Episode] = []
    finished: list[_Episode] = []
    for it in items:
        task = it.prompt
        for i in range(k):
            env = make_env(task["env"], **dict(task.get("env_config") or {}))
            messages, tools = env.reset(task["task"] if "task" in task else task)
            thinking = bool(task.get("enable_thinking", True))
            ids = tokenizer.encode(render(messages, tools or None, enable_thinking=thinking, add_generation_prompt=True))
            if cfg.max_context is not None and len(ids) >= cfg.max_context - 1:
                raise RLError(f"task {task.get('id', it.group_id)!r}: its prompt alone has {len(ids)} tokens, "
                              f"max_context is {cfg.max_context}; raise the context (--max-seq-len)")
            sample = Sample(prompt_ids=ids, rollout_logprobs=[], group_id=it.group_id, index=i, weight_version=version,
                            prompt=task)
            live.append(_Episode(it, i, env, list(tools), thinking, sample))
    stops = {tokenizer.special_ids[t] for t in ("<|observation|>", "<|user|>")}
    while live:
        prompts = [ep.sample.prompt_ids + ep.sample.response_ids for ep in live]
        params = [_params(cfg, 1, _seed(cfg.seed, ep.item.group_id, 1000 * ep.turns + ep.index), temperature)
                  for ep in live]
        completions = engine.generate(prompts, params)
        still = []
        for ep, (c,) in zip(live, completions):
            s = ep.sample
            ep.turns += 1
            ep.logprobs_complete &= c.logprobs is not None
            s.extend(c.token_ids, trainable=True, logprobs=c.logprobs if c.logprobs is not None else [0.0] * len(c.token_ids))
            s.response_text += c.text
            stats.tokens += len(c.token_ids)
            if c.finish_reason != "stop":
                s.status = _STATUS.get(c.finish_reason, Status.ABORTED)
                s.reward = 0.0  # a turn cut at the token limit never reached the environment
                s.metadata["end"] = "truncated_turn"
                finished.append(ep)
                continue
            step = ep.env.step(c.text)
            if step.done:
                s.reward = float(step.reward or 0.0)
                s.metadata.update(end=step.info.get("end", "done"), turns=ep.turns)
                finished.append(ep)
                continue
            suffix = _env_suffix(ep.env.messages[-1 - len(step.observation)], step.observation, ep.tools, ep.thinking)
            env_ids = tokenizer.encode(suffix)
            if c.token_ids and c.token_ids[-1] in stops and env_ids and env_ids[0] == c.token_ids[-1]:
                env_ids = env_ids[1:]  # the model already wrote the token that hands over the turn
            s.extend(env_ids, trainable=False)
            too_long = cfg.max_context is not None and len(s.prompt_ids) + len(s.response_ids) >= cfg.max_context - 1
            if ep.turns >= cfg.max_turns or too_long:
                s.reward, s.status = 0.0, Status.TRUNCATED
                s.metadata.update(end="max_context" if too_long else "max_turns", turns=ep.turns)
                finished.append(ep)
                continue
            still.append(ep)
        live = still
    for ep in finished:
        ep.sample.metadata["messages"] = [dict(m) for m in ep.env.messages]  # the trajectory, for distillation
        ep.sample.metadata["tools"] = ep.tools
        if not ep.logprobs_complete:
            ep.sample.rollout_logprobs = None  # the trainer recomputes them
        stats.samples += 1
    out: dict[int, list[Sample]] = {}
    for ep in sorted(finished, key=lambda e: (e.item.group_id, e.index)):
        out.setdefault(ep.item.group_id, []).append(ep.sample)
    return out
