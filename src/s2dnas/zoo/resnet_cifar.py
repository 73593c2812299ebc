"""CIFAR-style ResNets (He et al. 2016, section 4.2): ResNet-20/32/44/56/110.

Three stages of ``n`` basic blocks with 16, 32 and 64 channels (times ``width_mult``, rounded, at least 1). Shortcuts use **option B**: identity
where shapes match, a 1x1 convolution + BN projection where the stride or width changes. Option A
(zero-padding the channels) moves channels between positions, which a channel split cannot follow
stage by stage; option B costs 2.6k extra parameters and 0.26M extra MACs at 32x32 for ResNet-20.
"""
from __future__ import annotations

import torch
from torch import nn

from s2dnas.zoo._init import init_weights, scaled_widths
from s2dnas.zoo.registry import register_model

__all__ = ["CifarResNet", "BasicBlock", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stem, three stages, global average pool, linear head."""

    def __init__(self, depth: int, *, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"Expected depth = 6n + 2 (20, 32, 44, 56, 110), but got {depth}")
        widths = scaled_widths((16, 32, 64), width_mult)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers = []
        in_planes = widths[0]
        for planes, stride in zip(widths, (1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        init_weights(self, linear=False)  # the recipe of the shipped weights: default linear init

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk: ``(B, C_in, H, W) -> (B, 64, H/4, W/4)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Head: global average pool and linear classifier, ``(B, 64, h, w) -> (B, K)``."""
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _resnet(depth: int, *, num_classes: int, in_channels: int, width_mult: float) -> CifarResNet:
    return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model
def resnet20(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-20 for 32x32 inputs (0.27M parameters at ``width_mult=1``; widths 16/32/64 times it)."""
    return _resnet(20, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model
def resnet32(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-32 for 32x32 inputs (0.46M parameters)."""
    return _resnet(32, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model
def resnet44(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-44 for 32x32 inputs (0.66M parameters)."""
    return _resnet(44, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model
def resnet56(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-56 for 32x32 inputs (0.85M parameters)."""
    return _resnet(56, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model
def resnet110(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-110 for 32x32 inputs (1.7M parameters)."""
    return _resnet(110, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
