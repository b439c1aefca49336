"""Batched logits processing and sampling: penalties, temperature, top-k / top-p / min-p.

Shape legend: N rows (one distribution each), V vocabulary.

Every row carries its own parameters. Sampling is inverse-CDF with one uniform per row, so a
row's draw depends only on its own random stream (seeded requests are reproducible whatever
else is in the batch), and the same code gives the full filtered distribution that speculative
decoding's rejection rule needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glm45.infer.params import SamplingParams


@dataclass
class SamplingBatch:
    """The sampling parameters of N rows as tensors (built once per forward)."""

    params: list[SamplingParams]
    greedy_N: torch.Tensor  # bool
    all_greedy: bool
    any_greedy: bool
    temperature_N1: torch.Tensor | None  # None when every row is greedy
    any_filters: bool
    top_k_N1: torch.Tensor | None  # 0 = off; the filter columns are None when no row filters
    top_p_N1: torch.Tensor | None
    min_p_N1: torch.Tensor | None
    any_penalties: bool

    @classmethod
    def build(cls, params: list[SamplingParams], device: torch.device) -> "SamplingBatch":
        greedy = [p.greedy for p in params]
        all_greedy, any_greedy = all(greedy), any(greedy)
        any_filters = any(p.uses_filters for p in params if not p.greedy)

        def col(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)

        temps = col([p.temperature if p.temperature > 0 else 1.0 for p in params]) if not all_greedy else None
        return cls(
            params=params,
            greedy_N=torch.tensor(greedy, device=device),
            all_greedy=all_greedy,
            any_greedy=any_greedy,
            temperature_N1=temps,
            any_filters=any_filters,
            top_k_N1=col([p.top_k for p in params], torch.long) if any_filters else None,
            top_p_N1=col([p.top_p for p in params]) if any_filters else None,
            min_p_N1=col([p.min_p for p in params]) if any_filters else None,
            any_penalties=any(p.uses_penalties for p in params),
        )


def apply_penalties(logits_NV: torch.Tensor, params: list[SamplingParams], counts_NV: torch.Tensor,
                    seen_NV: torch.Tensor) -> torch.Tensor:
    """Repetition penalty over prompt + output tokens (`seen`), presence and frequency
    penalties over output tokens (`counts`), as vLLM applies them."""
    dev = logits_NV.device
    rep = torch.tensor([p.repetition_penalty for p in params], device=dev).unsqueeze(1)
    pres = torch.tensor([p.presence_penalty for p in params], device=dev).unsqueeze(1)
    freq = torch.tensor([p.frequency_penalty for p in params], device=dev).unsqueeze(1)
    logits = logits_NV.float()
    penalized = torch.where(logits > 0, logits / rep, logits * rep)
    logits = torch.where(seen_NV, penalized, logits)
    return logits - freq * counts_NV - pres * (counts_NV > 0).float()


def filtered_probs(logits_NV: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """The distribution each sampled row draws from: softmax(logits / T) restricted by top-k,
    top-p and min-p (renormalised), in vocabulary order. Greedy rows get a one-hot argmax."""
    if batch.all_greedy:
        return torch.zeros_like(logits_NV, dtype=torch.float32).scatter_(1, logits_NV.argmax(-1, keepdim=True), 1.0)
    logits = logits_NV.float() / batch.temperature_N1
    if batch.any_filters:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        V = probs.shape[-1]
        rank = torch.arange(V, device=probs.device)
        top_k = torch.where(batch.top_k_N1 > 0, batch.top_k_N1, V)
        drop = rank >= top_k
        # top-p keeps the smallest prefix whose mass reaches p (the first token always stays).
        drop |= (probs.cumsum(-1) - probs) >= batch.top_p_N1
        drop |= probs < batch.min_p_N1 * probs[:, :1]
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
        probs = torch.zeros_like(probs).scatter_(1, order, probs)
    else:
        probs = logits.softmax(-1)
    if batch.any_greedy:
        onehot = torch.zeros_like(probs).scatter_(1, logits_NV.argmax(-1, keepdim=True), 1.0)
        probs = torch.where(batch.greedy_N[:, None], onehot, probs)
    return probs


def sample_from_probs(probs_NV: torch.Tensor, uniform_N: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw, one uniform in (0, 1] per row; never picks a zero-probability token."""
    cdf = probs_NV.cumsum(-1)
    target = (uniform_N.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
    idx = torch.searchsorted(cdf, target).squeeze(1)
    return idx.clamp_(max=probs_NV.shape[-1] - 1)


def sample(logits_NV: torch.Tensor, batch: SamplingBatch, uniform_N: torch.Tensor | None) -> torch.Tensor:
    """Token ids [N] (greedy rows take the argmax)."""
    if batch.all_greedy:
        return logits_NV.argmax(-1)
    return sample_from_probs(filtered_probs(logits_NV, batch), uniform_N)


def token_logprobs(logits_NV: torch.Tensor, tokens_N: torch.Tensor,
                   top: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw-distribution log-probabilities: of the chosen tokens [N], and the top `top` [N, top]
    (values, ids)."""
    logp = logits_NV.float().log_softmax(-1)
    chosen = logp.gather(1, tokens_N[:, None]).squeeze(1)
    if top > 0:
        vals, ids = logp.topk(top, dim=-1)
    else:
        vals = ids = logp.new_zeros(logp.shape[0], 0)
    return chosen, vals, ids


class RandomStreams:
    """Uniforms in (0, 1] for the rows of a step: a seeded request draws from its own generator,
    the others from the engine's."""

    def __init__(self, seed: int | None = None):
        self.shared = torch.Generator()
        self.shared.manual_seed(seed if seed is not None else torch.seed())

    def generator_for(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        g = torch.Generator()
        g.manual_seed(seed)
        return g

    def uniforms(self, generators: list[torch.Generator | None], per_row: int = 1) -> torch.Tensor:
        """[N, per_row] uniforms in (0, 1]."""
        u = torch.rand(len(generators), per_row, generator=self.shared)
        for i, g in enumerate(generators):
            if g is not None:
                u[i] = torch.rand(per_row, generator=g)
        return 1.0 - u
