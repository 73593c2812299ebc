"""Models of the method benchmark that are not plain zoo names.

``s2dnas`` builds user models from ``package.module:factory`` references, so these are named
``benchmarks.models:<factory>`` in commands, configs and weights metadata (run from the repository
root, or with it on ``PYTHONPATH``).

Two families: ResNet-20 (the shipped base, 16/32/64 channels) with static variants at x0.25,
x0.375, x0.5 and x0.75 of its width, and VGG-16-BN at half width (``vgg16_bn_w50``: 32, 64, 128,
256, 256 channels per block, 67.0M MACs at 28x28) with the same four thinner variants. Issue 14
asks for a second family whose stage slices are >= 16 channels wide: a quarter slice of VGG's
half-width blocks is 8 channels in the first block and >= 16 from the second on (ResNet-20's: 4,
8, 16).
"""
from __future__ import annotations

from torch import nn

from s2dnas.zoo import create_model

__all__ = ["resnet20_w25", "resnet20_w375", "resnet20_w50", "resnet20_w75", "vgg16_bn_w50", "vgg16_bn_w38",
           "vgg16_bn_w25", "vgg16_bn_w19", "vgg16_bn_w12"]


def _resnet20(width: float, num_classes: int, in_channels: int) -> nn.Module:
    return create_model("resnet20", num_classes=num_classes, in_channels=in_channels, width_mult=width)


def _vgg16_bn(width: float, num_classes: int, in_channels: int) -> nn.Module:
    return create_model("vgg16_bn", num_classes=num_classes, in_channels=in_channels, width_mult=width)


def resnet20_w25(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: ResNet-20 at a quarter of its width (4/8/16 channels)."""
    return _resnet20(0.25, num_classes, in_channels)


def resnet20_w375(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: ResNet-20 at 3/8 of its width (6/12/24 channels)."""
    return _resnet20(0.375, num_classes, in_channels)


def resnet20_w50(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: ResNet-20 at half width (8/16/32 channels)."""
    return _resnet20(0.5, num_classes, in_channels)


def resnet20_w75(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: ResNet-20 at three quarters of its width (12/24/48 channels)."""
    return _resnet20(0.75, num_classes, in_channels)


def vgg16_bn_w50(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG-16-BN at half width (32 to 256 channels), the second base model (trained here): the
    full-width one (268M MACs at 28x28) is beyond the benchmark machine."""
    return _vgg16_bn(0.5, num_classes, in_channels)


def vgg16_bn_w38(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: three quarters of ``vgg16_bn_w50`` (24 to 192 channels)."""
    return _vgg16_bn(0.375, num_classes, in_channels)


def vgg16_bn_w25(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: half of ``vgg16_bn_w50`` (16 to 128 channels; the previous benchmark's second base)."""
    return _vgg16_bn(0.25, num_classes, in_channels)


def vgg16_bn_w19(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: 3/8 of ``vgg16_bn_w50`` (12 to 96 channels)."""
    return _vgg16_bn(0.1875, num_classes, in_channels)


def vgg16_bn_w12(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: a quarter of ``vgg16_bn_w50`` (8 to 64 channels)."""
    return _vgg16_bn(0.125, num_classes, in_channels)
