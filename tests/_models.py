"""The toy models and data the tests share (library tests, the CLI as ``tests._models:toy_cnn``, workers).

Two conv-BN-ReLU blocks, the second at half resolution with twice the channels (so its space has
two split groups), global pooling and a linear head; traceable by torch.fx. ``stride=2`` in the
first block too suits 28x28 inputs (the CLI tests), ``stride=1`` the 8x8 inputs of the library
tests. Weights are created in the same order for every variant, so a seed fixes them.
:func:`blob_splits` is the easy two-class task they train on.

:func:`spread_batch_norms` / :func:`make_base` / :func:`make_space` / :func:`sharpen` / :func:`make_labels`: a "trained-looking"
ResNet-20 whose exits disagree, for the tests of the exit rule (dynamic, CLI evaluate, bench).
"""
from __future__ import annotations

import torch
from torch import nn

from s2dnas.data.datasets import DataSplits, TensorImageDataset
from s2dnas.space import Space
from s2dnas.zoo import create_model

__all__ = ["INPUT_SHAPE", "ToyCNN", "blob_splits", "make_base", "make_labels", "make_space", "sharpen",
           "spread_batch_norms", "toy_cnn", "trained_toy"]


class ToyCNN(nn.Module):
    """conv-bn-relu (stride ``stride``), conv-bn-relu (stride 2, ``2 * width`` channels), pooling, linear."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, width: int = 8, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def trained_toy(splits: DataSplits, *, epochs: int, seed: int = 0) -> ToyCNN:
    """A :class:`ToyCNN` (weights from ``seed``) trained on ``splits.train`` for ``epochs`` (SGD lr 0.1,
    momentum 0.9, batches of 32 shuffled with the epoch as seed), then frozen in eval mode: a base."""
    from s2dnas.data import make_loader

    torch.manual_seed(seed)
    model = ToyCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(epochs):
        for x, y in make_loader(splits.train, batch_size=32, shuffle=True, seed=epoch):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def toy_cnn(num_classes: int = 10, in_channels: int = 1) -> ToyCNN:
    """The CLI form (``--model tests._models:toy_cnn``): both blocks strided, for 28x28 inputs."""
    return ToyCNN(num_classes=num_classes, in_channels=in_channels, stride=2)


def _blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 has a bright 4x4 square in the middle of an 8x8 noise image."""
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.randn(n, 1, 8, 8, generator=generator) * 0.5
    x[y == 1, :, 2:6, 2:6] += 1.5
    return x, y


def blob_splits() -> DataSplits:
    """192 training and 96 val (= test) 1x8x8 images of two classes, the same in every process."""
    g = torch.Generator().manual_seed(0)
    (xt, yt), (xv, yv) = _blobs(192, g), _blobs(96, g)
    return DataSplits(name="blobs", train=TensorImageDataset(xt, yt), val=TensorImageDataset(xv, yv),
                      test=TensorImageDataset(xv, yv), num_classes=2, in_channels=1, input_size=(8, 8),
                      mean=(0.0,), std=(1.0,))


# -- a trained-looking ResNet-20 -----------------------------------------------------------------
INPUT_SHAPE = (1, 8, 8)


def spread_batch_norms(model: nn.Module, *, input_shape: tuple[int, ...], generator: torch.Generator,
                       num_images: int = 128) -> nn.Module:
    """Random batch-norm affines, statistics re-estimated on ``num_images`` random inputs; ``model`` in eval mode.

    Affine weights are drawn from [0.5, 1.5) and biases from 0.1 * N(0, 1), module by module, then
    one batch in train mode sets the running statistics (cumulative average: ``momentum=None``).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
                m.reset_running_stats()
                m.momentum = None
        model.train()
        model(torch.randn(num_images, *input_shape, generator=generator))
    return model.eval()


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
    spread_batch_norms(model, input_shape=input_shape, generator=gen)
    with torch.no_grad():
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
