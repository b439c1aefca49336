"""Loss-free balance bias update, max violation, sequence-level balance loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glm45.model.moe import expert_counts
from glm45.train.balance import (
    BalanceInputError,
    max_violation,
    router_bias_buffers,
    sequence_balance_loss,
    update_balance_bias,
)


def test_bias_update_hand_computed():
    biases = [torch.zeros(4), torch.full((4,), 0.5)]
    loads = torch.tensor([[10.0, 2.0, 4.0, 4.0],  # mean 5
                          [3.0, 3.0, 3.0, 3.0]])  # balanced: sign 0, no change
    update_balance_bias(biases, loads, rate=0.01)
    torch.testing.assert_close(biases[0], torch.tensor([-0.01, 0.01, 0.01, 0.01]))
    torch.testing.assert_close(biases[1], torch.full((4,), 0.5))
    update_balance_bias(biases, loads, rate=0.0)
    torch.testing.assert_close(biases[0], torch.tensor([-0.01, 0.01, 0.01, 0.01]))


def test_max_violation_hand_computed():
    loads = torch.tensor([[10, 2, 4, 4], [3, 3, 3, 3], [0, 0, 0, 0]])
    torch.testing.assert_close(max_violation(loads), torch.tensor([1.0, 0.0, 0.0]))


def test_bad_shapes_raise():
    with pytest.raises(BalanceInputError, match="loads must be"):
        update_balance_bias([torch.zeros(4)], torch.zeros(2, 4), 0.001)
    with pytest.raises(BalanceInputError, match="bias 0"):
        update_balance_bias([torch.zeros(3)], torch.zeros(1, 4), 0.001)
    with pytest.raises(BalanceInputError, match="topk_idx"):
        sequence_balance_loss(torch.rand(2, 3, 4), torch.zeros(2, 3, 1, dtype=torch.long), 4, 2)
    with pytest.raises(BalanceInputError, match="scores"):
        sequence_balance_loss(torch.rand(2, 3, 5), torch.zeros(2, 3, 2, dtype=torch.long), 4, 2)


class _Gate(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.register_buffer("e_score_correction_bias", torch.full((4,), value))


def test_router_bias_buffers_orders_layers_numerically():
    root = nn.Module()
    root.model = nn.Module()
    root.model.layers = nn.ModuleList()
    for i in range(12):
        layer = nn.Module()
        layer.mlp = nn.Module()
        if i > 0:  # layer 0 is dense: no router
            layer.mlp.gate = _Gate(float(i))
        root.model.layers.append(layer)
    root.mtp = nn.Module()
    root.mtp.mlp = nn.Module()
    root.mtp.mlp.gate = _Gate(99.0)
    found = router_bias_buffers(root)
    names = list(found)
    assert names[0] == "model.layers.1.mlp.gate.e_score_correction_bias"
    assert names[9] == "model.layers.10.mlp.gate.e_score_correction_bias"
    assert names[-1] == "mtp.mlp.gate.e_score_correction_bias"
    assert [b[0].item() for b in found.values()] == [float(i) for i in range(1, 12)] + [99.0]
    update_balance_bias(list(found.values()), torch.tensor([[1.0, 0, 0, 0]] * 12), 0.5)
    assert root.model.layers[3].mlp.gate.e_score_correction_bias.tolist() == [2.5, 3.5, 3.5, 3.5]


def test_sequence_balance_loss_hand_computed():
    # One sequence, T=2, E=4, K=1. Scores normalise to [.4,.4,.1,.1] and [.25,.25,.25,.25].
    scores = torch.tensor([[[0.8, 0.8, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5]]], requires_grad=True)
    idx = torch.tensor([[[0], [0]]])
    # f = E/(K*T) * counts = 2 * [2,0,0,0] = [4,0,0,0]; P_0 = (0.4 + 0.25) / 2 = 0.325
    loss = sequence_balance_loss(scores, idx, n_experts=4, top_k=1)
    assert loss.item() == pytest.approx(4 * 0.325)
    loss.backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_sequence_balance_loss_mask_and_mean_over_sequences():
    scores = torch.tensor([[[0.8, 0.8, 0.2, 0.2], [float("nan")] * 4],
                           [[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]], requires_grad=True)
    idx = torch.tensor([[[0], [3]], [[1], [2]]])
    mask = torch.tensor([[True, False], [True, True]])
    # seq 0: T=1, f=[4,0,0,0], P_0=0.4 -> 1.6. seq 1: f=[0,2,2,0], P=.25 each -> 1.0.
    loss = sequence_balance_loss(scores, idx, 4, 1, mask_BT=mask)
    assert loss.item() == pytest.approx((1.6 + 1.0) / 2)
    loss.backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[0, 1].abs().sum() == 0
    # A perfectly uniform router gives the minimum, 1.
    uniform = sequence_balance_loss(torch.full((1, 4, 4), 0.3), torch.tensor([[[0, 1], [2, 3], [0, 1], [2, 3]]]), 4, 2)
    assert uniform.item() == pytest.approx(1.0)


def _simulate(rate: float, steps: int = 300) -> tuple[float, float]:
    """Fixed token features and a router skewed toward 3 of 16 experts; top-2 by score + bias."""
    g = torch.Generator().manual_seed(0)
    n_tokens, dim, n_experts, top_k = 2048, 16, 16, 2
    x_ND = torch.randn(n_tokens, dim, generator=g)
    w_ED = torch.randn(n_experts, dim, generator=g) / dim**0.5
    skew_E = torch.zeros(n_experts)
    skew_E[:3] = 1.5
    scores_NE = torch.sigmoid(x_ND @ w_ED.T + skew_E)
    bias_E = torch.zeros(n_experts)
    first = last = 0.0
    for step in range(steps):
        idx_NK = (scores_NE + bias_E).topk(top_k, dim=-1).indices
        loads_1E = expert_counts(idx_NK, n_experts).float().unsqueeze(0)
        violation = max_violation(loads_1E).item()
        first = violation if step == 0 else first
        last = violation
        update_balance_bias([bias_E], loads_1E, rate)
    return first, last


def test_loss_free_balance_reduces_max_violation():
    first, last = _simulate(rate=1e-3)
    assert first > 1.5  # the skewed router starts badly imbalanced
    assert last < 0.25 * first
    first0, last0 = _simulate(rate=0.0)
    assert first0 == pytest.approx(first) and last0 == pytest.approx(first0)
