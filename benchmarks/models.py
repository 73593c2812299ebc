"""Models of the method benchmark that are not plain zoo names.

``s2dnas`` builds user models from ``package.module:factory`` references, so these are named
``benchmarks.models:<factory>`` in commands, configs and weights metadata (run from the repository
root, or with it on ``PYTHONPATH``).
"""
from __future__ import annotations

from torch import nn

from s2dnas.zoo import create_model

__all__ = ["vgg16_bn_w25", "resnet20_w50", "resnet20_w75", "vgg16_bn_w12", "vgg16_bn_w19"]


def vgg16_bn_w25(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG-16-BN at a quarter of its width (16 to 128 channels, 16.8M MACs at 28x28), the second
    base model: the full-width one (268M MACs) cannot be trained on the 2-core benchmark machine."""
    return create_model("vgg16_bn", num_classes=num_classes, in_channels=in_channels, width_mult=0.25)


def resnet20_w50(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: ResNet-20 at half width (8/16/32 channels)."""
    return create_model("resnet20", num_classes=num_classes, in_channels=in_channels, width_mult=0.5)


def resnet20_w75(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: ResNet-20 at three quarters of its width (12/24/48 channels)."""
    return create_model("resnet20", num_classes=num_classes, in_channels=in_channels, width_mult=0.75)


def vgg16_bn_w12(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: half of ``vgg16_bn_w25`` (8 to 64 channels)."""
    return create_model("vgg16_bn", num_classes=num_classes, in_channels=in_channels, width_mult=0.125)


def vgg16_bn_w19(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Static baseline: three quarters of ``vgg16_bn_w25`` (12 to 96 channels)."""
    return create_model("vgg16_bn", num_classes=num_classes, in_channels=in_channels, width_mult=0.1875)
