"""GRPO without the KL term (paper §3.2): group-relative advantages and the clipped policy loss.

Advantage of sample i of a prompt's group: A_i = r_i - mean(r) (paper §3.3.2), optionally divided
by the group's standard deviation (classic GRPO; Bessel-corrected, as torch.std). Every token of a
response gets its sample's advantage.

Per-token loss with the importance ratio rho = exp(logp_new - logp_old) against the rollout's
logprobs (which may come from the FP8 inference weights; the ratio then also absorbs the
precision mismatch):

    l_t = -min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A)

with clip-higher (eps_high > eps_low) leaving more room to raise unlikely tokens. Only tokens the
model generated count (the loss mask: prompt, tool results and user turns are out). Aggregation:

- "token_mean" (default, the paper's choice for code RL): sum over every masked token of the
  batch / number of those tokens — long responses weigh by their length.
- "seq_mean": mean over each response's tokens, then over responses — every response weighs the
  same.

The paper drops the KL penalty. `kl_coef` > 0 adds one against a frozen reference policy (the
starting weights), per token with the k3 estimator, as other RL stacks offer:

    l_t += kl_coef * (exp(ref_t - logp_t) - (ref_t - logp_t) - 1)

For gradient accumulation pass the whole batch's `num_tokens` (or `num_sequences`) so each
micro-batch is normalised as the full batch would be.

Shape legend: B sequences, T tokens, N selected tokens, D hidden width, V vocabulary.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from glm45.rl.errors import RLError
from glm45.rl.sample import Sample, group_samples

if TYPE_CHECKING:
    from glm45.rl.batch import RLBatch

__all__ = ["GRPOConfig", "assign_advantages", "group_advantages", "grpo_loss", "policy_loss", "response_logprobs"]

LOSS_AGGREGATIONS = ("token_mean", "seq_mean")


@dataclass
class GRPOConfig:
    eps_low: float = 0.2
    eps_high: float = 0.28
    loss_agg: str = "token_mean"
    scale_by_std: bool = False  # the paper's objective only mean-centres
    std_eps: float = 1e-6
    kl_coef: float = 0.0  # k3 KL penalty against the reference policy; the paper's 0 loads no reference

    def __post_init__(self) -> None:
        if not (0 < self.eps_low < 1):
            raise RLError(f"eps_low must lie in (0, 1), got {self.eps_low}")
        if not self.eps_high > 0:
            raise RLError(f"eps_high must be > 0, got {self.eps_high}")
        if self.loss_agg not in LOSS_AGGREGATIONS:
            raise RLError(f"loss_agg must be one of {LOSS_AGGREGATIONS}, got {self.loss_agg!r}")
        if not self.std_eps > 0:
            raise RLError(f"std_eps must be > 0, got {self.std_eps}")
        if not self.kl_coef >= 0:
            raise RLError(f"kl_coef must be >= 0, got {self.kl_coef}")


# ---- advantages ------------------------------------------------------------------------------


def group_advantages(rewards: Sequence[float] | torch.Tensor, *, scale_by_std: bool = False,
                     std_eps: float = 1e-6) -> torch.Tensor:
    """Advantages of one group's rewards [K] (or of G equal-size groups [G, K], row-wise)."""
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.ndim not in (1, 2) or r.shape[-1] == 0:
        raise RLError(f"rewards must be [K] or [G, K] with K >= 1, got shape {tuple(r.shape)}")
    adv = r - r.mean(dim=-1, keepdim=True)
    if scale_by_std and r.shape[-1] > 1:
        adv = adv / (r.std(dim=-1, keepdim=True) + std_eps)
    return adv.float()


def assign_advantages(samples: Sequence[Sample], cfg: GRPOConfig | None = None) -> list[float]:
    """Set `sample.advantage` for every sample from its group's rewards; returns them in order."""
    cfg = cfg or GRPOConfig()
    for group in group_samples(samples):
        missing = [s.index for s in group if s.reward is None]
        if missing:
            raise RLError(f"group {group[0].group_id}: samples {missing} have no reward")
        adv = group_advantages([s.reward for s in group], scale_by_std=cfg.scale_by_std, std_eps=cfg.std_eps)
        for s, a in zip(group, adv.tolist()):
            s.advantage = a
    return [s.advantage for s in samples]


# ---- log-probabilities of response tokens ----------------------------------------------------


