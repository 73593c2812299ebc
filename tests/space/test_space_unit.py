"""Unit tests of the space: channel partitions, ties, importance, architectures, errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2dnas.errors import ConfigError, InvalidArchitectureError, TransformError, UnsupportedModelError
from s2dnas.space import Architecture, Space
from s2dnas.space.modules import SharedBatchNorm, SharedConv2d, SharedLinear
from s2dnas.space.space import compositions
from s2dnas.zoo import create_model


class ToyNet(nn.Module):
    """Two resolutions, a residual add, a depthwise conv, a grouped conv, a channel cat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.pw = nn.Conv2d(16, 16, 1, bias=True)
        self.gc = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)
        self.down = nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.side = nn.Conv2d(16, 8, 1, stride=2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = x + self.pw(F.relu(self.dw(x)))
        x = F.relu(self.gc(x))
        x = torch.cat([self.down(x), self.side(x)], dim=1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_compositions():
    assert compositions(4, 2) == [(1, 3), (2, 2), (3, 1)]
    assert len(compositions(8, 3)) == 21
    assert all(sum(c) == 8 and min(c) >= 1 for c in compositions(8, 3))


def test_toy_ties_and_partitions(seed):
    model = ToyNet().eval()
    space = Space(model, input_shape=(3, 8, 8), num_stages=3, ratio_grid=8)
    assert space.num_groups == 2
    a = space.analysis
    # stem output and pw output are tied by the residual add (one class, 16 channels);
    # gc ties in/out with granularity 4; down and side are separate classes concatenated.
    stem_cls = a.mixing["stem"].out_cls
    assert a.mixing["pw"].out_cls == stem_cls
    assert a.classes[stem_cls].granularity == 4
    assert a.dims["cat"].parts[0].cls == a.mixing["down"].out_cls
    assert a.dims["cat"].parts[1].cls == a.mixing["side"].out_cls
    for arch in [space.default_architecture()] + [space.sample(torch.Generator().manual_seed(i)) for i in range(20)]:
        per_stage = space.stage_indices(arch)
        for cid, cls in a.classes.items():
            idx = torch.cat([per_stage[s][cid] for s in range(3)])
            assert sorted(idx.tolist()) == list(range(cls.size)), "channels must be conserved"
            for s in range(3):
                assert len(per_stage[s][cid]) >= 1
                assert len(per_stage[s][cid]) % cls.granularity == 0
        net = space.build(arch).eval()
        assert net.stage_macs() == net.analytic_macs
        assert sum(net.analytic_macs) <= space.base_macs()


def test_toy_one_stage_equivalence(seed):
    model = ToyNet().eval()
    x = torch.randn(4, 3, 8, 8)
    net = Space(model, input_shape=(3, 8, 8), num_stages=1).build().eval()
    torch.testing.assert_close(net(x)[0], model(x), rtol=0, atol=1e-5)


def test_split_sizes_follow_ratios(seed):
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    space = Space(model, input_shape=(1, 16, 16), num_stages=3)
    arch = space.architecture(splits=[(2, 2, 4), (1, 3, 4), (4, 2, 2)], concat=[0, 0])
    per_stage = space.stage_indices(arch)
    sizes = {}
    for cid, cls in space.analysis.classes.items():
        sizes.setdefault(cls.size, set()).add(tuple(len(per_stage[s][cid]) for s in range(3)))
    assert sizes[16] == {(4, 4, 8)}
    assert sizes[32] == {(4, 12, 16)}
    assert sizes[64] == {(32, 16, 16)}


def test_importance_ordering_puts_strongest_filters_first(seed):
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.arange(16, dtype=torch.float))  # channel 15 strongest
    space = Space(model, input_shape=(1, 16, 16), num_stages=2, ratio_grid=4, importance="bn")
    arch = space.architecture(splits=[(1, 3)] * space.num_groups, concat=[0])
    stem_cls = space.analysis.mixing["conv1"].out_cls
    # stem class is tied to layer1's residual stream: its BN scores are summed; make them equal elsewhere
    scores = space._scores[stem_cls]
    top = torch.argsort(-scores, stable=True)[:4].sort().values
    assert torch.equal(space.stage_indices(arch)[0][stem_cls], top)
    plain = Space(model, input_shape=(1, 16, 16), num_stages=2, ratio_grid=4, importance="none")
    assert plain.stage_indices(arch)[0][stem_cls].tolist() == [0, 1, 2, 3]


def test_concat_positions_change_what_stages_read(seed):
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    space = Space(model, input_shape=(1, 16, 16), num_stages=3)
    full = space.build(space.architecture(splits=[(2, 2, 4)], concat=[0, 0]))
    none = space.build(space.architecture(splits=[(2, 2, 4)], concat=[3, 3]))
    late = space.build(space.architecture(splits=[(2, 2, 4)], concat=[2, 3]))
    # without concat only the classifier reads earlier stages (the pooled features)
    assert none.reads[1] == ["flatten@0"] and none.reads[2] == ["flatten@0", "flatten@1"]
    assert len(full.reads[1]) > len(late.reads[1]) > len(none.reads[1])
    assert late.reads[2] == none.reads[2]
    assert none.analytic_macs[2] < full.analytic_macs[2]
    # stage 1 is the same network whatever the concat positions of later stages
    assert none.analytic_macs[0] == full.analytic_macs[0]


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])  # mobilenetv2: depthwise (grouped) convs
def test_shared_weights_equal_copied_weights(seed, name):
    model = create_model(name, num_classes=10, in_channels=1).eval()
    space = Space(model, input_shape=(1, 16, 16), num_stages=3)
    arch = space.sample(torch.Generator().manual_seed(3))
    copied = space.build(arch).train()
    shared = space.build(arch, share_weights=True).train()
    for m in [*copied.modules(), *shared.modules()]:
        if isinstance(m, nn.Dropout):  # mobilenetv2's classifier: no randomness between the two
            m.p = 0.0
    x = torch.randn(8, 1, 16, 16)
    for a, b in zip(copied(x), shared(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the base's gradient through the shared views is the copies' gradients put back at their slices
    copied.zero_grad()
    sum(o.square().sum() for o in copied(x)).backward()
    sum(o.square().sum() for o in shared(x)).backward()
    expected = {id(p): torch.zeros_like(p) for p in model.parameters()}
    views = 0
    for cstage, sstage in zip(copied.stages, shared.stages):
        copies = dict(cstage.named_modules())
        for module_name, view in sstage.named_modules():
            if not isinstance(view, (SharedConv2d, SharedLinear, SharedBatchNorm)):
                continue
            views += 1
            copy, base = copies[module_name], view.base
            grad = copy.weight.grad
            if base.weight.dim() > 1 and getattr(base, "groups", 1) == 1:  # conv / linear: rows and columns
                grad = torch.zeros(len(view.out_idx), *base.weight.shape[1:]).index_copy_(1, view.in_idx, grad)
            expected[id(base.weight)].index_add_(0, view.out_idx, grad)
            if base.bias is not None:
                expected[id(base.bias)].index_add_(0, view.out_idx, copy.bias.grad)
    assert views > 20
    for pname, p in model.named_parameters():  # a parameter no view reached has no gradient: zero expected
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(grad, expected[id(p)], rtol=1e-4, atol=1e-4, msg=pname)
    assert sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None) > 0


def test_architecture_json_round_trip_and_errors(tmp_path):
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    space = Space(model, input_shape=(1, 16, 16), num_stages=3, model_name="resnet20")
    arch = space.sample(torch.Generator().manual_seed(0))
    path = tmp_path / "arch.json"
    arch.save(path)
    assert Architecture.load(path) == arch
    assert space.from_sample(space.to_sample(arch)) == arch
    data = json.loads(path.read_text())
    data["splits"][0] = [1, 1, 1]
    with pytest.raises(InvalidArchitectureError, match=r"splits\[0\].*summing to ratio_grid=8"):
        Architecture.from_dict(data)
    with pytest.raises(InvalidArchitectureError, match="Malformed architecture JSON"):
        Architecture.from_json("{not json")
    with pytest.raises(InvalidArchitectureError, match="Missing field"):
        Architecture.from_dict({"num_stages": 3})
    with pytest.raises(InvalidArchitectureError, match=r"concat\[0\].*0\.\.3"):
        Architecture(num_stages=3, ratio_grid=8, splits=((2, 2, 4),) * 3, concat=(4, 0))
    two = Space(model, input_shape=(1, 16, 16), num_stages=2)
    with pytest.raises(InvalidArchitectureError, match="3 stages but the space has 2"):
        two.build(arch)
    other = Space(create_model("resnet32", num_classes=10, in_channels=1), input_shape=(1, 16, 16))
    with pytest.raises(InvalidArchitectureError, match="another model"):
        other.build(arch)


def test_invalid_options_listed_together():
    model = create_model("resnet20", num_classes=10, in_channels=1)
    with pytest.raises(ConfigError) as err:
        Space(model, input_shape=(1, 16, 16), num_stages=0, importance="magic", groups="layers")
    msg = str(err.value)
    assert "num_stages" in msg and "importance" in msg and "groups" in msg


def test_too_many_stages_for_narrow_layer():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    with pytest.raises(TransformError, match="cannot be split into 3 stages"):
        Space(model, input_shape=(3, 8, 8), num_stages=3)


def test_finer_groups(seed):
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    coarse = Space(model, input_shape=(1, 16, 16), num_stages=3)
    fine = Space(model, input_shape=(1, 16, 16), num_stages=3, groups="resolution:2")
    assert fine.num_groups == 2 * coarse.num_groups
    net = fine.build(fine.sample(torch.Generator().manual_seed(0)))
    assert net.stage_macs() == net.analytic_macs


class _Repeat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        x = self.conv(x)
        return self.fc(x.mean((2, 3)).repeat(1, 2))  # copies channels: no stage could own them


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # data-dependent control flow cannot be traced
            x = x * 2
        return self.fc(x.mean((2, 3)))


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        f = self.conv(x).mean((2, 3))
        return self.fc(f), f


def test_unsupported_models_name_the_node():
    with pytest.raises(UnsupportedModelError, match=r"node 'repeat'.*'repeat' is not supported"):
        Space(_Repeat(), input_shape=(3, 8, 8))
    with pytest.raises(UnsupportedModelError, match="Cannot trace _Branchy.*leaf module.*torch.fx.wrap"):
        Space(_Branchy(), input_shape=(3, 8, 8))
    with pytest.raises(UnsupportedModelError, match="node 'output'.*return only the classifier's output"):
        Space(_TwoOutputs(), input_shape=(3, 8, 8))


class _DropoutHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = x.relu_()  # an in-place method: stages must not overwrite what they cache
        return self.fc(self.drop(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


def test_stages_do_not_share_mode_or_padding_with_the_base(seed):
    model = _DropoutHead().eval()
    space = Space(model, input_shape=(3, 8, 8), num_stages=2, ratio_grid=4)
    net = space.build(space.default_architecture())
    net.train()  # must not switch the base model's (the teacher's) dropout on
    assert not model.drop.training
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(model(x), model(x))
    # shared (one-shot) convolutions honour reflect padding like the copied ones
    copied = space.build(space.default_architecture()).train()
    shared = space.build(space.default_architecture(), share_weights=True).train()
    for m in (copied, shared):
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0
    for a, b in zip(copied(x), shared(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert all("relu_" not in str(n.target) for st in net.stages for n in st.graph.nodes)
    assert shared.stage_macs() == shared.analytic_macs


def test_architecture_on_another_ratio_grid_is_refused():
    model = create_model("resnet20", num_classes=10, in_channels=1)
    space = Space(model, input_shape=(1, 16, 16), num_stages=3)
    arch = Architecture(num_stages=3, ratio_grid=4, splits=((1, 1, 2),) * 3, concat=(0, 0))
    with pytest.raises(InvalidArchitectureError, match="ratio grid q=8"):
        space.build(arch)


def test_double_precision_model_builds(seed):
    model = create_model("resnet20", num_classes=10, in_channels=1).double().eval()
    net = Space(model, input_shape=(1, 8, 8), num_stages=2).build().eval()
    assert all(o.dtype == torch.float64 for o in net(torch.randn(2, 1, 8, 8, dtype=torch.float64)))
