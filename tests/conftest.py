"""Shared pytest fixtures: torch on one thread, a seed. Shared toy models and data: ``tests/_models.py``."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread_session() -> Iterator[None]:
    """torch on one thread from the start (module-scoped fixtures included): the CI machine shares its
    cores. Restored at the end of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread(_one_thread_session: None) -> Iterator[None]:
    """Back to one thread after each test (``bench``/``profile --threads`` change the count)."""
    yield
    torch.set_num_threads(1)


@pytest.fixture
def seed() -> int:
    """Seed torch with 0 (and return it)."""
    torch.manual_seed(0)
    return 0
