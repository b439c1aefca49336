"""What to do with responses cut off at the length limit (status TRUNCATED).

A truncated response usually has no final answer, so its reward says little about its reasoning.
Modes:
- "mask": keep its reward in the group statistics, but take its tokens out of the loss (the
  policy is neither pushed towards nor away from an unfinished line of thought);
- "penalty": subtract `penalty` from its reward (apply before computing advantages), so running
  out of room is discouraged;
- "keep": treat it like any other sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from glm45.rl.errors import RLError
from glm45.rl.sample import Sample, Status

__all__ = ["OverlongConfig", "apply_overlong"]

MODES = ("mask", "penalty", "keep")


@dataclass
class OverlongConfig:
    mode: str = "mask"
    penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RLError(f"overlong mode must be one of {MODES}, got {self.mode!r}")
        if self.penalty < 0:
            raise RLError(f"overlong penalty must be >= 0 (it is subtracted), got {self.penalty}")


def apply_overlong(samples: Iterable[Sample], cfg: OverlongConfig | None = None) -> int:
    """Apply the policy to the truncated samples in place (once: a sample already handled is
    marked in its metadata and left alone); returns how many samples it changed."""
    cfg = cfg or OverlongConfig()
    n = 0
    for s in samples:
        if s.status is not Status.TRUNCATED or "overlong" in s.metadata:
            continue
        n += 1
        if cfg.mode == "mask":
            s.loss_mask = [0] * len(s.response_ids)
        elif cfg.mode == "penalty":
            if s.reward is None:
                raise RLError(f"sample (group {s.group_id}, index {s.index}) is truncated but has no reward to penalise")
            s.reward -= cfg.penalty
        s.metadata["overlong"] = cfg.mode
    return n
