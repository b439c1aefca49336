"""The policy update: GRPO advantages, micro-batched clipped loss, one optimizer step per mini-batch.

A rollout batch (a list of groups) becomes `mini_batches` optimizer steps; each step's samples
are forwarded in micro-batches of `micro_batch_size` (sorted by length, so little padding), and
every micro-batch's loss is normalised by its mini-batch's token (or sequence) count, so
gradient accumulation gives the same gradient as one big batch.

With `grpo.kl_coef` > 0 the trainer keeps a frozen copy of the starting weights as the KL
reference (one more forward per micro-batch, one more model in memory).

Samples without rollout logprobs (trajectories an agent framework posted, or an HTTP engine that
reported none) get them recomputed with the current weights before the first update: the
"old policy" of the ratio is then the trainer's, exactly on-policy for the first step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from glm45.rl.batch import collate
from glm45.rl.errors import RLError
from glm45.rl.grpo import GRPOConfig, assign_advantages, policy_loss, response_logprobs
from glm45.rl.sample import Sample

__all__ = ["PolicyTrainer", "TrainerConfig"]


@dataclass
class TrainerConfig:
    lr: float = 5e-5  # tiny CPU models; billion-parameter policies want ~1e-6
    optimizer: str = "adamw"  # "adamw" or "muon" (glm45.train.optim: Muon for matrices, AdamW for the rest)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    micro_batch_size: int = 16  # samples per forward
    mini_batches: int = 1  # optimizer steps per rollout batch
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    dtype: str = "auto"  # autocast dtype: "auto" (bf16 where fast, runtime.compute_dtype), "bfloat16", "float32"

    def __post_init__(self) -> None:
        from glm45.runtime import check_dtype_name

        try:
            check_dtype_name(self.dtype, "dtype")
        except ValueError as e:
            raise RLError(str(e)) from None
        if isinstance(self.grpo, dict):
            self.grpo = GRPOConfig(**self.grpo)
        self.betas = tuple(self.betas)
        if self.optimizer not in ("adamw", "muon"):
            raise RLError(f"optimizer must be 'adamw' or 'muon', got {self.optimizer!r}")
        if not self.lr > 0 or self.micro_batch_size < 1 or self.mini_batches < 1:
            raise RLError("lr must be > 0 and micro_batch_size, mini_batches >= 1")


def _build_optimizer(model: torch.nn.Module, cfg: TrainerConfig, dtype: torch.dtype) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    from glm45.runtime import dtype_name
    from glm45.train.optim import build_optimizer

    return build_optimizer(model, cfg.lr, cfg.weight_decay, ns_dtype=dtype_name(dtype), betas=cfg.betas)


class PolicyTrainer:
    def __init__(self, model: torch.nn.Module, pad_token_id: int, cfg: TrainerConfig | None = None) -> None:
        from glm45.runtime import resolve_dtype

        self.model = model
        self.cfg = cfg or TrainerConfig()
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.dtype = resolve_dtype(self.cfg.dtype, self.device)
        self.optimizer = _build_optimizer(model, self.cfg, self.dtype)
        self.reference = _frozen_copy(model) if self.cfg.grpo.kl_coef else None
        self.version = 0  # optimizer steps taken: the version of the weights the rollout gets next

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    @torch.no_grad()
    def recompute_logprobs(self, samples: Sequence[Sample]) -> int:
        """Fill in the rollout logprobs of samples that have none; returns how many were filled."""
        todo = [s for s in samples if s.rollout_logprobs is None]
        if not todo:
            return 0
        self.model.eval()
        for chunk in _chunks(sorted(todo, key=_length), self.cfg.micro_batch_size):
            # collate wants advantages and old logprobs; stand-ins do, these forwards ignore them
            stand_ins = [replace(s, advantage=0.0, rollout_logprobs=[0.0] * len(s.response_ids)) for s in chunk]
            batch = collate(stand_ins, self.pad_token_id).to(self.device)
            with self._autocast():
                logp = response_logprobs(self.model, batch.input_ids, batch.loss_mask)
            for b, s in enumerate(chunk):
                p = len(s.prompt_ids)
                row = logp[b, p:p + len(s.response_ids)].tolist()
                s.rollout_logprobs = [lp if m else 0.0 for lp, m in zip(row, s.loss_mask)]
        return len(todo)

    def step(self, groups: Sequence[Sequence[Sample]]) -> dict[str, float]:
        """Train on one rollout batch; returns token-weighted statistics of the update."""
        samples = [s for g in groups for s in g]
        if not samples:
            raise RLError("cannot train on an empty batch")
        assign_advantages(samples, self.cfg.grpo)
        recomputed = self.recompute_logprobs(samples)
        self.model.train()
        totals: dict[str, float] = {}
        tokens_seen = 0.0
        grad_norms = []
        n_mini = min(self.cfg.mini_batches, len(groups))
        for mini in _split(list(groups), n_mini):
            mini_samples = [s for g in mini for s in g]
            num_tokens = float(sum(s.num_trainable_tokens for s in mini_samples))
            num_sequences = float(sum(1 for s in mini_samples if s.num_trainable_tokens))
            if num_tokens == 0:
                continue
            for chunk in _chunks(sorted(mini_samples, key=_length), self.cfg.micro_batch_size):
                batch = collate(chunk, self.pad_token_id).to(self.device)
                if batch.num_tokens == 0:
                    continue
                with self._autocast():
                    loss, st = policy_loss(self.model, batch, self.cfg.grpo, num_tokens=num_tokens,
                                           num_sequences=num_sequences, reference=self.reference)
                loss.backward()
                n = st["tokens"]
                tokens_seen += n
                totals["loss"] = totals.get("loss", 0.0) + st["loss"]
                for key in ("clip_frac", "clip_frac_high", "clip_frac_low", "approx_kl", "ratio_mean", "entropy",
                            "kl_ref"):
                    if key in st:
                        totals[key] = totals.get(key, 0.0) + st[key] * n
                totals["ratio_max"] = max(totals.get("ratio_max", 0.0), st["ratio_max"])
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.version += 1
        self.model.eval()
        out = {k: (v / tokens_seen if k not in ("loss", "ratio_max") and tokens_seen else v) for k, v in totals.items()}
        out["loss"] = totals.get("loss", 0.0) / max(1, len(grad_norms))
        out.update(grad_norm=max(grad_norms) if grad_norms else 0.0, trained_tokens=tokens_seen,
                   trained_samples=float(len(samples)), optimizer_steps=float(len(grad_norms)),
                   recomputed_logprobs=float(recomputed))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "version": self.version}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def _length(s: Sample) -> int:
    return len(s.prompt_ids) + len(s.response_ids)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _split(items: list, parts: int) -> list[list]:
    """`items` in `parts` contiguous, nearly equal pieces."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out
