"""Users' own idioms (issue 15 item 3, issue 17 item 7): each builds correctly or is refused by name.

"Correctly" is checked three ways on tiny random models: S=1 reproduces the base logits; for
S=2 and 3 every stage of a split-only architecture equals the masked-base reference
(tests/graph/reference.py); the default architecture runs, with MACs by execution equal to the
formula and no more than the base.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2dnas.errors import UnsupportedModelError
from s2dnas.space import Space
from tests.graph.reference import masked_logits, split_only

SHAPE = (3, 16, 16)


def _randomize(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def check(model: nn.Module, *, reference: bool = True, stages: tuple[int, ...] = (2, 3)) -> list[Space]:
    model = _randomize(model)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        ref = model(x)
        one = Space(model, input_shape=SHAPE, num_stages=1).build().eval()(x)[0]
    torch.testing.assert_close(one, ref, rtol=1e-5, atol=1e-5)
    spaces = []
    for num_stages in stages:
        space = Space(model, input_shape=SHAPE, num_stages=num_stages)
        for arch in (space.default_architecture(), space.sample(torch.Generator().manual_seed(3))):
            net = space.build(arch).eval()
            with torch.no_grad():
                assert [tuple(o.shape) for o in net(x)] == [tuple(ref.shape)] * num_stages
            macs = net.stage_macs()
            assert macs == net.analytic_macs
            assert sum(macs) <= space.base_macs()
        if reference:
            arch = split_only(space, [space.sample(torch.Generator().manual_seed(5)).splits[0]])
            with torch.no_grad():
                got = space.build(arch).eval()(x)
            for stage, (a, b) in enumerate(zip(got, masked_logits(space, arch, x))):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"stage {stage + 1}")
        spaces.append(space)
    return spaces


class Functional(nn.Module):
    """F.relu, torch.flatten, x.mean((2, 3)), x.view(x.size(0), -1), nested Sequentials, a two-Linear head."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.body = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)),
                                  nn.Sequential(nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1))))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(12, 10),
                                  nn.ReLU(), nn.Linear(10, 4))
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.body(x))
        if self.pool == "head":
            return self.head(x)
        if self.pool == "mean":
            return self.fc(x.mean((2, 3)))
        if self.pool == "view":
            return self.fc(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1))
        if self.pool == "squeeze":
            return self.fc(F.adaptive_avg_pool2d(x, 1).squeeze(-1).squeeze(-1))
        if self.pool == "amax":
            return self.fc(torch.amax(x, dim=(2, 3)))
        return self.fc(torch.flatten(F.adaptive_max_pool2d(x, 1), 1))


@pytest.mark.parametrize("pool", ["head", "mean", "view", "squeeze", "amax", "flatten"])
def test_functional_ops_and_heads(pool, seed):
    check(Functional(pool))


class SE(nn.Module):
    """A squeeze-and-excitation gate written with nn.Linear, expanded to (B, C, 1, 1) four ways."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = nn.Linear(16, 4)
        self.fc2 = nn.Linear(4, 16)
        self.proj = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        if self.form == "none":
            s = s[:, :, None, None]
        elif self.form == "unsqueeze":
            s = s.unsqueeze(-1).unsqueeze(-1)
        elif self.form == "view":
            s = s.view(x.size(0), -1, 1, 1)
        else:
            s = s.reshape(s.shape[0], s.shape[1], 1, 1)
        x = self.proj(x * s)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("form", ["none", "unsqueeze", "view", "reshape"])
def test_se_gates(form, seed):
    check(SE(form))


class Slices(nn.Module):
    """Channel slices, chunk, split and a reversed chunk concatenated back (issue 17 item 7)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.mix = nn.Conv2d(16, 16, 3, padding=1)  # dense: the split saves more than the extra heads cost
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        t = F.relu(self.stem(x))
        if self.kind == "slice":
            t = torch.cat([t[:, :8], self.a(t[:, 8:])], 1)
        elif self.kind == "chunk":
            x1, x2 = t.chunk(2, dim=1)
            t = torch.cat((x2, self.a(x1)), dim=1)
        elif self.kind == "split":
            p, q = torch.split(t, [12, 4], dim=1)
            t = torch.cat([p, self.b(q)], 1)
        elif self.kind == "reverse":
            t = torch.cat(torch.chunk(t, 2, 1)[::-1], 1)
        elif self.kind == "ghost":  # GhostNet: cat of a conv and its cheap copy, cut back to width
            t = torch.cat([t, self.a(t[:, :8])], 1)[:, :16, :, :]
        return self.fc(F.relu(self.mix(t)).mean((2, 3)))


