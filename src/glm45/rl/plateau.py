"""Detect when a noisy training signal (the mean rollout reward) has stopped moving.

The mean of the last `window` values is compared with the mean of the `window` before them; the
signal has plateaued when they differ by less than `min_delta`. Used by the dynamic temperature
(raise it when reward stabilises) and the curriculum (switch stage when the moderate pool's reward
saturates).
"""

from __future__ import annotations

import math
from typing import Any

from glm45.rl.errors import RLError

__all__ = ["PlateauDetector"]


class PlateauDetector:
    def __init__(self, window: int = 10, min_delta: float = 0.01) -> None:
        if window < 1:
            raise RLError(f"plateau window must be >= 1, got {window}")
        if min_delta < 0:
            raise RLError(f"plateau min_delta must be >= 0, got {min_delta}")
        self.window = window
        self.min_delta = min_delta
        self.history: list[float] = []

    def update(self, value: float) -> bool:
        """Record one value; True when the signal has plateaued."""
        if not math.isfinite(value):
            raise RLError(f"plateau detector got a non-finite value {value}")
        self.history.append(float(value))
        del self.history[:-2 * self.window]
        return self.plateaued

    @property
    def plateaued(self) -> bool:
        if len(self.history) < 2 * self.window:
            return False
        before = sum(self.history[:self.window]) / self.window
        after = sum(self.history[self.window:]) / self.window
        return abs(after - before) < self.min_delta

    def reset(self) -> None:
        """Forget the history (after acting on a plateau, measure the new regime afresh)."""
        self.history.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [float(v) for v in state["history"]]
