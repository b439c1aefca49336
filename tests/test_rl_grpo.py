"""GRPO: advantages and the clipped loss checked against numbers worked out by hand, and the
log-probabilities of response tokens against a plain log-softmax of the model's logits."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from glm45.rl import (GRPOConfig, RLError, Sample, assign_advantages, collate, group_advantages, grpo_loss,
                      policy_loss, response_logprobs)
from helpers_model import randomize, tiny_config

# ---- the hand-worked example -------------------------------------------------------------------
#
# Two groups of two samples (eps_low 0.2, eps_high 0.28: trust region [0.8, 1.28]).
#   group 0: rewards 1.0, 0.0 -> mean 0.5 -> advantages +0.5, -0.5
#   group 1: rewards 0.2, 1.0 -> mean 0.6 -> advantages -0.4, +0.4
# Importance ratios per response token, and l = -min(r*A, clip(r)*A):
#   a1 (A=+0.5): r = 1.0, 1.5, 0.7 -> -0.5, -min(0.75, 0.64) = -0.64 [clipped high], -min(0.35, 0.40) = -0.35
#   a2 (A=-0.5): r = 0.5           -> -min(-0.25, -0.40) = +0.40 [clipped low]
#   b1 (A=-0.4): r = 1.2, 2.0      -> +0.48, -min(-0.8, -0.512) = +0.80 (a high ratio is not capped for A<0)
#   b2 (A=+0.4): r = 1.1, 0.9, [masked env token, r=100], 1.25 -> -0.44, -0.36, -0.50
# token mean    = (-1.49 + 0.40 + 1.28 - 1.30) / 9 tokens = -1.11 / 9
# sequence mean = (-1.49/3 + 0.40/1 + 1.28/2 - 1.30/3) / 4 = 0.11 / 4 = 0.0275
# clipped tokens: a1's second (high) and a2's (low): 2 of 9.
RATIOS = [[1.0, 1.5, 0.7, 1.0], [0.5, 1.0, 1.0, 1.0], [1.2, 2.0, 1.0, 1.0], [1.1, 0.9, 100.0, 1.25]]
MASK = [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 1]]
ADV = [0.5, -0.5, -0.4, 0.4]


def _example(requires_grad: bool = False):
    old = -0.3 - 0.1 * torch.arange(16, dtype=torch.float32).view(4, 4)
    new = (old + torch.log(torch.tensor(RATIOS))).detach().requires_grad_(requires_grad)
    return new, old, torch.tensor(ADV), torch.tensor(MASK)


def test_advantages_by_hand():
    samples = [Sample([1], [2], reward=r, group_id=g, index=i)
               for g, i, r in [(0, 0, 1.0), (0, 1, 0.0), (1, 0, 0.2), (1, 1, 1.0)]]
    assert assign_advantages(samples) == pytest.approx(ADV)
    assert [s.advantage for s in samples] == pytest.approx(ADV)
    # Divided by the (Bessel) std: two samples always give +-1/sqrt(2).
    scaled = assign_advantages(samples, GRPOConfig(scale_by_std=True))
    assert scaled == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2), -1 / math.sqrt(2), 1 / math.sqrt(2)], abs=1e-5)
    # All-equal rewards and one-sample groups carry no signal.
    assert group_advantages([0.7, 0.7, 0.7], scale_by_std=True).tolist() == pytest.approx([0.0] * 3, abs=1e-7)
    assert group_advantages([3.0], scale_by_std=True).tolist() == [0.0]
    assert group_advantages([[1.0, 0.0, 0.0, 1.0], [2.0, 0.0, 1.0, 1.0]]).tolist() == [[0.5, -0.5, -0.5, 0.5],
                                                                                    [1.0, -1.0, 0.0, 0.0]]
    with pytest.raises(RLError, match="no reward"):
        assign_advantages([Sample([1], [2], group_id=0)])


def test_token_mean_loss_by_hand():
    new, old, adv, mask = _example()
    loss, stats = grpo_loss(new, old, adv, mask, GRPOConfig())
    assert loss.item() == pytest.approx(-1.11 / 9, abs=1e-6)
    assert stats["tokens"] == 9 and stats["sequences"] == 4
    assert stats["clip_frac"] == pytest.approx(2 / 9)
    assert stats["clip_frac_high"] == pytest.approx(1 / 9) and stats["clip_frac_low"] == pytest.approx(1 / 9)
    ratios = [r for row, m in zip(RATIOS, MASK) for r, k in zip(row, m) if k]
    assert stats["approx_kl"] == pytest.approx(sum(r - 1 - math.log(r) for r in ratios) / 9, rel=1e-5)
    assert stats["ratio_max"] == pytest.approx(2.0)


def test_sequence_mean_differs_from_token_mean():
    new, old, adv, mask = _example()
    loss, _ = grpo_loss(new, old, adv, mask, GRPOConfig(loss_agg="seq_mean"))
    assert loss.item() == pytest.approx(0.11 / 4, abs=1e-6)  # opposite sign to the token mean here


def test_gradients_by_hand():
    new, old, adv, mask = _example(requires_grad=True)
    loss, _ = grpo_loss(new, old, adv, mask)
    loss.backward()
    # dl/dlogp = -A * r / N where the unclipped term is taken, 0 where the clipped one is (and off the mask).
    expected = torch.zeros(4, 4)
    for b in range(4):
        for t in range(4):
            r, a = RATIOS[b][t], ADV[b]
            clipped = (a > 0 and r > 1.28) or (a < 0 and r < 0.8)
            if MASK[b][t] and not clipped:
                expected[b, t] = -a * r / 9
    torch.testing.assert_close(new.grad, expected, atol=1e-6, rtol=1e-5)
    assert new.grad[0, 1] == 0 and new.grad[1, 0] == 0  # the two clipped tokens
    assert new.grad[3, 2] == 0  # the masked environment token, whatever its ratio


def test_global_normalisers_for_micro_batches():
    new, old, adv, mask = _example()
    full, _ = grpo_loss(new, old, adv, mask)
    halves = [grpo_loss(new[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], num_tokens=9)[0] for i in (0, 2)]
    assert (halves[0] + halves[1]).item() == pytest.approx(full.item(), abs=1e-6)
    seq = GRPOConfig(loss_agg="seq_mean")
    halves = [grpo_loss(new[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], seq, num_sequences=4)[0] for i in (0, 2)]
    assert (halves[0] + halves[1]).item() == pytest.approx(0.0275, abs=1e-6)


def test_on_policy_loss_is_minus_token_weighted_advantage_and_entropy_is_logged():
    new, _, adv, mask = _example()
    logits = torch.zeros(4, 4, 8)  # uniform over 8 tokens: entropy log 8
    loss, stats = grpo_loss(new, new.clone(), adv, mask, logits=logits)
    lengths = mask.sum(-1).float()
    assert loss.item() == pytest.approx(-(adv * lengths).sum().item() / 9, abs=1e-6)
    assert stats["clip_frac"] == 0 and stats["approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert stats["entropy"] == pytest.approx(math.log(8), rel=1e-5)


def test_kl_penalty_against_the_reference_is_k3_per_token_and_pulls_toward_it():
    new, old, adv, mask = _example(requires_grad=True)
    ref = new.detach() + 0.3 * torch.arange(4, dtype=torch.float32)  # log ref/new = 0, .3, .6, .9 by column
    cfg = GRPOConfig(kl_coef=0.5)
    plain, _ = grpo_loss(new, old, adv, mask)
    loss, stats = grpo_loss(new, old, adv, mask, cfg, ref_logprobs=ref)
    d = (ref - new.detach())[mask.bool()]
    k3 = (torch.exp(d) - d - 1).sum() / 9
    assert stats["kl_ref"] == pytest.approx((k3).item(), rel=1e-5) and stats["kl_ref"] > 0
    assert loss.item() == pytest.approx(plain.item() + 0.5 * k3.item(), rel=1e-5)
    # d/dlogp of the penalty is -(exp(ref - logp) - 1) <= 0: descent raises logp toward the reference
    (g_plain,) = torch.autograd.grad(plain, new)
    (g_kl,) = torch.autograd.grad(loss, new)
    pen = (g_kl - g_plain)[mask.bool()]
    expected = -0.5 * (torch.exp(d) - 1) / 9
    torch.testing.assert_close(pen, expected, rtol=1e-5, atol=1e-7)
    # at the reference itself the penalty and its gradient vanish
    same, st = grpo_loss(new, old, adv, mask, cfg, ref_logprobs=new.detach())
    assert same.item() == pytest.approx(plain.item(), abs=1e-7) and st["kl_ref"] == 0


def test_loss_input_errors():
    new, old, adv, mask = _example()
    with pytest.raises(RLError, match="shape"):
        grpo_loss(new, old[:, :3], adv, mask)
    with pytest.raises(RLError, match="advantages"):
        grpo_loss(new, old, adv[:3], mask)
    with pytest.raises(RLError, match="loss_agg"):
        GRPOConfig(loss_agg="sum")
    with pytest.raises(RLError, match="eps_low"):
        GRPOConfig(eps_low=1.5)
    with pytest.raises(RLError, match="kl_coef"):
        GRPOConfig(kl_coef=-0.1)
    with pytest.raises(RLError, match="ref_logprobs"):
        grpo_loss(new, old, adv, mask, GRPOConfig(kl_coef=0.1))


# ---- log-probabilities from the model --------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from glm45.model import GLM45ForCausalLM

    torch.manual_seed(0)
    return randomize(GLM45ForCausalLM(tiny_config()), seed=1)


def _reference_logprobs(logits, ids, mask):
    lp = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    out = torch.zeros(ids.shape)
    out[:, 1:] = lp
    return out * mask


def test_response_logprobs_match_log_softmax(model):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=g)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 4:9] = True
    mask[1, 2:10] = True
    mask[1, 5] = False  # an environment token inside the response
    with torch.no_grad():
        ref = _reference_logprobs(model(ids).logits, ids, mask)
        got, entropy = response_logprobs(model, ids, mask, return_entropy=True)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(response_logprobs(model, ids, mask, head_on_selected=False), ref,
                                   atol=1e-5, rtol=1e-5)
    assert (got[~mask] == 0).all() and (got[mask] < 0).all()
    assert (entropy[mask] > 0).all() and (entropy[~mask] == 0).all()
    # Temperature divides the logits before the softmax.
    with torch.no_grad():
        hot = response_logprobs(model, ids, mask, temperature=2.0)
        torch.testing.assert_close(hot, _reference_logprobs(model(ids).logits / 2.0, ids, mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(RLError, match="position 0"):
        response_logprobs(model, ids, torch.ones_like(mask))


def test_chunked_checkpointed_head_gives_the_same_gradients(model):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=g)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 3:] = True
    weights = torch.randn(2, 9, generator=g)

    def grads(fn):
        model.zero_grad()
        (fn() * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    whole = grads(lambda: response_logprobs(model, ids, mask, chunk_size=1000))
    chunked = grads(lambda: response_logprobs(model, ids, mask, chunk_size=5))
    # A model without an lm_head attribute goes through its .logits.
    via_logits = grads(lambda: response_logprobs(_LogitsOnly(model), ids, mask))
    assert whole.keys() == chunked.keys() == via_logits.keys() and "lm_head.weight" in whole
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(via_logits[name], whole[name], atol=1e-6, rtol=1e-5)


class _LogitsOnly(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(logits=self.inner(input_ids, **kwargs).logits)


def test_collate_and_policy_loss_on_policy(model):
    g = torch.Generator().manual_seed(2)
    samples = []
    for i, (p, r, reward) in enumerate([(3, 4, 1.0), (5, 2, 0.0), (2, 6, 0.0), (4, 3, 1.0)]):
        prompt = torch.randint(1, 500, (p,), generator=g).tolist()
        response = torch.randint(1, 500, (r,), generator=g).tolist()
        samples.append(Sample(prompt, response, reward=reward, group_id=i // 2, index=i % 2))
    samples[2].loss_mask[1:3] = [0, 0]  # environment tokens
    # Rollout logprobs = the current policy's: the ratio is 1 everywhere.
    for s in samples:
        s.rollout_logprobs = [0.0] * len(s.response_ids)
    assign_advantages(samples)
    batch = collate(samples, pad_token_id=0)
    with torch.no_grad():
        lp = response_logprobs(model, batch.input_ids, batch.loss_mask)
    for b, s in enumerate(samples):
        p = len(s.prompt_ids)
        s.rollout_logprobs = [float(x) if m else 0.0 for x, m in zip(lp[b, p:p + len(s.response_ids)], s.loss_mask)]
    batch = collate(samples, pad_token_id=0)
    assert batch.input_ids.shape == (4, 8) and batch.num_tokens == 4 + 2 + 4 + 3
    assert batch.loss_mask[2].tolist() == [False] * 2 + [True, False, False, True, True, True]
    loss, stats = policy_loss(model, batch)
    expected = -sum(s.advantage * s.num_trainable_tokens for s in samples) / batch.num_tokens
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["clip_frac"] == 0 and stats["approx_kl"] == pytest.approx(0.0, abs=1e-6) and stats["entropy"] > 0
    model.zero_grad()
    loss.backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_collate_errors():
    with pytest.raises(RLError, match="advantage"):
        collate([Sample([1], [2], rollout_logprobs=[-1.0], group_id=0)], 0)
    with pytest.raises(RLError, match="rollout logprobs"):
        collate([Sample([1], [2], advantage=0.5, group_id=0)], 0)
    with pytest.raises(RLError, match="empty"):
        collate([], 0)
