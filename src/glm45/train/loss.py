"""The pre-training objective and the loss-function interface the trainer calls.

A loss function is split-invariant: one optimizer step sees a global batch cut into
micro-batches (gradient accumulation) and across ranks (data parallelism), and the step's loss
must not depend on the cut. So the trainer first sums `counts(batch)` over every micro-batch
of the step and every rank, and each micro-batch then returns its *share* of the global loss
(a local sum divided by the global count). Shares add up to the global mean, whatever the split.

The default objective (GLM-4.5 §2.1, §2.4):
    L = CE(logits_t, token_{t+1}) + λ · CE(mtp_logits_t, token_{t+2}) + α · Σ_layers L_bal
with token-mean cross-entropies over positions whose label is not -100, λ from the schedule
(0.3 then 0.1) and α the sequence-level balance-loss weight (1e-4), summed over the MoE layers
(the MTP layer's included) and averaged over the sequences that carry labels.

Shape legend: B sequences, T positions, V vocabulary, E routed experts, K experts per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from glm45.model.linear_ce import IGNORE_INDEX
from glm45.train.balance import sequence_balance_loss


@dataclass
class StepContext:
    """What a loss function knows about the optimizer step it is part of."""

    step: int  # optimizer steps done before this one
    tokens: int  # tokens seen before this step
    mtp_weight: float
    counts: dict[str, float]  # `counts()` summed over the step's micro-batches and all ranks


@dataclass
class LossOutput:
    loss: Tensor  # this micro-batch's share of the step's loss (backward() goes through it)
    logs: dict[str, Tensor] = field(default_factory=dict)  # detached shares: they sum to the step's values
    expert_load: Tensor | None = None  # [L, E] tokens routed per expert in this micro-batch


class LossFunction(Protocol):
    def counts(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """Normalisers of this micro-batch (e.g. labelled tokens), to be summed over the step."""

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        """Forward the micro-batch and return its share of the step's loss."""


def mtp_labels(labels_BT: Tensor, segment_ids_BT: Tensor | None = None) -> Tensor:
    """Targets of the MTP head: position t predicts token t+2, which is `labels[t+1]` when
    positions t and t+1 belong to the same segment (packed document); -100 elsewhere and at the
    last position."""
    out = torch.full_like(labels_BT, IGNORE_INDEX)
    shifted = labels_BT[:, 1:]
    if segment_ids_BT is not None:
        same = segment_ids_BT[:, :-1] == segment_ids_BT[:, 1:]
        shifted = torch.where(same, shifted, torch.full_like(shifted, IGNORE_INDEX))
    out[:, :-1] = shifted
    return out


def _single_segment(segment_ids_BT: Tensor | None) -> bool:
    return segment_ids_BT is None or bool((segment_ids_BT == segment_ids_BT[:, :1]).all())


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keyword arguments of the model's forward from a loader batch. Rows that are one segment
    (concat packing) pass no segment ids, which keeps attention on the plain causal fast path."""
    kwargs = {}
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
    if "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
    if not _single_segment(batch.get("segment_ids")):
        kwargs["segment_ids"] = batch["segment_ids"]
    return kwargs


@dataclass
class LMLoss:
    """Next-token CE + λ · MTP CE + α · sequence balance loss (the pre/mid-training objective).

    `mtp`: train the MTP head (when the model has one); `aux_weight` α: 0 skips the balance
    loss and the router scores it needs."""

    aux_weight: float = 1e-4
    mtp: bool = True

    def counts(self, batch: dict[str, Tensor]) -> dict[str, float]:
        labels = batch["labels"]
        valid = labels != IGNORE_INDEX
        return {"tokens": float(valid.sum()),
                "mtp_tokens": float((mtp_labels(labels, batch.get("segment_ids")) != IGNORE_INDEX).sum()),
                "sequences": float(valid.any(dim=1).sum())}

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        labels_BT = batch["labels"]
        has_mtp = self.mtp and getattr(_inner(model), "mtp", None) is not None
        want_scores = self.aux_weight > 0
        # The model sums both cross-entropies with its fused chunked head: no [B, T, V] logits.
        mtp_targets_BT = mtp_labels(labels_BT, batch.get("segment_ids")) if has_mtp else None
        out = model(batch["input_ids"], **model_inputs(batch), return_mtp=has_mtp,
                    return_router_scores=want_scores, targets=labels_BT, mtp_targets=mtp_targets_BT)
        lm = out.loss_sum / max(ctx.counts["tokens"], 1.0)
        loss = lm
        logs = {"loss": lm.detach()}
        if has_mtp:
            mtp = out.mtp_loss_sum / max(ctx.counts["mtp_tokens"], 1.0)
            loss = loss + ctx.mtp_weight * mtp
            logs["mtp_loss"] = mtp.detach()
        if want_scores and out.router_stats:
            aux = self._balance(out.router_stats, labels_BT, ctx)
            loss = loss + self.aux_weight * aux
            logs["aux_loss"] = aux.detach()
        return LossOutput(loss=loss, logs=logs, expert_load=out.expert_load)

    def _balance(self, stats, labels_BT: Tensor, ctx: StepContext) -> Tensor:
        # sequence_balance_loss averages over this micro-batch's labelled sequences; scaling by
        # their share of the step's sequences makes the shares sum to the global mean.
        B, T = labels_BT.shape
        mask_BT = labels_BT != IGNORE_INDEX
        share = float(mask_BT.any(dim=1).sum()) / max(ctx.counts["sequences"], 1.0)
        total = labels_BT.new_zeros((), dtype=torch.float32)
        for s in stats:
            E, K = s.scores_NE.shape[-1], s.topk_idx_NK.shape[-1]
            total = total + sequence_balance_loss(s.scores_NE.reshape(B, T, E), s.topk_idx_NK.reshape(B, T, K),
                                                  E, K, mask_BT)
        return total * share


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
