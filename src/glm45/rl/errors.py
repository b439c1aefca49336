"""The one error type of the RL package: bad input or configuration, with a message naming it."""

from __future__ import annotations


class RLError(ValueError):
    """Bad RL input: a malformed sample, group, configuration or checkpoint state."""


class NoLearningSignal(RLError):
    """Every group's rewards were equal after all rollout rounds: GRPO has nothing to learn from."""
