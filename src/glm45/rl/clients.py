"""Where rollouts run, behind the one interface the RL loop drives: `rollout(items)` returns scored
groups, `push(update)` hands over new weights (applied before the client's next rollout).

- `LocalRolloutClient`: an in-process `glm45.infer.Engine` on its own copy of the policy
  (optionally FP8), driven by whichever thread calls `rollout` (a worker thread in asynchronous
  mode); pushed weights wait in a mailbox until that thread applies them between batches.
- `HTTPRolloutClient`: a server (vLLM, SGLang, `glm45 serve`) via `HTTPEngine`; weights reach it
  through a `DiskWeightSync` when the server can reload, else it samples a fixed model.
- `glm45.rl.ray_backend.RayRolloutClient`: the local client inside a Ray actor.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from glm45.rl.buffer import PromptItem
from glm45.rl.rollout import HTTPEngine, LocalEngine, RolloutConfig, RolloutStats, rollout
from glm45.rl.sample import Sample
from glm45.rl.weights import DiskWeightSync, snapshot, state_bytes

__all__ = ["HTTPRolloutClient", "LocalRolloutClient", "RolloutClient", "WeightSyncTarget", "WeightUpdate"]


@dataclass
class WeightUpdate:
    """New policy weights for the rollout engines; the snapshot is taken once, on first use, and
    shared by every client."""

    model: nn.Module
    version: int
    fp8: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # per-transport handles of the snapshot (a Ray object ref)

    @functools.cached_property
    def state(self) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        state = snapshot(self.model, fp8=self.fp8)
        self.timings["snapshot_s"] = time.perf_counter() - t0
        self.timings["bytes"] = float(state_bytes(state))
        return state


class RolloutClient(Protocol):
    version: int  # weight version the next rollout samples with

    def rollout(self, items: Sequence[PromptItem], *, temperature: float | None = None,
                group_size: int | None = None) -> tuple[list[list[Sample]], RolloutStats]: ...

    def push(self, update: WeightUpdate) -> None: ...

    def close(self) -> None: ...


class LocalRolloutClient:
    def __init__(self, model: nn.Module, tokenizer: Any, cfg: RolloutConfig, *, fp8: bool = False,
                 max_batch_size: int = 64, max_seq_len: int = 1024, seed: int = 0) -> None:
        from glm45.infer import Engine, quantize_model_fp8

        if fp8:
            quantize_model_fp8(model)
        self.engine = LocalEngine(Engine(model, tokenizer, max_batch_size=max_batch_size, max_seq_len=max_seq_len,
                                         seed=seed))
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.fp8 = fp8
        self.version = 0
        self.sync_seconds = 0.0  # time spent applying pushed weights
        self._pending: dict[str, torch.Tensor] | None = None
        self._pending_version = 0
        self._lock = threading.Lock()

    def push(self, update: WeightUpdate) -> None:
        self.push_state(update.state, update.version)

    def push_state(self, state: dict[str, torch.Tensor], version: int) -> None:
        with self._lock:
            self._pending, self._pending_version = state, version

    def apply_pending(self) -> bool:
        """Load pushed weights now (call from the thread that drives this client)."""
        with self._lock:
            state, version, self._pending = self._pending, self._pending_version, None
        if state is None:
            return False
        t0 = time.perf_counter()
        self.engine.update_weights(state)
        self.version = version
        self.sync_seconds += time.perf_counter() - t0
        return True

    def rollout(self, items: Sequence[PromptItem], *, temperature: float | None = None,
                group_size: int | None = None) -> tuple[list[list[Sample]], RolloutStats]:
        self.apply_pending()
        stats = RolloutStats()
        groups = rollout(self.engine, self.tokenizer, items, self.cfg, weight_version=self.version,
                         temperature=temperature, group_size=group_size, stats=stats)
        return groups, stats

    def close(self) -> None:
        pass


class HTTPRolloutClient:
    def __init__(self, engine: HTTPEngine, cfg: RolloutConfig, weight_sync: DiskWeightSync | None = None) -> None:
        self.engine = engine
        self.cfg = cfg
        self.weight_sync = weight_sync
        self.version = 0
        self.sync_seconds = 0.0

    def push(self, update: WeightUpdate) -> None:
        if self.weight_sync is None:
            return  # the server keeps its weights: samples stay at version 0 and their staleness shows it
        t0 = time.perf_counter()
        update.timings.update(self.weight_sync.push(update.model, update.version))
        self.version = update.version
        self.sync_seconds += time.perf_counter() - t0

    def rollout(self, items: Sequence[PromptItem], *, temperature: float | None = None,
                group_size: int | None = None) -> tuple[list[list[Sample]], RolloutStats]:
        stats = RolloutStats()
        groups = rollout(self.engine, self.engine.tokenizer, items, self.cfg, weight_version=self.version,
                         temperature=temperature, group_size=group_size, stats=stats)
        return groups, stats

    def close(self) -> None:
        self.engine.close()


class WeightSyncTarget:
    """A push-only target: a server that generates for someone else (agent frameworks) and
    reloads pushed weights through `weight_sync`."""

    def __init__(self, weight_sync: DiskWeightSync) -> None:
        self.weight_sync = weight_sync
        self.version = 0

    def push(self, update: WeightUpdate) -> None:
        update.timings.update(self.weight_sync.push(update.model, update.version))
        self.version = update.version

    def close(self) -> None:
        pass
