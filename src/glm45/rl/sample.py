"""One rollout record (`Sample`) and the helpers that build and group them.

A sample is a prompt's token ids plus everything generated after them. For a multi-turn agent
trajectory the "response" is the whole continuation: assistant turns (model-generated, trained)
interleaved with tool results / user turns (written by the environment, masked out of the loss).
`loss_mask`, `rollout_logprobs` and `response_ids` are therefore all aligned token by token.

Samples answering the same prompt share a `group_id`; GRPO advantages are computed within a group.
`weight_version` is the version of the policy weights that generated the sample, so the trainer
can measure (and bound) off-policy staleness in asynchronous mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from glm45.rl.errors import RLError

__all__ = ["Sample", "Status", "from_generation", "group_samples"]


class Status(str, Enum):
    COMPLETED = "completed"  # the model stopped on its own (stop token / stop string)
    TRUNCATED = "truncated"  # cut at the token limit
    ABORTED = "aborted"  # stopped from outside (e.g. a weight update mid-generation); may be re-run
    FAILED = "failed"  # the rollout broke (environment error, malformed tool call that halted it)


# The engine's finish reasons (glm45.infer GenerationResult.finish_reason) as statuses.
_FINISH_STATUS = {"stop": Status.COMPLETED, "length": Status.TRUNCATED, "abort": Status.ABORTED}


@dataclass
class Sample:
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] | None = None  # per response token: 1 model-generated, 0 environment; None = all 1
    rollout_logprobs: list[float] | None = None  # per response token, from the rollout engine (0.0 where masked)
    reward: float | None = None
    status: Status = Status.COMPLETED
    group_id: int | None = None
    index: int = 0  # position within the group
    weight_version: int = 0
    prompt: Any = None  # the task record this sample answers (JSON-able)
    response_text: str = ""
    advantage: float | None = None  # set by glm45.rl.grpo.assign_advantages
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            try:
                self.status = Status(self.status)
            except ValueError:
                raise RLError(f"status must be one of {[s.value for s in Status]}, got {self.status!r}") from None
        if self.loss_mask is None:
            self.loss_mask = [1] * len(self.response_ids)
        self.validate()

    # ---- checks --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise RLError when the per-token fields disagree or hold bad values."""
        where = f"sample (group {self.group_id}, index {self.index})"
        n = len(self.response_ids)
        if not all(isinstance(t, int) and t >= 0 for t in self.prompt_ids):
            raise RLError(f"{where}: prompt_ids must be non-negative ints")
        if not all(isinstance(t, int) and t >= 0 for t in self.response_ids):
            raise RLError(f"{where}: response_ids must be non-negative ints")
        if len(self.loss_mask) != n:
            raise RLError(f"{where}: loss_mask has {len(self.loss_mask)} entries for {n} response tokens")
        if any(m not in (0, 1) for m in self.loss_mask):
            raise RLError(f"{where}: loss_mask entries must be 0 or 1")
        if self.rollout_logprobs is not None:
            if len(self.rollout_logprobs) != n:
                raise RLError(f"{where}: rollout_logprobs has {len(self.rollout_logprobs)} entries "
                              f"for {n} response tokens")
            if any(not math.isfinite(lp) or lp > 1e-6 for lp, m in zip(self.rollout_logprobs, self.loss_mask) if m):
                raise RLError(f"{where}: rollout_logprobs must be finite log-probabilities (<= 0)")
        if self.reward is not None and not math.isfinite(self.reward):
            raise RLError(f"{where}: reward must be finite, got {self.reward}")

    # ---- building multi-turn trajectories ------------------------------------------------
    def extend(self, token_ids: Sequence[int], *, trainable: bool, logprobs: Sequence[float] | None = None) -> None:
        """Append a piece of the trajectory: a model turn (`trainable`, with its rollout
        logprobs) or environment tokens (tool results, user turns: never trained)."""
        token_ids = list(token_ids)
        if logprobs is not None:
            if not trainable:
                raise RLError("environment tokens have no rollout logprobs; pass logprobs=None")
            if len(logprobs) != len(token_ids):
                raise RLError(f"{len(logprobs)} logprobs for {len(token_ids)} tokens")
            if self.rollout_logprobs is None:
                if self.num_trainable_tokens:
                    raise RLError("cannot add logprobs to a sample whose earlier trainable tokens have none")
                self.rollout_logprobs = [0.0] * len(self.response_ids)
        elif trainable and self.rollout_logprobs is not None:
            raise RLError("a trainable piece needs its rollout logprobs (the sample's other tokens have them)")
        self.response_ids += token_ids
        self.loss_mask += [int(trainable)] * len(token_ids)
        if self.rollout_logprobs is not None:
            self.rollout_logprobs += [float(x) for x in logprobs] if logprobs is not None else [0.0] * len(token_ids)

    # ---- views ---------------------------------------------------------------------------
    @property
    def num_trainable_tokens(self) -> int:
        return sum(self.loss_mask)

    def staleness(self, current_version: int) -> int:
        """How many weight updates ago this sample's policy was current."""
        return current_version - self.weight_version

    # ---- serialisation (JSONL, checkpoints) -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_ids": list(self.prompt_ids), "response_ids": list(self.response_ids),
            "loss_mask": list(self.loss_mask),
            "rollout_logprobs": None if self.rollout_logprobs is None else list(self.rollout_logprobs),
            "reward": self.reward, "status": self.status.value, "group_id": self.group_id, "index": self.index,
            "weight_version": self.weight_version, "prompt": self.prompt, "response_text": self.response_text,
            "advantage": self.advantage, "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        if not isinstance(d, dict) or "prompt_ids" not in d:
            raise RLError(f"not a sample record (needs at least 'prompt_ids'): {str(d)[:200]}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RLError(f"sample record has unknown fields {unknown}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            if isinstance(e, RLError):
                raise
            raise RLError(f"bad sample record: {e}") from None


def from_generation(result: Any, *, prompt: Any = None, group_id: int | None = None, index: int = 0,
                    weight_version: int = 0) -> Sample:
    """A single-turn sample from an engine result (`glm45.infer.GenerationResult` or anything with
    `prompt_token_ids`, `token_ids`, `text`, `finish_reason` and optional per-token `logprobs`
    dicts holding "logprob")."""
    logprobs = None
    if getattr(result, "logprobs", None) is not None:
        logprobs = [float(entry["logprob"]) for entry in result.logprobs]
    status = _FINISH_STATUS.get(result.finish_reason)
    if status is None:
        raise RLError(f"unknown finish reason {result.finish_reason!r}; expected one of {sorted(_FINISH_STATUS)}")
    return Sample(prompt_ids=list(result.prompt_token_ids), response_ids=list(result.token_ids),
                  rollout_logprobs=logprobs, status=status, group_id=group_id, index=index,
                  weight_version=weight_version, prompt=prompt, response_text=result.text)


def group_samples(samples: Iterable[Sample]) -> list[list[Sample]]:
    """Samples gathered by group_id, groups in order of first appearance, members by index."""
    groups: dict[int, list[Sample]] = {}
    for s in samples:
        if s.group_id is None:
            raise RLError(f"sample (index {s.index}) has no group_id; GRPO needs groups")
        groups.setdefault(s.group_id, []).append(s)
    return [sorted(g, key=lambda s: s.index) for g in groups.values()]
