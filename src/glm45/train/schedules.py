"""Training schedules of GLM-4.5 §2.4, all functions of the number of tokens seen.

* learning rate: linear warm-up 0 -> peak, then cosine decay to `min_lr_ratio` * peak at the
  end of the whole pre+mid-training budget (paper: 2.5e-4 -> 2.5e-5), constant after;
* batch size: tokens per step ramp linearly from `batch_start_tokens` to `batch_tokens` over
  the first `batch_warmup_tokens` (paper: 16M -> 64M over 500B), rounded to whole sequences;
* loss-free balance bias update rate: 0.001, then 0 after `bias_rate_until_tokens` (15T);
* MTP loss weight: 0.3, then 0.1 after `mtp_switch_tokens` (15T).

Counting in tokens (not steps) keeps the schedules fixed while the batch size warms up and
while sequence lengths change between stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class ScheduleConfigError(ValueError):
    """A schedule setting that cannot describe a run."""


@dataclass(frozen=True)
class ScheduleConfig:
    total_tokens: int  # pre + mid-training budget; the cosine ends here
    warmup_tokens: int
    peak_lr: float = 2.5e-4
    min_lr_ratio: float = 0.1
    batch_tokens: int = 64 * 2**20
    batch_start_tokens: int = 16 * 2**20
    batch_warmup_tokens: int = 500 * 10**9
    seq_len: int = 4096  # default rounding unit for batch_tokens_at
    bias_rate: float = 1e-3
    bias_rate_until_tokens: int = 15 * 10**12
    mtp_weight: float = 0.3
    mtp_weight_late: float = 0.1
    mtp_switch_tokens: int = 15 * 10**12

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ScheduleConfigError(f"invalid ScheduleConfig: {msg}")

        need(self.total_tokens > 0, f"total_tokens must be > 0, got {self.total_tokens}")
        need(0 <= self.warmup_tokens <= self.total_tokens,
             f"warmup_tokens ({self.warmup_tokens}) must lie in [0, total_tokens={self.total_tokens}]")
        need(self.peak_lr > 0, f"peak_lr must be > 0, got {self.peak_lr}")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        need(self.seq_len > 0, f"seq_len must be > 0, got {self.seq_len}")
        need(0 < self.batch_start_tokens <= self.batch_tokens,
             f"need 0 < batch_start_tokens ({self.batch_start_tokens}) <= batch_tokens ({self.batch_tokens})")
        need(self.batch_warmup_tokens >= 0, "batch_warmup_tokens must be >= 0")
        need(self.bias_rate >= 0, f"bias_rate must be >= 0, got {self.bias_rate}")

    @property
    def min_lr(self) -> float:
        return self.peak_lr * self.min_lr_ratio

    def lr_at(self, tokens: int) -> float:
        _check_tokens(tokens)
        if tokens < self.warmup_tokens:
            return self.peak_lr * tokens / self.warmup_tokens
        decay_tokens = self.total_tokens - self.warmup_tokens
        progress = 1.0 if decay_tokens == 0 else min(1.0, (tokens - self.warmup_tokens) / decay_tokens)
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def batch_tokens_at(self, tokens: int, seq_len: int | None = None) -> int:
        """Tokens in the next step: the linear ramp rounded to the nearest whole number of
        sequences of `seq_len` (default `self.seq_len`), at least one sequence."""
        _check_tokens(tokens)
        seq_len = self.seq_len if seq_len is None else seq_len
        if seq_len <= 0:
            raise ScheduleConfigError(f"seq_len must be > 0, got {seq_len}")
        if tokens >= self.batch_warmup_tokens:
            target = float(self.batch_tokens)
        else:
            frac = tokens / self.batch_warmup_tokens
            target = self.batch_start_tokens + (self.batch_tokens - self.batch_start_tokens) * frac
        return max(1, round(target / seq_len)) * seq_len

    def bias_rate_at(self, tokens: int) -> float:
        _check_tokens(tokens)
        return self.bias_rate if tokens < self.bias_rate_until_tokens else 0.0

    def mtp_weight_at(self, tokens: int) -> float:
        _check_tokens(tokens)
        return self.mtp_weight if tokens < self.mtp_switch_tokens else self.mtp_weight_late


def _check_tokens(tokens: int) -> None:
    if tokens < 0:
        raise ScheduleConfigError(f"tokens seen must be >= 0, got {tokens}")


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set each param group's LR to `lr` times its `lr_ratio` (1 when absent), e.g. an AdamW
    group built with its own peak LR by glm45.train.optim.build_optimizer."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_ratio", 1.0)