def _token_logprobs(head: Any, h_ND: torch.Tensor, targets_N: torch.Tensor, temperature: float,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    logits_NV = head(h_ND).float()
    if temperature != 1.0:
        logits_NV = logits_NV / temperature
    lse_N = torch.logsumexp(logits_NV, dim=-1)
    logp_N = logits_NV.gather(-1, targets_N[:, None]).squeeze(-1) - lse_N
    with torch.no_grad():  # entropy is for logging only: no gradient through it
        z = logits_NV.detach()
        entropy_N = lse_N.detach() - (F.softmax(z, dim=-1) * z).sum(-1)
    return logp_N, entropy_N


def response_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, response_mask: torch.Tensor, *,
                      attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                      temperature: float = 1.0, return_entropy: bool = False, chunk_size: int = 4096,
                      head_on_selected: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(token_t | tokens_<t) for every position where `response_mask` [B, T] is set; [B, T]
    float32 aligned with `input_ids`, 0 elsewhere (and the per-token entropy [B, T] if asked).

    The output head runs only on the positions needed, in chunks of `chunk_size` tokens, each
    recomputed in backward (activation checkpointing) so the [N, V] logits never all live at
    once. `temperature` must match how the old logprobs were computed (the engine reports the
    raw distribution: 1.0). That path needs a model with an `lm_head` and a `compute_logits`
    switch in its forward (GLM45ForCausalLM); other models (Hugging Face ones, DDP wrappers) give
    their full `.logits`. Pass `head_on_selected=False` when a wrapper owns the head's parameters
    only inside forward (an FSDP unit holding the root and the head together).
    """
    if input_ids.ndim != 2 or response_mask.shape != input_ids.shape:
        raise RLError(f"input_ids and response_mask must both be [B, T]; got {tuple(input_ids.shape)} "
                      f"and {tuple(response_mask.shape)}")
    if not temperature > 0:
        raise RLError(f"temperature must be > 0, got {temperature}")
    target_BT = response_mask.bool()
    if target_BT[:, 0].any():
        raise RLError("response_mask is set at position 0, which no earlier token predicts")
    pred_BT = torch.zeros_like(target_BT)
    pred_BT[:, :-1] = target_BT[:, 1:]
    kwargs = {k: v for k, v in (("attention_mask", attention_mask), ("position_ids", position_ids)) if v is not None}
    head = getattr(model, "lm_head", None)
    if head_on_selected and head is not None and "compute_logits" in inspect.signature(model.forward).parameters:
        h_ND = model(input_ids, compute_logits=False, **kwargs).hidden_states[pred_BT]
    else:
        h_ND = model(input_ids, **kwargs).logits[pred_BT]
        head = torch.nn.Identity()
    targets_N = input_ids[target_BT]
    use_ckpt = torch.is_grad_enabled() and h_ND.requires_grad
    pieces = []
    for start in range(0, h_ND.shape[0], chunk_size):
        args = (head, h_ND[start:start + chunk_size], targets_N[start:start + chunk_size], temperature)
        pieces.append(checkpoint(_token_logprobs, *args, use_reentrant=False) if use_ckpt else _token_logprobs(*args))
    if pieces:
        logp_N, entropy_N = torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])
    else:
        logp_N = entropy_N = h_ND.new_zeros(0, dtype=torch.float32)
    zeros_BT = torch.zeros(target_BT.shape, dtype=torch.float32, device=input_ids.device)
    logp_BT = zeros_BT.masked_scatter(target_BT, logp_N)
    if return_entropy:
        return logp_BT, zeros_BT.masked_scatter(target_BT, entropy_N)
    return logp_BT


# ---- the loss ----------------------------------------------------------------------------------


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    n = int(mask.sum())
    return float(x[mask].sum() / n) if n else 0.0


def _masked_log_ratio(num: torch.Tensor, den: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Masked positions may hold anything (padding, environment tokens): keep them out of exp().
    return torch.where(mask, num - den, torch.zeros_like(num)).clamp(-20.0, 20.0)


def _k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """The k3 KL estimator from log(p / q) on samples of q: exp(x) - x - 1, never negative."""
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, cfg: GRPOConfig | None = None, *, logits: torch.Tensor | None = None,
              entropy: torch.Tensor | None = None, num_tokens: float | None = None,
              num_sequences: float | None = None, ref_logprobs: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO loss (see the module docstring) and statistics for logging.

    new_logprobs, old_logprobs, mask: [B, L]; advantages: [B] (one per sequence) or [B, L].
    `logits` [B, L, V] (aligned with the tokens they predict) or a precomputed `entropy` [B, L]
    add the mean entropy to the stats. Stats: loss, clip_frac (tokens whose clipped term was
    taken: the ratio left the trust region in the direction the advantage pushes), clip_frac_low,
    clip_frac_high, approx_kl (k3 estimate of KL(old || new), logged, never optimised), ratio_mean,
    ratio_max, tokens, sequences, entropy when available, and with `cfg.kl_coef` > 0 (which
    needs `ref_logprobs` [B, L], the reference policy's) kl_ref, the mean penalised k3 term.
    """
    cfg = cfg or GRPOConfig()
    if new_logprobs.ndim != 2 or old_logprobs.shape != new_logprobs.shape or mask.shape != new_logprobs.shape:
        raise RLError(f"new_logprobs, old_logprobs and mask must share one [B, L] shape; got "
                      f"{tuple(new_logprobs.shape)}, {tuple(old_logprobs.shape)}, {tuple(mask.shape)}")
    mask = mask.bool()
    adv = advantages.to(new_logprobs.device, torch.float32)
    if adv.ndim == 1 and adv.shape[0] == new_logprobs.shape[0]:
        adv = adv[:, None].expand_as(new_logprobs)
    elif adv.shape != new_logprobs.shape:
        raise RLError(f"advantages must be [B] or [B, L]; got {tuple(adv.shape)} for logprobs "
                      f"{tuple(new_logprobs.shape)}")
    new = new_logprobs.float()
    old = old_logprobs.to(new.device, torch.float32)
    log_ratio = _masked_log_ratio(new, old, mask)
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    kl_ref = None
    if cfg.kl_coef:
        if ref_logprobs is None or ref_logprobs.shape != new.shape:
            raise RLError(f"kl_coef > 0 needs ref_logprobs of shape {tuple(new.shape)}")
        kl_ref = _k3(_masked_log_ratio(ref_logprobs.to(new.device, torch.float32), new, mask))
        per_token = per_token + cfg.kl_coef * kl_ref
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))

    m = mask.float()
    tokens_per_seq = m.sum(-1)
    has_tokens = tokens_per_seq > 0
    if cfg.loss_agg == "token_mean":
        denom = num_tokens if num_tokens is not None else m.sum().clamp(min=1.0)
        loss = per_token.sum() / denom
    else:
        seq_loss = per_token.sum(-1) / tokens_per_seq.clamp(min=1.0)
        denom = num_sequences if num_sequences is not None else has_tokens.sum().clamp(min=1)
        loss = (seq_loss * has_tokens).sum() / denom

    with torch.no_grad():
        high = mask & (adv > 0) & (ratio > 1.0 + cfg.eps_high)
        low = mask & (adv < 0) & (ratio < 1.0 - cfg.eps_low)
        n = int(mask.sum())
        stats = {
            "loss": float(loss.detach()),
            "clip_frac": float((high | low).sum()) / n if n else 0.0,
            "clip_frac_high": float(high.sum()) / n if n else 0.0,
            "clip_frac_low": float(low.sum()) / n if n else 0.0,
            "approx_kl": _masked_mean(_k3(log_ratio), mask),
            "ratio_mean": _masked_mean(ratio, mask),
            "ratio_max": float(ratio[mask].max()) if n else 1.0,
            "tokens": float(n),
            "sequences": float(has_tokens.sum()),
        }
        if kl_ref is not None:
            stats["kl_ref"] = _masked_mean(kl_ref, mask)
        if logits is not None:
            z = logits.float()
            ent = torch.logsumexp(z, -1) - (F.softmax(z, -1) * z).sum(-1)
            stats["entropy"] = _masked_mean(ent, mask)
        elif entropy is not None:
            stats["entropy"] = _masked_mean(entropy.float(), mask)
    return loss, stats


def policy_loss(model: torch.nn.Module, batch: RLBatch, cfg: GRPOConfig | None = None, *,
                num_tokens: float | None = None, num_sequences: float | None = None,
                temperature: float = 1.0, reference: torch.nn.Module | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward the batch through the policy and return the GRPO loss and its stats; with
    `cfg.kl_coef` > 0 also through the frozen `reference` policy for the KL penalty."""
    cfg = cfg or GRPOConfig()
    ref_logprobs = None
    if cfg.kl_coef:
        if reference is None:
            raise RLError("kl_coef > 0 needs a reference policy")
        with torch.no_grad():
            ref_logprobs = response_logprobs(reference, batch.input_ids, batch.loss_mask, temperature=temperature)
    new_logprobs, entropy = response_logprobs(model, batch.input_ids, batch.loss_mask, temperature=temperature,
                                              return_entropy=True)
    return grpo_loss(new_logprobs, batch.old_logprobs, batch.advantages, batch.loss_mask, cfg, entropy=entropy,
                     num_tokens=num_tokens, num_sequences=num_sequences, ref_logprobs=ref_logprobs)
