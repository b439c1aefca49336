"""The fused chunked output head + cross-entropy, alone and inside the model's forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glm45.model import GLM45ForCausalLM
from glm45.model import linear_ce
from glm45.model.linear_ce import IGNORE_INDEX, linear_cross_entropy
from glm45.train.loss import mtp_labels
from helpers_model import randomize, tiny_config


def _inputs(N=300, D=32, V=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g, requires_grad=True)
    w = (0.3 * torch.randn(V, D, generator=g)).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = IGNORE_INDEX
    return h, w, t


def _plain(h, w, t):
    return F.cross_entropy((h @ w.T).float(), t, ignore_index=IGNORE_INDEX, reduction="sum")


def _grads(loss_fn, h, w, t, scale=0.37):
    h.grad = w.grad = None
    loss = loss_fn(h, w, t)
    (scale * loss).backward()
    return loss.detach(), h.grad.clone(), w.grad.clone()


def _softmax_rows(monkeypatch, rows, vocab):
    """Make the in-chunk fp32 softmax run `rows` rows at a time (None: the default)."""
    if rows is not None:
        monkeypatch.setattr(linear_ce, "SUB_ELEMENTS", rows * vocab)


@pytest.mark.parametrize("sub_rows", [None, 7])
@pytest.mark.parametrize("chunk_rows", [None, 1, 64, 299, 1000])
def test_equals_cross_entropy_of_the_logits_and_its_gradients_in_fp32(chunk_rows, sub_rows, monkeypatch):
    h, w, t = _inputs()
    _softmax_rows(monkeypatch, sub_rows, w.shape[0])
    ours = _grads(lambda *a: linear_cross_entropy(*a, chunk_rows=chunk_rows), h, w, t)
    ref = _grads(_plain, h, w, t)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sub_rows", [None, 7])
def test_under_bf16_autocast_it_matches_the_autocast_linear_to_bf16_rounding(sub_rows, monkeypatch):
    h, w, t = _inputs(N=512, D=64, V=1000)
    _softmax_rows(monkeypatch, sub_rows, w.shape[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _grads(lambda *a: linear_cross_entropy(*a, chunk_rows=200), h, w, t)
        ref = _grads(lambda h, w, t: F.cross_entropy(F.linear(h, w).float(), t, reduction="sum"), h, w, t)
    assert ours[1].dtype == h.dtype and ours[2].dtype == w.dtype == torch.float32
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-3, atol=0.0)
    for a, b in zip(ours[1:], ref[1:]):
        assert (a - b).norm() / b.norm() < 2e-2


def test_a_target_far_below_the_top_logit_keeps_its_finite_loss():
    # its probability underflows fp32 (exp(-300)): the loss must still be ~300, not inf
    h = torch.zeros(3, 2, requires_grad=True)
    w = torch.tensor([[150.0, 0.0], [-150.0, 0.0], [0.0, 1.0]], requires_grad=True)
    with torch.no_grad():
        h[:, 0] = 1.0
    t = torch.tensor([1, 0, 2])
    ours = _grads(linear_cross_entropy, h, w, t)
    ref = _grads(_plain, h, w, t)
    assert 300 < ours[0] < 600 and torch.isfinite(ours[1]).all() and torch.isfinite(ours[2]).all()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-4)


def test_ignored_rows_get_no_gradient_and_a_frozen_side_gets_none():
    h, w, t = _inputs()
    t[:] = IGNORE_INDEX
    t[7] = 3
    _, gh, gw = _grads(linear_cross_entropy, h, w, t)
    assert gh[7].abs().sum() > 0 and gh[torch.arange(len(t)) != 7].abs().sum() == 0
    w_frozen = w.detach()
    h.grad = None
    linear_cross_entropy(h, w_frozen, t).backward()
    assert h.grad is not None and w_frozen.grad is None
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t), _plain(h, w, t))


def test_no_rows_give_a_zero_loss_and_zero_gradients():
    h, w, _ = _inputs(N=0)
    loss = linear_cross_entropy(h, w, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and w.grad.shape == w.shape and not w.grad.any()


def test_bad_shapes_are_named():
    h, w, t = _inputs()
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(h, w[:, :5], t)
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(h, w, t[:-1])


def test_model_forward_with_targets_sums_the_lm_and_mtp_cross_entropies_of_its_logits():
    model = randomize(GLM45ForCausalLM(tiny_config(num_nextn_predict_layers=1)), seed=1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=g)
    targets = torch.randint(0, model.config.vocab_size, (2, 12), generator=g)
    targets[1, :4] = IGNORE_INDEX
    mtp_t = mtp_labels(targets)

    def fused():
        out = model(ids, return_mtp=True, targets=targets, mtp_targets=mtp_t)
        assert out.logits is None and out.mtp_logits is None
        return out.loss_sum, out.mtp_loss_sum

    def plain():
        out = model(ids, return_mtp=True)
        V = out.logits.shape[-1]
        return (F.cross_entropy(out.logits.reshape(-1, V), targets.flatten(), reduction="sum"),
                F.cross_entropy(out.mtp_logits.reshape(-1, V), mtp_t.flatten(), reduction="sum"))

    results = []
    for fn in (fused, plain):
        model.zero_grad(set_to_none=True)
        lm, mtp = fn()
        (lm + 0.3 * mtp).backward()
        results.append((lm.detach(), mtp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                    if p.grad is not None}))
    (lm_a, mtp_a, grads_a), (lm_b, mtp_b, grads_b) = results
    torch.testing.assert_close(lm_a, lm_b)
    torch.testing.assert_close(mtp_a, mtp_b)
    assert grads_a.keys() == grads_b.keys() and "mtp.shared_head.head.weight" in grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_model_rejects_misshaped_targets_and_mtp_targets_without_the_mtp_pass():
    model = GLM45ForCausalLM(tiny_config(num_nextn_predict_layers=1))
    ids = torch.randint(0, 100, (2, 6))
    with pytest.raises(ValueError, match="targets must be"):
        model(ids, targets=ids[:, :5])
    with pytest.raises(ValueError, match="return_mtp"):
        model(ids, mtp_targets=ids)
