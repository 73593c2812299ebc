"""Shared pytest fixtures."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def seed() -> Iterator[int]:
    """Seed torch with 0 and run on one thread (the CI machine shares its cores); restores threads after."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield 0
    torch.set_num_threads(threads)
