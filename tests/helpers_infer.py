"""Shared fixture for the inference tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Decoding tiny models is a stream of small ops: one thread is faster, and on a busy
    machine far faster (idle OpenMP threads spin while waiting for a descheduled peer)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
