"""Rollout engines as Ray actors (local Ray; skipped without ray)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from glm45.model import GLM45ForCausalLM
from glm45.rl.buffer import PromptItem
from glm45.rl.clients import WeightUpdate
from glm45.rl.loop import RLConfig, RLRun
from glm45.rl.overlong import OverlongConfig
from glm45.rl.rollout import RolloutConfig
from glm45.rl.trainer import TrainerConfig
from glm45.tokenizer import GLMTokenizer
from glm45.rl.task_sets import arithmetic_tasks
from rl_helpers import tiny_dir

ray = pytest.importorskip("ray")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_actor_rollout_and_push(local_ray, tmp_path):
    from glm45.rl.ray_backend import ray_clients

    (client,) = ray_clients(1, tiny_dir(), RolloutConfig(group_size=2, max_tokens=6), max_seq_len=96)
    (group,) = client.rollout([PromptItem(4, arithmetic_tasks(1)[0])])[0]
    assert [s.group_id for s in group] == [4, 4] and client.version == 0
    assert all(len(s.rollout_logprobs) == len(s.response_ids) for s in group)
    model = GLM45ForCausalLM.from_pretrained(tiny_dir(), dtype=torch.float32)
    client.push(WeightUpdate(model, 5, fp8=True))
    (group,) = client.rollout([PromptItem(5, arithmetic_tasks(1)[0])])[0]
    assert client.version == 5 and {s.weight_version for s in group} == {5}
    client.close()

    # the loop drives actors like local engines (async: they keep generating while it trains)
    cfg = RLConfig(out=str(tmp_path / "run"), mode="async", steps=2, prompts_per_step=2, eval_every=0,
                   max_seq_len=96, overlong=OverlongConfig(mode="keep"),
                   rollout=RolloutConfig(group_size=4, max_tokens=6), trainer=TrainerConfig(lr=1e-3))
    clients = ray_clients(1, tiny_dir(), cfg.rollout, max_seq_len=96)
    # a random model never solves arithmetic: every group has equal rewards, so train on all of them
    cfg.dynamic_sampling = False
    RLRun(cfg, model, GLMTokenizer.from_pretrained(tiny_dir()), arithmetic_tasks(20), clients=clients).run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["weight_version"] for r in rows] == [1, 2] and all(r["staleness_max"] <= 2 for r in rows)
