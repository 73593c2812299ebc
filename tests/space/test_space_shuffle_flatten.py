"""The stage channel mapping through a channel shuffle and a flatten (``dim_indices``: gather + repeat).

The reference is independent of build.py: the base channel of every feature is read off a tensor of
channel ids pushed through ``F.channel_shuffle`` and ``repeat_interleave`` (what ``flatten`` does to a
``(C, H, W)`` map: channel ``c`` becomes features ``c*H*W .. (c+1)*H*W - 1``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2dnas.space import Space
from s2dnas.space.build import dim_indices

C, HW = 12, 4 * 4


class ShuffleFlatten(nn.Module):
    """conv -> BN -> ReLU -> channel shuffle -> flatten -> linear head."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.bn = nn.BatchNorm2d(C)
        self.fc = nn.Linear(C * HW, 5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.channel_shuffle(F.relu(self.bn(self.conv(x))), self.groups), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("groups", [3, 1])  # 3: every part one channel; 1: no reordering, one wide part
def test_head_columns_follow_the_shuffled_and_flattened_channels(groups, num_stages, seed):
    model = ShuffleFlatten(groups).eval()
    with torch.no_grad():  # distinct BN scales: importance ordering gives non-contiguous stage channels
        model.bn.weight.copy_(torch.rand(C) + 0.1)
    space = Space(model, input_shape=(3, 4, 4), num_stages=num_stages)
    analysis = space.analysis
    head = analysis.mixing[analysis.head]
    conv_cls = analysis.mixing["conv"].out_cls
    assert all(p.repeat == HW for p in head.in_dim.parts)
    assert len(head.in_dim.parts) == (C if groups > 1 else 1)

    shuffled = F.channel_shuffle(torch.arange(C, dtype=torch.float32).view(1, C, 1, 1), groups).flatten().long()
    channel_of_feature = shuffled.repeat_interleave(HW)  # (C * HW,)
    arch = space.sample(torch.Generator().manual_seed(3))
    seen = []
    for indices in space.stage_indices(arch):
        own = indices[conv_cls]
        expected = torch.nonzero(torch.isin(channel_of_feature, own)).flatten()
        assert torch.equal(dim_indices(analysis, head.in_dim, indices), expected)
        seen.append(expected)
    assert torch.equal(torch.sort(torch.cat(seen)).values, torch.arange(C * HW))  # every feature once

    # End to end: stage 1 reads the image whole, so its logits are the base head on its own features
    # (a sum over the columns, whatever their order; the stage's weights follow dim_indices' order).
    x = torch.randn(2, 3, 4, 4)
    net = space.build(arch).eval()
    cols = dim_indices(analysis, head.in_dim, space.stage_indices(arch)[0])
    with torch.no_grad():
        want = model.features(x)[:, cols] @ model.fc.weight[:, cols].T + model.fc.bias
        torch.testing.assert_close(net(x)[0], want, rtol=1e-5, atol=1e-5)
