"""Rollout engines as Ray actors: slime's disaggregated layout, on one machine or a cluster.

Each actor loads the starting checkpoint into its own `glm45.infer.Engine` (a `LocalRolloutClient`
inside the actor) and serves `rollout` calls; pushed weights travel once through the object
store (`ray.put` of the safetensors bytes, shared by every actor; FP8 when the run pushes FP8) and are applied by each
actor before its next rollout — Ray runs an actor's calls in order, so a rollout already running
finishes with the old weights. `RayRolloutClient` gives the RL loop the same interface as the
in-process client, so sync and async modes drive actors unchanged.

`ray` is optional (`pip install ray`); without it this module raises a clear error when used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from glm45.rl.buffer import PromptItem
from glm45.rl.errors import RLError
from glm45.rl.rollout import RolloutConfig, RolloutStats
from glm45.rl.sample import Sample

__all__ = ["RayRolloutClient", "available", "ray_clients"]


def available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray():
    try:
        import ray
    except ImportError:
        raise RLError("the Ray backend needs ray: pip install ray") from None
    return ray


class _RolloutActor:
    """The body of a rollout actor (wrapped with `ray.remote` when first used)."""

    def __init__(self, model_dir: str, rollout: dict[str, Any], fp8: bool, max_batch_size: int, max_seq_len: int,
                 seed: int, threads: int, imports: Sequence[str]) -> None:
        import importlib

        import torch

        for module in imports:  # e.g. the module that registers a custom reward or environment
            importlib.import_module(module)

        from glm45.model import GLM45ForCausalLM
        from glm45.rl.clients import LocalRolloutClient
        from glm45.tokenizer import GLMTokenizer

        torch.set_num_threads(threads)
        model = GLM45ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.client = LocalRolloutClient(model, GLMTokenizer.from_pretrained(model_dir), RolloutConfig(**rollout),
                                         fp8=fp8, max_batch_size=max_batch_size, max_seq_len=max_seq_len, seed=seed)

    def rollout(self, items: list[tuple[int, Any]], temperature: float | None,
                group_size: int | None) -> tuple[list[list[dict]], dict[str, Any], int]:
        groups, stats = self.client.rollout([PromptItem(g, p) for g, p in items], temperature=temperature,
                                            group_size=group_size)
        return [[s.to_dict() for s in g] for g in groups], asdict(stats), self.client.version

    def update_weights(self, blob: bytes, version: int) -> None:
        from safetensors.torch import load

        self.client.push_state(load(blob), version)

    def sync_seconds(self) -> float:
        return self.client.sync_seconds


class RayRolloutClient:
    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.version = 0
        self._push_ref: Any = None  # the last weight update call, checked before the next rollout

    def rollout(self, items: Sequence[PromptItem], *, temperature: float | None = None,
                group_size: int | None = None) -> tuple[list[list[Sample]], RolloutStats]:
        ray = _ray()
        if self._push_ref is not None:
            ray.get(self._push_ref)  # raises here if the actor could not take the weights
            self._push_ref = None
        groups, stats, version = ray.get(self.actor.rollout.remote([(it.group_id, it.prompt) for it in items],
                                                                   temperature, group_size))
        self.version = version
        return [[Sample.from_dict(d) for d in g] for g in groups], RolloutStats(**stats)

    def push(self, update: Any) -> None:
        ray = _ray()
        if "ray" not in update.shared:  # one copy in the object store for all actors
            from safetensors.torch import save

            # as safetensors bytes: Ray's own tensor pickling does not take every dtype (float8)
            update.shared["ray"] = ray.put(save(update.state))
        self._push_ref = self.actor.update_weights.remote(update.shared["ray"], update.version)

    def close(self) -> None:
        _ray().kill(self.actor)


def ray_clients(n: int, model_dir: str, rollout: RolloutConfig, *, fp8: bool = False, max_batch_size: int = 64,
                max_seq_len: int = 1024, seed: int = 0, threads: int = 1, address: str | None = None,
                imports: Sequence[str] = ()) -> list[RayRolloutClient]:
    """`n` rollout actors (one CPU each) on a local Ray instance, or the cluster at `address`.
    Actors are separate processes: rewards and environments registered in this one exist there
    only if their modules are listed in `imports`."""
    ray = _ray()
    if n < 1:
        raise RLError(f"need at least one rollout actor, got {n}")
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
    actor_cls = ray.remote(num_cpus=threads)(_RolloutActor)
    return [RayRolloutClient(actor_cls.remote(model_dir, asdict(rollout), fp8, max_batch_size, max_seq_len, seed + i,
                                              threads, list(imports)))
            for i in range(n)]
