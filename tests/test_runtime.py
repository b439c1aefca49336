"""Machine facts that decide how to run: the server's CPU thread count."""

from __future__ import annotations

import pytest
import torch

from glm45.runtime import serving_threads


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (8, 7)])
def test_a_cpu_server_leaves_one_core_to_the_event_loop(torch_threads, cores, expected):
    torch_threads(cores)
    assert serving_threads("cpu", env={}) == expected


def test_the_users_omp_setting_and_gpus_are_left_alone(torch_threads):
    torch_threads(4)
    assert serving_threads("cpu", env={"OMP_NUM_THREADS": "4"}) is None
    assert serving_threads("cuda", env={}) is None
