"""MTP speculative decoding: verify one drafted token per row in the forward that also
produces the next token.

Shape legend: B rows, V vocabulary.

Each decode forward feeds [last token, draft] per row. Position 0's distribution p0 yields
the next token; position 1's, p1, yields the token after the draft, valid only if the draft
is accepted. Greedy: accept iff argmax p0 == draft (so the output equals plain greedy).
Sampling (Leviathan et al. / Chen et al.): accept with probability min(1, p0(d) / q(d)) where q
is the draft distribution; on rejection draw from normalise(max(0, p0 - q)). The accepted-or-
resampled token is distributed exactly as p0, so output distributions are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glm45.infer.sampling import SamplingBatch, filtered_probs, sample_from_probs


@dataclass
class Verdict:
    accept_B: torch.Tensor  # bool: the draft was accepted
    first_B: torch.Tensor  # the next token (the draft itself when accepted)
    second_B: torch.Tensor  # the token after the draft (meaningful only when accepted)


def verify_greedy(logits_B2V: torch.Tensor, draft_B: torch.Tensor) -> Verdict:
    best_B2 = logits_B2V.argmax(-1)
    return Verdict(best_B2[:, 0] == draft_B, best_B2[:, 0], best_B2[:, 1])


def verify_sampled(logits0_BV: torch.Tensor, logits1_BV: torch.Tensor, draft_B: torch.Tensor,
                   q_BV: torch.Tensor, batch: SamplingBatch, uniform_B3: torch.Tensor) -> Verdict:
    """`logits0/1` already penalised; `q` the distribution the draft was drawn from (one-hot for
    greedy rows, which makes this rule reduce to the greedy one for them)."""
    u = uniform_B3.to(logits0_BV.device)
    p0 = filtered_probs(logits0_BV, batch)
    p1 = filtered_probs(logits1_BV, batch)
    d = draft_B[:, None]
    p_d, q_d = p0.gather(1, d).squeeze(1), q_BV.gather(1, d).squeeze(1)
    accept = u[:, 0] * q_d <= p_d  # u in (0, 1]: probability min(1, p/q)
    residual = (p0 - q_BV).clamp_(min=0)
    empty = residual.sum(-1, keepdim=True) <= 0  # p0 == q: rejection is impossible anyway
    residual = torch.where(empty, p0, residual)
    first = torch.where(accept, draft_B, sample_from_probs(residual, u[:, 1]))
    return Verdict(accept, first, sample_from_probs(p1, u[:, 2]))


def draft_distribution(mtp_logits_BV: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """q: the MTP logits through the rows' own temperature and filters (any q keeps the output
    distribution exact; matching the target's processing makes acceptance likely)."""
    return filtered_probs(mtp_logits_BV, batch)
