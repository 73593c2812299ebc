"""Fixtures shared by the cost tests: a tiny ResNet-20 space and its default 3-stage network."""
from __future__ import annotations

import pytest
import torch

from s2dnas.space import Space
from s2dnas.zoo import create_model


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    return Space(create_model("resnet20", num_classes=10, in_channels=1).eval(), input_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def msnet(space):
    return space.build(space.default_architecture()).eval()
