"""The pre-training objective: MTP targets, LM + λ·MTP + α·balance, split invariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glm45.train.balance import sequence_balance_loss
from glm45.train.loss import IGNORE_INDEX, LMLoss, StepContext, model_inputs, mtp_labels
from glm45.train.trainer import micro_batches_per_step
from helpers_train import tiny_model

X = IGNORE_INDEX


def test_mtp_labels_shift_by_one_and_stop_at_segments_and_ignored_labels():
    labels = torch.tensor([[11, 12, 13, 14, 15, 16],
                           [21, X, 23, 24, X, X]])
    segs = torch.tensor([[0, 0, 0, 1, 1, 1],
                         [0, 0, 0, 0, 0, 1]])
    assert mtp_labels(labels, segs).tolist() == [[12, 13, X, 15, 16, X],
                                                 [X, 23, 24, X, X, X]]
    # Without segments (concat rows) only the shift and the last position apply.
    assert mtp_labels(labels).tolist() == [[12, 13, 14, 15, 16, X], [X, 23, 24, X, X, X]]


def test_mtp_target_is_the_token_two_ahead_in_concat_rows():
    ids = torch.randint(24, 500, (2, 10))
    labels = torch.cat([ids[:, 1:], torch.randint(24, 500, (2, 1))], dim=1)  # concat rows: next token
    target = mtp_labels(labels, torch.zeros_like(ids))
    assert torch.equal(target[:, :-2], ids[:, 2:])


def _packed_batch(seed: int = 0, B: int = 4, T: int = 16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(24, 512, (B, T), generator=g)
    segs = torch.zeros(B, T, dtype=torch.long)
    segs[1, 9:] = 1
    segs[2, 5:] = 1
    segs[2, 12:] = 2  # padding segment
    labels = torch.full_like(ids, X)
    same = segs[:, :-1] == segs[:, 1:]
    labels[:, :-1] = torch.where(same, ids[:, 1:], torch.full_like(ids[:, 1:], X))
    labels[2, 12:] = X
    labels[3, :7] = X  # a prompt without loss
    pos = torch.arange(T).expand(B, T).clone()
    for b in range(B):
        for t in range(1, T):
            pos[b, t] = 0 if segs[b, t] != segs[b, t - 1] else pos[b, t - 1] + 1
    return {"input_ids": ids, "labels": labels, "segment_ids": segs, "position_ids": pos}


def _ctx(counts, mtp_weight=0.3):
    return StepContext(step=0, tokens=0, mtp_weight=mtp_weight, counts=counts)


def test_lm_loss_is_ce_plus_weighted_mtp_plus_weighted_balance():
    model = tiny_model()
    batch = _packed_batch()
    loss_fn = LMLoss(aux_weight=0.01)
    got = loss_fn(model, batch, _ctx(loss_fn.counts(batch)))

    out = model(batch["input_ids"], position_ids=batch["position_ids"], segment_ids=batch["segment_ids"],
                return_mtp=True, return_router_scores=True)
    V = out.logits.shape[-1]
    lm = F.cross_entropy(out.logits.reshape(-1, V), batch["labels"].reshape(-1), ignore_index=X)
    mtp = F.cross_entropy(out.mtp_logits.reshape(-1, V),
                          mtp_labels(batch["labels"], batch["segment_ids"]).reshape(-1), ignore_index=X)
    mask = batch["labels"] != X
    B, T = mask.shape
    aux = sum(sequence_balance_loss(s.scores_NE.reshape(B, T, -1), s.topk_idx_NK.reshape(B, T, -1),
                                    s.scores_NE.shape[-1], s.topk_idx_NK.shape[-1], mask) for s in out.router_stats)
    assert len(out.router_stats) == 3  # two MoE layers + the MTP layer
    torch.testing.assert_close(got.logs["loss"], lm.detach())
    torch.testing.assert_close(got.logs["mtp_loss"], mtp.detach())
    torch.testing.assert_close(got.logs["aux_loss"], aux.detach())
    torch.testing.assert_close(got.loss, lm + 0.3 * mtp + 0.01 * aux)
    assert got.expert_load.shape == (3, model.config.n_routed_experts)
    assert got.expert_load.sum() == B * T * model.config.num_experts_per_tok * 3


def test_micro_batch_shares_sum_to_the_whole_batch_loss_and_gradient():
    """Cut into micro-batches with different label counts, the shares (local sums over global
    counts) give the same loss and gradients as the whole batch — what accumulation and data
    parallelism rely on."""
    batch = _packed_batch(seed=1)
    loss_fn = LMLoss(aux_weight=0.01)

    def grads(parts):
        model = tiny_model()
        counts = {}
        for p in parts:
            for k, v in loss_fn.counts(p).items():
                counts[k] = counts.get(k, 0.0) + v
        total, logs = 0.0, {}
        for p in parts:
            out = loss_fn(model, p, _ctx(counts))
            out.loss.backward()
            total += out.loss.detach()
            for k, v in out.logs.items():
                logs[k] = logs.get(k, 0.0) + v
        return total, logs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    whole_loss, whole_logs, whole = grads([batch])
    halves = [{k: v[:1] for k, v in batch.items()}, {k: v[1:] for k, v in batch.items()}]
    split_loss, split_logs, split = grads(halves)
    torch.testing.assert_close(split_loss, whole_loss)
    for k in whole_logs:
        torch.testing.assert_close(split_logs[k], whole_logs[k])
    assert whole.keys() == split.keys()
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)


def test_concat_rows_take_the_causal_fast_path_and_packed_rows_pass_segments():
    batch = _packed_batch()
    assert "segment_ids" in model_inputs(batch)
    concat = dict(batch, segment_ids=torch.zeros_like(batch["segment_ids"]))
    assert "segment_ids" not in model_inputs(concat) and "position_ids" in model_inputs(concat)


def test_no_aux_weight_skips_the_balance_loss_and_no_mtp_flag_skips_mtp():
    batch = _packed_batch()
    out = LMLoss(aux_weight=0.0, mtp=False)(tiny_model(), batch, _ctx(LMLoss().counts(batch)))
    assert set(out.logs) == {"loss"}


@pytest.mark.parametrize("batch_tokens,seq_len,micro,world,want", [
    (128, 32, 4, 1, 1), (512, 32, 4, 1, 4), (512, 32, 2, 2, 4), (100, 32, 4, 1, 1), (900, 32, 4, 2, 4),
])
def test_micro_batches_per_step(batch_tokens, seq_len, micro, world, want):
    assert micro_batches_per_step(batch_tokens, seq_len, micro, world) == want
