"""CIFAR-style VGG-16 with batch normalization (Simonyan & Zisserman 2015, configuration D).

Thirteen 3x3 conv-BN-ReLU layers in five blocks, each block closed by a 2x2 max pool, then a global
average pool and one linear layer (the CIFAR variant popularised by network-slimming and
pytorch-cifar; the three 4096-wide ImageNet FC layers are dropped).

Design choice: the max pools use ``ceil_mode=True``. On 32x32 inputs this changes nothing
(32 -> 16 -> 8 -> 4 -> 2 -> 1), and it lets 28x28 inputs (Fashion-MNIST) keep a non-empty map
(28 -> 14 -> 7 -> 4 -> 2 -> 1) where floor pooling would reach 0x0 at the fifth pool.
"""
from __future__ import annotations

import torch
from torch import nn

from s2dnas.zoo._init import init_weights, scaled_widths
from s2dnas.zoo.registry import register_model

__all__ = ["CifarVGG", "VGG16_CFG", "vgg16_bn"]

#: Layer plan of VGG-16: an int is a 3x3 conv-BN-ReLU with that many output channels, ``"M"`` a max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class CifarVGG(nn.Module):
    """VGG trunk of conv-BN-ReLU layers and max pools, global average pool, linear head."""

    def __init__(
        self, cfg: tuple[int | str, ...], *, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        convs = scaled_widths(tuple(c for c in cfg if c != "M"), width_mult)  # type: ignore[misc]
        scaled = iter(convs)
        cfg = tuple(item if item == "M" else next(scaled) for item in cfg)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                assert isinstance(item, int), f"VGG cfg entries are ints or 'M', got {item!r}"
                layers += [
                    nn.Conv2d(channels, item, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk: ``(B, C_in, H, W) -> (B, 512, ceil(H/32), ceil(W/32))``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Head: global average pool and linear classifier, ``(B, 512, h, w) -> (B, K)``."""
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def vgg16_bn(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarVGG:
    """VGG-16 with batch normalization for 32x32 (or 28x28) inputs (14.7M parameters).

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels (1 for grey-scale, 3 for RGB).
        width_mult: Multiplier of every conv's width (rounded, at least 1), e.g. 0.25 for a
            16-to-128-channel VGG that trains on a CPU.

    Returns:
        The randomly initialised model.
    """
    return CifarVGG(VGG16_CFG, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
