"""Dynamic sampling: train only on groups that carry a learning signal, over-sampling to refill.

A group whose rewards are all equal (all solved or all failed) has zero advantage everywhere and
contributes no gradient (paper §3.2, §3.5). `collect_groups` pulls groups from a (lazy) generator
of rollouts, drops those the `keep` test rejects, and stops once the batch is full, reporting
how many were generated and dropped. `prompts_to_request` sizes the next request to the engine
from the keep rate seen so far, so a batched (synchronous) rollout rarely needs a second round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from glm45.rl.errors import RLError
from glm45.rl.filters import has_reward_variance
from glm45.rl.sample import Sample

__all__ = ["DynamicSamplingReport", "collect_groups", "prompts_to_request"]


@dataclass
class DynamicSamplingReport:
    groups_seen: int = 0
    groups_kept: int = 0
    groups_dropped: int = 0
    samples_generated: int = 0
    exhausted: bool = False  # the generator ended (or max_groups_seen was hit) before the batch filled

    @property
    def keep_rate(self) -> float:
        return self.groups_kept / self.groups_seen if self.groups_seen else 1.0

    def as_dict(self) -> dict[str, float]:
        return {"groups_seen": self.groups_seen, "groups_kept": self.groups_kept,
                "groups_dropped": self.groups_dropped, "samples_generated": self.samples_generated,
                "keep_rate": self.keep_rate, "exhausted": float(self.exhausted)}


def collect_groups(groups: Iterable[Sequence[Sample]], num_groups: int, *,
                   keep: Callable[[Sequence[Sample]], bool] = has_reward_variance,
                   max_groups_seen: int | None = None) -> tuple[list[list[Sample]], DynamicSamplingReport]:
    """Take groups from `groups` until `num_groups` pass `keep` (the batch is full).

    The generator is consumed only as far as needed. `max_groups_seen` bounds the work when
    almost nothing passes (e.g. the policy already solves every prompt); the report then says
    `exhausted` and the batch is short.
    """
    if num_groups < 0:
        raise RLError(f"num_groups must be >= 0, got {num_groups}")
    if max_groups_seen is not None and max_groups_seen < num_groups:
        raise RLError(f"max_groups_seen ({max_groups_seen}) is smaller than the batch ({num_groups} groups)")
    report = DynamicSamplingReport()
    batch: list[list[Sample]] = []
    if num_groups == 0:
        return batch, report
    for group in groups:
        group = list(group)
        report.groups_seen += 1
        report.samples_generated += len(group)
        if keep(group):
            batch.append(group)
            report.groups_kept += 1
            if len(batch) == num_groups:
                return batch, report
        else:
            report.groups_dropped += 1
        if max_groups_seen is not None and report.groups_seen >= max_groups_seen:
            break
    report.exhausted = True
    return batch, report


def prompts_to_request(needed: int, keep_rate: float | None, *, min_keep_rate: float = 0.1,
                       max_factor: float = 4.0) -> int:
    """How many prompts to roll out to end up with about `needed` kept groups, given the keep
    rate observed so far (None: no history, ask for exactly `needed`)."""
    if needed < 0:
        raise RLError(f"needed must be >= 0, got {needed}")
    if not 0 < min_keep_rate <= 1 or max_factor < 1:
        raise RLError("min_keep_rate must lie in (0, 1] and max_factor be >= 1")
    if keep_rate is None or needed == 0:
        return needed
    factor = min(1.0 / max(keep_rate, min_keep_rate), max_factor)
    return math.ceil(needed * factor)
