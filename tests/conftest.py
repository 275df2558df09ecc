"""Shared fixtures, and one thread per test worker."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the workers share the machine's cores (two on CI): each trains on
    one thread, and so do the processes it starts, so the workers run side by side instead
    of fighting over the same cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks train fastest on one thread, and the CI machine is shared."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
