"""Fixtures of the dynamic-inference tests: a small "trained-looking" ResNet-20 (tests/_models.py), its
space, its network and data."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from s2dnas.space import Space
from tests._models import INPUT_SHAPE, make_labels, make_space, sharpen


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def space3() -> Space:
    return make_space(num_stages=3)


@pytest.fixture(scope="module")
def msnet3(space3: Space) -> nn.Module:
    return sharpen(space3.build(space3.default_architecture()))


@pytest.fixture(scope="module")
def data3(msnet3: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(240, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    return x, make_labels(msnet3, x)
