"""Group filters: callables over one prompt's group of samples, True = keep the group.

The buffer runs its filters on every group it receives and counts, per filter, how many groups
each one dropped (by the filter's `__name__`). Write your own as any `Callable[[list[Sample]], bool]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from glm45.rl.sample import Sample, Status

__all__ = ["GroupFilter", "all_rewarded", "has_reward_variance", "max_staleness", "no_failed"]

GroupFilter = Callable[[Sequence[Sample]], bool]


def has_reward_variance(group: Sequence[Sample], tol: float = 1e-9) -> bool:
    """Dynamic sampling's filter: a group whose rewards are all equal gives every sample a zero
    advantage, hence no gradient, so it is dropped (the all-0 and all-1 groups of the paper)."""
    rewards = [s.reward for s in group]
    if any(r is None for r in rewards):
        return False
    return max(rewards) - min(rewards) > tol


def all_rewarded(group: Sequence[Sample]) -> bool:
    """Every sample has a reward."""
    return all(s.reward is not None for s in group)


def no_failed(group: Sequence[Sample]) -> bool:
    """No sample broke or was aborted (such groups are re-rolled rather than trained on)."""
    return all(s.status not in (Status.FAILED, Status.ABORTED) for s in group)


def max_staleness(current_version: Callable[[], int], limit: int) -> GroupFilter:
    """Keep groups generated at most `limit` weight updates before `current_version()`."""

    def fresh_enough(group: Sequence[Sample]) -> bool:
        now = current_version()
        return all(s.staleness(now) <= limit for s in group)

    fresh_enough.__name__ = f"max_staleness_{limit}"
    return fresh_enough
