"""Fixtures of the dynamic-inference tests: a small "trained-looking" ResNet-20 and its space."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from s2dnas.space import Space
from s2dnas.zoo import create_model

INPUT_SHAPE = (1, 8, 8)


def make_base(*, num_classes: int = 10, in_channels: int = 1, seed: int = 0,
              input_shape: tuple[int, int, int] = INPUT_SHAPE) -> nn.Module:
    """A ResNet-20 whose batch norms are re-estimated on random inputs and whose head is scaled up.

    A freshly initialised ResNet answers one class for every input; with batch statistics that
    normalise its activations (and random affine parameters) its exits disagree and their
    confidences spread, which is what the tests of the exit rule need.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = create_model("resnet20", num_classes=num_classes, in_channels=in_channels)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the batches below
        model.train()
        model(torch.randn(128, *input_shape, generator=gen))
        model.eval()
        # Centre and scale the head on the pooled features, so the logits depend on the input.
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        feats: list[torch.Tensor] = []
        handle = head.register_forward_hook(lambda mod, args, out: feats.append(args[0]))
        model(torch.randn(128, *input_shape, generator=gen))
        handle.remove()
        f = feats[0]
        z = (f - f.mean(0)) @ head.weight.T
        head.weight.mul_(3.0 / z.std().clamp_min(1e-6))
        head.bias.copy_(-(f.mean(0) @ head.weight.T))
    return model


def make_space(*, num_stages: int = 3, input_shape: tuple[int, int, int] = INPUT_SHAPE, num_classes: int = 10,
               seed: int = 0) -> Space:
    return Space(make_base(num_classes=num_classes, in_channels=input_shape[0], seed=seed, input_shape=input_shape),
                 input_shape=input_shape, num_stages=num_stages, model_name="resnet20")


def sharpen(msnet: nn.Module, *, seed: int = 0, scale: float = 3.0) -> nn.Module:
    """Centre and scale every stage's classifier on random inputs, so each exit's answer depends on the input."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, *msnet.input_shape, generator=gen)
    msnet.eval()
    with torch.no_grad():
        logits = msnet(x)
        for stage, z in zip(msnet.stages, logits):
            head = [m for m in stage.modules() if isinstance(m, nn.Linear)][-1]
            a = scale / (z - z.mean(0)).std().clamp_min(1e-6)
            head.bias.copy_(a * (head.bias - z.mean(0)))
            head.weight.mul_(a)
    return msnet


def make_labels(msnet: nn.Module, x: torch.Tensor, *, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    """Labels that the last stage mostly gets right (earlier stages partly), with ``noise`` random ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y = msnet(x)[-1].argmax(1)
    flip = torch.rand(len(y), generator=gen) < noise
    return torch.where(flip, torch.randint(0, 10, y.shape, generator=gen), y)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


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
