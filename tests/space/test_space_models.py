"""Split/concat on every zoo model and on torchvision CNN families (issue 3, tests)."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from s2dnas import count_macs
from s2dnas.space import Space
from s2dnas.zoo import create_model, list_models

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn", "efficientnet_b0", "densenet121"]


def _randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine params, so an equivalence test is not trivially met."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def _model(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    if name.startswith("torchvision:"):
        model = torchvision.models.get_model(name.split(":")[1], num_classes=10, weights=None)
        return _randomize_norms(model), (3, 32, 32)
    return _randomize_norms(create_model(name, num_classes=10, in_channels=3)), (3, 32, 32)


MODELS = list_models() + [f"torchvision:{n}" for n in TORCHVISION]


@pytest.fixture(scope="module", params=MODELS)
def model_and_shape(request):
    torch.manual_seed(0)
    return _model(request.param)


def _check_stage_macs(space: Space, net) -> None:
    executed = net.stage_macs()
    assert executed == net.analytic_macs, "MACs counted by execution must equal the formula"
    base = space.base_macs()
    assert sum(executed) <= base, f"stages together cost {sum(executed)} > base {base}"
    assert all(m > 0 for m in executed)


def test_one_stage_reproduces_base(model_and_shape, seed):
    model, shape = model_and_shape
    x = torch.randn(3, *shape)
    space = Space(model, input_shape=shape, num_stages=1)
    net = space.build().eval()
    with torch.no_grad():
        ref = model(x)
        out = net(x)
    assert len(out) == 1
    scale = ref.abs().max().clamp_min(1.0)
    assert (out[0] - ref).abs().max() / scale <= 1e-4
    assert count_macs(model, torch.zeros(1, *shape)) == space.base_macs() == net.analytic_macs[0]


def test_sampled_architectures_build_run_and_cost(model_and_shape, seed):
    model, shape = model_and_shape
    space = Space(model, input_shape=shape, num_stages=3)
    x = torch.randn(2, *shape)
    g = torch.Generator().manual_seed(1)
    archs = [space.default_architecture()] + [space.sample(g) for _ in range(3)]
    for arch in archs:
        net = space.build(arch).eval()
        with torch.no_grad():
            outs = net(x)
        assert [tuple(o.shape) for o in outs] == [(2, 10)] * 3
        assert all(torch.isfinite(o).all() for o in outs)
        _check_stage_macs(space, net)


def test_causality_later_stages_do_not_change_earlier(model_and_shape, seed):
    model, shape = model_and_shape
    space = Space(model, input_shape=shape, num_stages=3)
    arch = space.sample(torch.Generator().manual_seed(7))
    net = space.build(arch).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        before = net(x)
        for p in net.stages[2].parameters():
            p.add_(torch.randn_like(p))
        for p in net.stages[1].parameters():
            p.add_(torch.randn_like(p))
        after = net(x)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert not torch.allclose(after[2], before[2])
