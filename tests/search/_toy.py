"""The toy CNN the search tests share: two conv-BN-ReLU blocks at two resolutions, so its space
has two split groups; traceable; 1x8x8 inputs."""
from __future__ import annotations

import torch
from torch import nn


class ToyCNN(nn.Module):
    """Two conv-bn-relu blocks at two resolutions (two split groups), pooling, a linear head."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
