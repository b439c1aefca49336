"""Token-based schedules: hand-computed values of LR, batch size, bias rate and MTP weight."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from glm45.train.schedules import ScheduleConfig, ScheduleConfigError, apply_lr

T = 10**12


def small() -> ScheduleConfig:
    return ScheduleConfig(total_tokens=1000, warmup_tokens=100, peak_lr=1.0, min_lr_ratio=0.1,
                          batch_tokens=64, batch_start_tokens=16, batch_warmup_tokens=100, seq_len=4,
                          bias_rate=1e-3, bias_rate_until_tokens=500, mtp_weight=0.3,
                          mtp_weight_late=0.1, mtp_switch_tokens=700)


def test_lr_warmup_then_cosine_to_ten_percent():
    s = small()
    assert s.lr_at(0) == 0.0
    assert s.lr_at(50) == pytest.approx(0.5)
    assert s.lr_at(100) == pytest.approx(1.0)
    # progress 0.25: 0.1 + 0.9 * 0.5 * (1 + cos(pi/4))
    assert s.lr_at(325) == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))
    assert s.lr_at(550) == pytest.approx(0.55)
    assert s.lr_at(1000) == pytest.approx(0.1)
    assert s.lr_at(5000) == pytest.approx(0.1)
    lrs = [s.lr_at(t) for t in range(100, 1001, 10)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_paper_defaults():
    s = ScheduleConfig(total_tokens=23 * T, warmup_tokens=10**10)
    assert s.lr_at(10**10) == pytest.approx(2.5e-4)
    assert s.lr_at(23 * T) == pytest.approx(2.5e-5)
    assert s.batch_tokens_at(0) == 16 * 2**20
    assert s.batch_tokens_at(250 * 10**9) == 40 * 2**20
    assert s.batch_tokens_at(500 * 10**9) == 64 * 2**20
    assert s.bias_rate_at(15 * T - 1) == 1e-3 and s.bias_rate_at(15 * T) == 0.0
    assert s.mtp_weight_at(0) == 0.3 and s.mtp_weight_at(20 * T) == 0.1


def test_batch_size_ramp_rounds_to_whole_sequences():
    s = small()
    assert s.batch_tokens_at(0) == 16
    assert s.batch_tokens_at(25) == 28  # 16 + 48 * 0.25 = 28 = 7 sequences
    assert s.batch_tokens_at(10) == 20  # 20.8 tokens = 5.2 sequences -> 5
    assert s.batch_tokens_at(10, seq_len=8) == 24  # 2.6 sequences -> 3
    assert s.batch_tokens_at(50) == 40
    assert s.batch_tokens_at(100) == 64 and s.batch_tokens_at(10**6) == 64
    assert s.batch_tokens_at(0, seq_len=100) == 100  # never less than one sequence
    assert all(s.batch_tokens_at(t) % 4 == 0 for t in range(0, 200, 7))


def test_bias_rate_and_mtp_weight_switch_at_their_budgets():
    s = small()
    assert [s.bias_rate_at(t) for t in (0, 499, 500, 900)] == [1e-3, 1e-3, 0.0, 0.0]
    assert [s.mtp_weight_at(t) for t in (0, 699, 700, 900)] == [0.3, 0.3, 0.1, 0.1]


def test_apply_lr_respects_group_ratios():
    a, b = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([dict(params=[a], lr_ratio=1.0), dict(params=[b], lr_ratio=0.4)], lr=1.0)
    apply_lr(opt, small().lr_at(50))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.2])
    plain = torch.optim.SGD([a], lr=1.0)  # groups without lr_ratio take the LR as is
    apply_lr(plain, 0.3)
    assert plain.param_groups[0]["lr"] == 0.3


def test_bad_configs_and_tokens_raise():
    with pytest.raises(ScheduleConfigError, match="warmup_tokens"):
        ScheduleConfig(total_tokens=10, warmup_tokens=20)
    with pytest.raises(ScheduleConfigError, match="batch_start_tokens"):
        ScheduleConfig(total_tokens=10, warmup_tokens=1, batch_tokens=8, batch_start_tokens=16)
    with pytest.raises(ScheduleConfigError, match="tokens seen"):
        small().lr_at(-1)
    with pytest.raises(ScheduleConfigError, match="seq_len"):
        small().batch_tokens_at(0, seq_len=0)
    zero_warmup = ScheduleConfig(total_tokens=10, warmup_tokens=0, peak_lr=1.0)
    assert zero_warmup.lr_at(0) == 1.0
