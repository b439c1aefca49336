"""Dynamic sampling temperature (paper §3.2).

As the policy sharpens, a fixed temperature explores less and less. When the mean rollout reward
plateaus, the held-out performance is measured at each candidate temperature (a callable you
supply: `evaluate(temperature) -> score`, higher is better) and the next phase samples at the
highest temperature whose score is within `tolerance` of the best one — as much diversity as the
quality budget allows. `tolerance` is relative to the best score by default (1% of it); set
`relative=False` for an absolute margin (e.g. one accuracy point as 0.01).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glm45.rl.errors import RLError
from glm45.rl.plateau import PlateauDetector

__all__ = ["DynamicTemperature", "TemperatureConfig", "select_temperature"]


def select_temperature(scores: Mapping[float, float], tolerance: float = 0.01, relative: bool = True) -> float:
    """The highest temperature whose score is at least best - tolerance (x |best| if relative)."""
    if not scores:
        raise RLError("no temperatures were evaluated")
    if tolerance < 0:
        raise RLError(f"tolerance must be >= 0, got {tolerance}")
    bad = {t: s for t, s in scores.items() if not math.isfinite(s)}
    if bad:
        raise RLError(f"held-out scores must be finite numbers, got {bad}")
    best = max(scores.values())
    floor = best - (tolerance * abs(best) if relative else tolerance)
    return max(t for t, s in scores.items() if s >= floor - 1e-12)


@dataclass
class TemperatureConfig:
    initial: float = 1.0
    candidates: Sequence[float] = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
    tolerance: float = 0.01
    relative: bool = True
    window: int = 10  # training steps per half of the plateau comparison
    min_delta: float = 0.01  # mean reward change below which it has plateaued

    def __post_init__(self) -> None:
        self.candidates = tuple(float(t) for t in self.candidates)
        if not self.candidates or any(not t > 0 for t in self.candidates):
            raise RLError(f"temperature candidates must be positive numbers, got {self.candidates}")
        if not self.initial > 0:
            raise RLError(f"the initial temperature must be > 0, got {self.initial}")
        if self.tolerance < 0:
            raise RLError(f"tolerance must be >= 0, got {self.tolerance}")


class DynamicTemperature:
    def __init__(self, cfg: TemperatureConfig, evaluate: Callable[[float], float]) -> None:
        self.cfg = cfg
        self.evaluate = evaluate
        self.temperature = cfg.initial
        self.plateau = PlateauDetector(cfg.window, cfg.min_delta)
        self.history: list[dict[str, Any]] = []  # one entry per re-selection
        self.step = 0

    def update(self, mean_reward: float) -> bool:
        """Record a training step's mean reward; on a plateau, re-select the temperature.
        Returns whether a re-selection happened (the temperature may stay the same)."""
        self.step += 1
        if not self.plateau.update(mean_reward):
            return False
        self.reselect()
        self.plateau.reset()
        return True

    def reselect(self) -> float:
        """Evaluate every candidate on the held-out set and adopt the chosen temperature."""
        scores = {}
        for t in self.cfg.candidates:
            score = self.evaluate(t)
            if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
                raise RLError(f"evaluate({t}) must return a finite number, got {score!r}")
            scores[t] = float(score)
        chosen = select_temperature(scores, self.cfg.tolerance, self.cfg.relative)
        self.history.append({"step": self.step, "previous": self.temperature, "chosen": chosen,
                             "scores": [[t, s] for t, s in scores.items()]})
        self.temperature = chosen
        return chosen

    def state_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "step": self.step, "plateau": self.plateau.state_dict(),
                "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.temperature = float(state["temperature"])
        self.step = int(state["step"])
        self.plateau.load_state_dict(state["plateau"])
        self.history = [dict(h) for h in state["history"]]
