"""CIFAR-style MobileNetV2 (Sandler et al. 2018) for 32x32 inputs.

The inverted-residual settings are those of the paper (table 2). As is common for CIFAR
(pytorch-cifar), the two earliest downsamplings are removed: the stem is a stride-1 3x3 conv and the
first stride-2 stage (24 channels) uses stride 1, so a 32x32 input is downsampled three times,
32 -> 16 -> 8 -> 4, and the final 1x1 conv to 1280 channels sees a 4x4 map.

Every layer is a module (``nn.ReLU6``, ``nn.Conv2d``...) and the residual decision is a Python
attribute fixed at construction, so the model traces with ``torch.fx.symbolic_trace``.
"""
from __future__ import annotations

import torch
from torch import nn

from s2dnas.errors import ConfigError
from s2dnas.zoo._init import init_weights
from s2dnas.zoo.registry import register_model

__all__ = ["ConvBNReLU6", "InvertedResidual", "CifarMobileNetV2", "CIFAR_INVERTED_RESIDUAL_SETTING", "mobilenetv2"]

#: ``(expand_ratio t, out_channels c, repeats n, first stride s)`` per stage; the paper's table 2
#: with the 24-channel stage at stride 1 instead of 2 (CIFAR).
CIFAR_INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # paper: stride 2
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going down by more than 10%."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias), BatchNorm2d and ReLU6; ``groups=in_planes`` makes it depthwise."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), with a residual add when shapes match."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_planes * expand_ratio))
        # Fixed at construction, so fx tracing sees a constant branch.
        self.use_residual = stride == 1 and in_planes == out_planes
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_planes, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, kernel_size=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 trunk (``features``), global average pool, dropout and linear ``classifier``."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ConfigError(f"Expected `width_mult` > 0, but got {width_mult}; pass e.g. 0.5, 1.0 or 1.4")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"Expected `dropout` in [0, 1), but got {dropout}; pass e.g. 0.2")
        stem_channels = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, stem_channels, kernel_size=3, stride=1)]
        channels = stem_channels
        for t, c, n, s in CIFAR_INVERTED_RESIDUAL_SETTING:
            out_channels = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
        layers.append(ConvBNReLU6(channels, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk: ``(B, C_in, H, W) -> (B, last_channel, H/8, W/8)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Head: global average pool, dropout and linear classifier, ``(B, C, h, w) -> (B, K)``."""
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def mobilenetv2(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarMobileNetV2:
    """MobileNetV2 for 32x32 inputs (2.2M parameters at ``width_mult=1.0``).

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels (1 for grey-scale, 3 for RGB).
        width_mult: Multiplier of every layer's width (rounded to multiples of 8); the final
            1280-channel layer only grows, never shrinks.

    Returns:
        The randomly initialised model.

    Raises:
        ConfigError: If ``width_mult`` is not positive.
    """
    return CifarMobileNetV2(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
