"""Base models of the method benchmark that are not plain zoo names.

``s2dnas`` builds user models from ``package.module:factory`` references, so the second family
of the benchmark is named ``benchmarks.models:vgg16_bn_w25`` in configs and weights metadata.
"""
from __future__ import annotations

from torch import nn

from s2dnas.zoo import create_model

__all__ = ["vgg16_bn_w25"]


def vgg16_bn_w25(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG-16-BN at a quarter of its width (16 to 128 channels, 16.8M MACs at 28x28): the
    full-width model (268M MACs) cannot be trained on the 2-core benchmark machine in time."""
    return create_model("vgg16_bn", num_classes=num_classes, in_channels=in_channels, width_mult=0.25)