@pytest.mark.parametrize("kind", ["slice", "chunk", "split", "reverse", "ghost"])
def test_channel_slices_chunks_splits(kind, seed):
    check(Slices(kind))


def test_a_sliced_class_is_shared_out_per_range(seed):
    space = check(Slices("slice"), stages=(3,))[0]
    stem = space.analysis.mixing["stem"].out_cls
    assert space.analysis.classes[stem].segments == ((0, 8), (8, 16))
    for indices in space.stage_indices(space.default_architecture()):
        own = indices[stem]
        assert 0 < int((own < 8).sum()) and 0 < int((own >= 8).sum())  # every stage gets both halves


class Shuffle(nn.Module):
    """ShuffleNet-v2-like units: split, branch, concat, shuffle by view/transpose/view."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                                    nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8))
                                      for _ in range(3))
        self.fc = nn.Linear(16, 4)

    def shuffle(self, x):
        if self.functional:
            return F.channel_shuffle(x, 2)
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(b, c, h, w)

    def forward(self, x):
        x = self.stem(x)
        for branch in self.branches:
            x1, x2 = x.chunk(2, dim=1)
            x = self.shuffle(torch.cat((x1, branch(x2)), dim=1))
        return self.fc(x.mean([2, 3]))


@pytest.mark.parametrize("functional", [False, True])
def test_channel_shuffle(functional, seed):
    check(Shuffle(functional))


class Dense(nn.Module):
    """DenseNet-like: the input and each layer's output concatenated; a 1x1 projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(9, 6, 3, padding=1)
        self.down = nn.Conv2d(15, 12, 3, stride=2, padding=1)
        self.proj = nn.Conv2d(15, 12, 1, stride=2)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.cat([x, F.relu(self.c1(x))], 1)
        x = torch.cat([x, F.relu(self.c2(x))], 1)
        x = F.relu(self.down(x) + self.proj(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_concat_of_the_input_and_projection_shortcuts(seed):
    check(Dense())


class ChannelsLast(nn.Module):
    """ConvNeXt-like block: depthwise conv, permute, LayerNorm + Linear over channels, layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 2, stride=2)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.norm = nn.LayerNorm(12)
        self.fc1 = nn.Linear(12, 24)
        self.fc2 = nn.Linear(24, 12)
        self.gamma = nn.Parameter(torch.rand(12))
        self.head_norm = nn.LayerNorm(12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        x = x + self.gamma.reshape(1, -1, 1, 1) * y.permute(0, 3, 1, 2)
        return self.fc(self.head_norm(x.mean((2, 3))))


def test_channels_last_blocks(seed):
    (space,) = check(ChannelsLast(), reference=False, stages=(3,))
    assert {space.analysis.mixing[n].group for n in ("fc1", "fc2")} == {space.analysis.mixing["stem"].group}


class FewGroups(nn.Module):
    """A grouped conv with 2 whole groups asked for 3 stages: one stage gets none (degrade)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.b(F.relu(self.bn(self.g(F.relu(self.a(x))))))
        return self.fc(x.mean((2, 3)))


def test_too_few_groups_degrade_to_fewer_slices(seed):
    (space,) = check(FewGroups(), stages=(3,))
    cls = space.analysis.mixing["a"].out_cls
    sizes = [len(i[cls]) for i in space.stage_indices(space.default_architecture())]
    assert sorted(sizes) == [0, 4, 4] and sizes[0] == 4


class ConvHead(nn.Module):
    """SqueezeNet-like: a 1x1 conv classifier, ReLU, global pooling, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2)
        self.cls = nn.Conv2d(32, 5, 1)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv(x))))
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.cls(x)), 1), 1)


def test_convolutional_classifier_head(seed):
    (space,) = check(ConvHead(), reference=False, stages=(3,))
    assert space.analysis.head == "cls" and space.analysis.mixing["cls"].is_head


class Refused(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv(x)
        if self.kind == "max":
            return self.fc(x.flatten(2).max(2)[0])
        if self.kind == "attention":
            x = x * torch.sigmoid(x.mean(1, keepdim=True))
        if self.kind == "stride":
            x = torch.cat([x[:, ::2], x[:, 1::2]], 1)
        if self.kind == "index":
            x = x * x[:, 2].unsqueeze(1)
        if self.kind == "input":
            x = x[:, :, 1:-1, 1:-1] * x.sum()  # a spatial crop is fine; a sum over everything is not
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("kind, node, hint", [
    ("max", "max_1", "use x.amax"),
    ("attention", "mean", "only reductions over spatial"),
    ("stride", "getitem", "strided channel slice"),
    ("index", "getitem", "use a slice t\\[:, i:i \\+ 1\\]"),
    ("input", "sum_1", "reduction over the channels"),
])
def test_refused_idioms_name_the_node_and_the_rewrite(kind, node, hint):
    """A typed refusal (an S2DNASError), never a raw Python error (issue 17: `'Node' object is not iterable`)."""
    with pytest.raises(UnsupportedModelError, match=f"node '{node}'.*{hint}"):
        Space(Refused(kind).eval(), input_shape=SHAPE)


class MixedGate(nn.Module):
    """MixNet / GhostNet / CSP / DPN idioms: an SE gate over concatenated branches, and residuals
    that add a slice of one tensor to a conv output (ties cut classes into sub-classes)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.b3 = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.b5 = nn.Conv2d(6, 6, 5, padding=2, groups=6)
        self.gate = nn.Conv2d(12, 12, 1)
        self.narrow = nn.Conv2d(12, 6, 3, padding=1)
        self.mix = nn.Conv2d(12, 12, 3, padding=1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        t = F.relu(self.stem(x))
        if self.kind == "gate":  # MixNet: mixed depthwise kernels, then a gate of another class
            p, q = torch.split(t, [6, 6], 1)
            t = torch.cat([self.b3(p), self.b5(q)], 1)
            t = t * torch.sigmoid(self.gate(t.mean((2, 3), keepdim=True)))
        else:  # DPN / CSP: the first half of t continues as a residual of a narrower conv
            t = torch.cat([t[:, :6] + self.narrow(t), t[:, 6:]], 1)
        return self.fc(F.relu(self.mix(t)).mean((2, 3)))


@pytest.mark.parametrize("kind", ["gate", "residual"])
def test_ties_between_different_layouts_cut_classes(kind, seed):
    (space, _) = check(MixedGate(kind))
    stem = space.analysis.mixing["stem"].out_dim
    assert [(p.lo, p.hi) for p in stem.parts] == [(0, 6), (0, 6)]  # the stem's 12 channels: two classes
    assert len({p.cls for p in stem.parts}) == 2


class _Linear(nn.Linear):
    """timm's Linear: an nn.Linear subclass whose forward fx traces into F.linear."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class _BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: F.batch_norm on the module's own parameters, then an activation."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return F.relu(x)


class Functional2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = _BatchNormAct(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = _Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv2(self.bn(self.conv(x))).mean((2, 3)))


def test_functional_norms_and_linears_of_module_subclasses(seed):
    (space, _) = check(Functional2())
    net = space.build()
    stage = net.stages[0]
    assert type(stage.get_submodule("bn_fn")) is nn.BatchNorm2d  # the plain norm; the ReLU stays a node
    assert space.analysis.mixing["linear"].is_head and space.analysis.targets["linear"] == "fc"


@pytest.mark.parametrize("make", [ChannelsLast, lambda: MixedGate("gate"), lambda: Slices("reverse")])
def test_shared_weights_equal_copied_weights_on_new_patterns(make, seed):
    """The one-shot super-network slices layer norms, layer scales and gathers like the copies."""
    model = make().eval()
    space = Space(model, input_shape=SHAPE, num_stages=3)
    arch = space.sample(torch.Generator().manual_seed(2))
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        copied = space.build(arch).eval()(x)
        shared = space.build(arch, share_weights=True).eval()(x)
    for a, b in zip(copied, shared):
        torch.testing.assert_close(a, b)
    model(x).sum().backward()
    used = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    sum(o.sum() for o in space.build(arch, share_weights=True)(x)).backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == used  # gradients reach the base



class StochasticResidual(nn.Module):
    """A residual branch through torchvision's ``StochasticDepth`` (EfficientNet's and ConvNeXt's), which
    fx traces into, down to a call of the ``stochastic_depth`` function that torchvision keeps whole."""

    def __init__(self) -> None:
        from torchvision.ops import StochasticDepth

        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), StochasticDepth(0.2, "row"))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(F.relu(x + self.branch(x)).mean((2, 3)))


def test_stochastic_depth_keeps_the_channels(seed):
    """The rule looks the function up only once torchvision.ops is loaded (s2dnas does not import it:
    seconds of start-up), as it is in any model that holds the module."""
    check(StochasticResidual())
