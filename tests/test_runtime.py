"""Machine facts that decide how to run: CPU threads shared between busy threads."""

from __future__ import annotations

import argparse

import pytest
import torch

from glm45.rl.cli import _default_threads, add_arguments
from glm45.runtime import shared_cpu_threads


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cores", "workers", "busy", "expected"),
                         [(8, 1, 0, 8), (8, 1, 1, 7), (2, 1, 1, 1), (8, 2, 0, 4), (8, 1, 3, 5), (2, 2, 0, 1),
                          (1, 1, 1, 1), (3, 4, 0, 1)])
def test_the_cores_are_shared_out_and_never_below_one(torch_threads, cores, workers, busy, expected):
    torch_threads(cores)
    assert shared_cpu_threads("cpu", workers, busy, env={}) == expected


def test_the_users_omp_setting_and_gpus_are_left_alone(torch_threads):
    torch_threads(4)
    assert shared_cpu_threads("cpu", 2, env={"OMP_NUM_THREADS": "4"}) is None
    assert shared_cpu_threads("cuda", 2, env={}) is None


@pytest.mark.parametrize(("flags", "expected"), [
    ([], 8),  # sync: rollouts and training take turns
    (["--mode", "async"], 4),  # a rollout thread beside the trainer
    (["--mode", "async", "--rollout-workers", "3"], 2),
    (["--mode", "async", "--rollout-url", "http://x"], 8),  # rollouts run elsewhere
    (["--backend", "ray", "--rollout-workers", "2"], 6),  # each actor process takes a core
])
def test_rl_gives_the_trainer_the_cores_its_rollouts_leave(torch_threads, monkeypatch, flags, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch_threads(8)
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert _default_threads(p.parse_args(["--model", "m", "--out", "o", *flags])) == expected
