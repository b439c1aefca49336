"""Samples -> training tensors for the GRPO loss.

Each row is prompt + response, right-padded. Right padding needs no attention mask: with causal
attention no real token ever sees a pad to its right, so the model keeps its fast causal path.
Everything is aligned with `input_ids` ([B, T]): `loss_mask` is the sample's loss mask placed
over its response tokens, `old_logprobs` its rollout logprobs there (0 elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from glm45.rl.errors import RLError
from glm45.rl.sample import Sample

__all__ = ["RLBatch", "collate"]


@dataclass
class RLBatch:
    input_ids: torch.Tensor  # [B, T] long
    loss_mask: torch.Tensor  # [B, T] bool: model-generated response tokens
    old_logprobs: torch.Tensor  # [B, T] float32
    advantages: torch.Tensor  # [B] float32
    rewards: torch.Tensor  # [B] float32

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def to(self, device: torch.device | str) -> RLBatch:
        return RLBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def collate(samples: Sequence[Sample], pad_token_id: int) -> RLBatch:
    """Stack samples (each with an advantage and rollout logprobs) into one right-padded batch."""
    if not samples:
        raise RLError("cannot collate an empty list of samples")
    for s in samples:
        where = f"sample (group {s.group_id}, index {s.index})"
        if s.advantage is None:
            raise RLError(f"{where} has no advantage; call glm45.rl.grpo.assign_advantages first")
        if s.rollout_logprobs is None:
            raise RLError(f"{where} has no rollout logprobs; request logprobs from the engine "
                          f"or recompute them with response_logprobs")
        if not s.prompt_ids:
            raise RLError(f"{where} has an empty prompt")
    T = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    B = len(samples)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    loss_mask = torch.zeros((B, T), dtype=torch.bool)
    old = torch.zeros((B, T), dtype=torch.float32)
    for b, s in enumerate(samples):
        p, r = len(s.prompt_ids), len(s.response_ids)
        input_ids[b, :p + r] = torch.tensor(s.prompt_ids + s.response_ids, dtype=torch.long)
        if r:
            loss_mask[b, p:p + r] = torch.tensor(s.loss_mask, dtype=torch.bool)
            old[b, p:p + r] = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    rewards = torch.tensor([s.reward if s.reward is not None else 0.0 for s in samples], dtype=torch.float32)
    return RLBatch(input_ids, loss_mask, old, advantages, rewards)
