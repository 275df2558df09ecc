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


def _start_local_ray(num_cpus: int):
    """A local Ray of `num_cpus` CPUs (the caller shuts it down). Ray gives its raylet 30 s
    to start, which a loaded machine can miss: a second attempt follows a first failure."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(2):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    return ray


@pytest.fixture(scope="session")
def start_local_ray():
    """`start_local_ray(num_cpus)` -> ray, for a module's Ray fixture (starting one takes
    seconds, so a module shares one)."""
    return _start_local_ray


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks train fastest on one thread, and the CI machine is shared."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
