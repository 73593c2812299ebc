"""MAC counting: exact counts on hand-computable nets, published zoo sizes, golden values."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from s2dnas import ConfigError, create_model, list_models
from s2dnas.cost import conv2d_macs, count_macs, count_params, linear_macs

EXPECT = Path(__file__).resolve().parents[1] / "expect" / "macs.json"


@pytest.mark.parametrize(
    ("conv", "size", "out_size"),
    [
        (nn.Conv2d(3, 8, 3, padding=1), 8, 8),  # plain
        (nn.Conv2d(3, 8, (3, 1), stride=(2, 1), bias=False), 8, (3, 8)),  # non-square kernel and stride
        (nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4), 8, 4),  # grouped
        (nn.Conv2d(8, 8, 3, padding=1, groups=8), 8, 8),  # depthwise
        (nn.Conv2d(8, 16, 1), 8, 8),  # pointwise
    ],
)
def test_conv2d_macs_match_formula(conv: nn.Conv2d, size: int, out_size: int | tuple[int, int]) -> None:
    out_h, out_w = (out_size, out_size) if isinstance(out_size, int) else out_size
    expected = conv2d_macs(in_channels=conv.in_channels, out_channels=conv.out_channels,
                           kernel_size=conv.kernel_size, groups=conv.groups, out_h=out_h, out_w=out_w)
    assert count_macs(conv, torch.zeros(1, conv.in_channels, size, size)) == expected


def test_formulas_by_hand() -> None:
    assert conv2d_macs(in_channels=8, out_channels=16, kernel_size=3, groups=4, out_h=4, out_w=4) == 16 * 2 * 9 * 16
    assert conv2d_macs(in_channels=8, out_channels=8, kernel_size=3, groups=8, out_h=8, out_w=8) == 8 * 9 * 64
    assert linear_macs(in_features=20, out_features=5) == 100
    with pytest.raises(ConfigError, match="Expected `groups` to divide"):
        conv2d_macs(in_channels=8, out_channels=6, kernel_size=3, groups=4, out_h=1, out_w=1)


def test_conv1d_conv3d_and_linear() -> None:
    assert count_macs(nn.Conv1d(4, 6, 3, groups=2), torch.zeros(1, 4, 10)) == 6 * 2 * 3 * 8
    assert count_macs(nn.Conv3d(2, 4, 3), torch.zeros(1, 2, 5, 5, 5)) == 4 * 2 * 27 * 27
    assert count_macs(nn.Linear(20, 5), torch.zeros(1, 20)) == linear_macs(in_features=20, out_features=5)
    assert count_macs(nn.Linear(20, 5, bias=False), torch.zeros(1, 3, 20)) == 3 * 100  # 3 tokens


def _tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8x8 -> 8x8
        nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),  # not counted; -> 4x4
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise, 4x4
        nn.Flatten(), nn.Linear(8 * 16, 10),
    )


TINY_MACS = (
    conv2d_macs(in_channels=3, out_channels=8, kernel_size=3, groups=1, out_h=8, out_w=8)
    + conv2d_macs(in_channels=8, out_channels=8, kernel_size=3, groups=8, out_h=4, out_w=4)
    + linear_macs(in_features=128, out_features=10)
)


def test_sequential_sums_conv_and_linear_only(seed: int) -> None:
    net = _tiny_net()
    assert count_macs(net, torch.randn(1, 3, 8, 8)) == TINY_MACS == 13824 + 1152 + 1280


def test_count_scales_with_batch(seed: int) -> None:
    net = _tiny_net()
    assert count_macs(net, torch.randn(3, 3, 8, 8)) == 3 * count_macs(net, torch.randn(1, 3, 8, 8))


def test_per_module(seed: int) -> None:
    per = count_macs(_tiny_net(), torch.randn(1, 3, 8, 8), per_module=True)
    assert per == {"": TINY_MACS, "0": 13824, "4": 1152, "6": 1280}


def test_tuple_input_and_reused_module() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(a) + self.fc(b)  # the same layer runs twice: counted twice

    assert count_macs(TwoInputs(), (torch.zeros(1, 4), torch.zeros(1, 4))) == 2 * 8


def test_mode_is_restored_and_no_grad_recorded() -> None:
    net = _tiny_net().train()
    net[1].eval()  # a frozen BN inside a training model keeps its own flag
    count_macs(net, torch.randn(2, 3, 8, 8))
    assert net.training and net[0].training and not net[1].training
    assert all(p.grad is None for p in net.parameters())
    assert int(net[1].num_batches_tracked) == 0  # ran in eval mode: BN statistics untouched


def test_invalid_example_input_raises() -> None:
    with pytest.raises(ConfigError, match="Expected `example_input` to be a tensor or a tuple of tensors, but got list"):
        count_macs(nn.Linear(2, 2), [torch.zeros(1, 2)])  # type: ignore[arg-type]


def test_count_params() -> None:
    shared = nn.Linear(20, 5)
    assert count_params(shared) == 105
    assert count_params(nn.Sequential(shared, nn.ReLU(), shared)) == 105


# Published CIFAR ResNet sizes (He et al. 2016, option A); option B adds a few 1x1 projections.
@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [("resnet20", 0.27e6, 40.6e6), ("resnet56", 0.85e6, 125.5e6), ("resnet110", 1.7e6, 253e6)],
)
def test_published_resnet_sizes(name: str, params: float, macs: float) -> None:
    model = create_model(name)
    # "0.27M" / "1.7M" are rounded: allow 1.5% or half a unit of the last published digit.
    assert count_params(model) == pytest.approx(params, rel=0.015, abs=0.05e6 if params >= 1e6 else 0)
    assert count_macs(model, torch.zeros(1, 3, 32, 32)) == pytest.approx(macs, rel=0.015)


def _hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Independent counter: the analytic formulas applied to each Conv2d/Linear's output shape."""
    total = 0

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += out.shape[0] * conv2d_macs(
                in_channels=module.in_channels, out_channels=module.out_channels, kernel_size=module.kernel_size,
                groups=module.groups, out_h=out.shape[2], out_w=out.shape[3])
        else:
            total += out.numel() // module.out_features * linear_macs(
                in_features=module.in_features, out_features=module.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _load_expect() -> dict[str, dict[str, int]]:
    return json.loads(EXPECT.read_text()) if EXPECT.is_file() else {}


@pytest.mark.parametrize("name", list_models())
def test_golden_macs(name: str) -> None:
    """Params and MACs at 1x3x32x32, 10 classes; regenerate with ``S2DNAS_ACCEPT=1`` after review."""
    model = create_model(name)
    x = torch.zeros(1, 3, 32, 32)
    actual = {"params": count_params(model), "macs": count_macs(model, x)}
    assert actual["macs"] == _hook_macs(model, x)  # the counter by execution agrees with the formulas
    if os.environ.get("S2DNAS_ACCEPT") == "1":
        expect = _load_expect()
        expect[name] = actual
        EXPECT.parent.mkdir(parents=True, exist_ok=True)
        EXPECT.write_text(json.dumps(dict(sorted(expect.items())), indent=2) + "\n")
        return
    expected = _load_expect().get(name)
    assert expected is not None, f"{name} is missing from {EXPECT}; run with S2DNAS_ACCEPT=1 to add it"
    assert actual == expected
