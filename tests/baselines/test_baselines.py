"""Baselines as multi-stage networks: SDN-style exits on an unchanged base, cascades, static models."""
from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from s2dnas import ConfigError, DynamicNet, UnsupportedModelError, count_macs, create_model
from s2dnas.baselines import attach_exits, cascade, cut_points, freeze_trunk, single_stage
from s2dnas.dynamic.executor import reference_forward

SHAPE = (1, 16, 16)


class _LongSkip(nn.Module):
    """Three convs; the first one's output is read again at the end (a long skip connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(a))
        c = torch.relu(self.c(b))
        return self.fc((a + c).mean((2, 3)))


def test_cut_points_of_resnet_are_block_boundaries(seed: int) -> None:
    cuts = cut_points(fx.symbolic_trace(create_model("resnet20", num_classes=10, in_channels=1)))
    # after the stem's ReLU and after each of the first 8 residual blocks' final ReLU (the adds are
    # followed by that ReLU); never inside a block, never right after a conv (its BN would be cut off)
    assert "relu" in cuts and "layer1_0_relu_1" in cuts and "layer3_1_relu_1" in cuts
    assert not any(c.startswith("layer1_0_conv") or c in ("conv1", "layer1_0_bn1") for c in cuts)
    assert "layer3_2_relu_1" not in cuts  # after the last conv: nothing left to cut


def test_no_cut_where_two_tensors_are_live(seed: int) -> None:
    # after relu(a) only `a` is live: a cut; after relu(b) both `a` and `b` are: no cut
    assert cut_points(fx.symbolic_trace(_LongSkip())) == ["relu"]


@pytest.mark.parametrize("name", ["resnet20", "vgg16_bn", "mobilenetv2"])
def test_last_exit_is_the_base_model_and_macs_add_up(name: str, seed: int) -> None:
    kwargs = {"width_mult": 0.25} if name == "vgg16_bn" else {}
    base = create_model(name, num_classes=10, in_channels=1, **kwargs).eval()
    net = attach_exits(base, num_stages=3, input_shape=SHAPE).eval()
    x = torch.randn(4, *SHAPE)
    logits = net(x)
    assert len(logits) == 3 and all(z.shape == (4, 10) for z in logits)
    assert torch.equal(logits[-1], base(x))
    # the trunk segments partition the base's MACs; each early stage adds its head's linear layer
    heads = [s.exit_head.fc.in_features * 10 for s in net.stages[:-1]]
    assert sum(net.stage_macs()) == count_macs(base, torch.zeros(1, *SHAPE)) + sum(heads)


def test_base_model_is_not_modified(seed: int) -> None:
    base = create_model("resnet20", num_classes=10, in_channels=1)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    net = attach_exits(base, num_stages=3, input_shape=SHAPE)
    for p in net.parameters():
        p.data.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_dynamic_net_over_exits_matches_the_reference_rule(seed: int) -> None:
    net = attach_exits(create_model("resnet20", num_classes=10, in_channels=1), num_stages=4,
                       input_shape=SHAPE).eval()
    x = torch.randn(32, *SHAPE)
    for thresholds in ([0.0, 0.0, 0.0], [0.105, 0.11, 0.115], [2.0, 2.0, 2.0]):
        out = DynamicNet(net, thresholds)(x)
        ref = reference_forward(net, x, thresholds)
        assert torch.equal(out.exit_stage, ref.exit_stage)
        torch.testing.assert_close(out.logits, ref.logits)


def test_explicit_cuts_and_bad_cuts(seed: int) -> None:
    base = create_model("resnet20", num_classes=10, in_channels=1)
    net = attach_exits(base, num_stages=2, input_shape=SHAPE, cuts=["layer2_2_relu_1"])
    assert net.architecture["cuts"] == ["layer2_2_relu_1"]
    with pytest.raises(UnsupportedModelError, match=r"Expected 1 distinct cut points among .*'layer1_0_conv1'"):
        attach_exits(base, num_stages=2, input_shape=SHAPE, cuts=["layer1_0_conv1"])
    with pytest.raises(UnsupportedModelError, match=r"Expected at least 3 cut points"):
        attach_exits(_LongSkip(), num_stages=4, input_shape=SHAPE)


@pytest.mark.parametrize(("name", "kwargs"), [("resnet20", {}), ("vgg16_bn", {"width_mult": 0.25})])
def test_joint_training_updates_the_trunk_of_a_frozen_base(name: str, kwargs: dict, seed: int) -> None:
    base = create_model(name, num_classes=10, in_channels=1, **kwargs).eval()
    for p in base.parameters():  # as the pipeline holds the teacher: frozen
        p.requires_grad_(False)
    net = attach_exits(base, num_stages=4, input_shape=SHAPE).train()
    # default cuts follow the activation (a block's final ReLU), never its BN or add
    modules = dict(fx.symbolic_trace(base).named_modules())
    for cut in net.architecture["cuts"]:
        node = next(n for n in fx.symbolic_trace(base).graph.nodes if n.name == cut)
        assert "relu" in cut or isinstance(modules.get(str(node.target)), (nn.ReLU, nn.MaxPool2d)), cut
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    loss = sum(nn.functional.cross_entropy(z, y) for z in net(x))
    loss.backward()  # no in-place activation may overwrite a feature an exit head saved
    opt.step()
    trunk = [k for k, p in net.named_parameters() if ".exit_head." not in k]
    assert trunk and all(not torch.equal(before[k], net.state_dict()[k]) for k in trunk if "weight" in k)


def test_attach_exits_rejects_bad_options(seed: int) -> None:
    base = create_model("resnet20", num_classes=10, in_channels=1)
    with pytest.raises(ConfigError, match=r"Expected num_stages >= 1 and pool >= 1"):
        attach_exits(base, num_stages=0, input_shape=SHAPE)
    with pytest.raises(ConfigError, match=r"pool=0"):
        attach_exits(base, num_stages=2, input_shape=SHAPE, pool=0)


def test_reestimating_batch_norm_keeps_a_frozen_trunk(seed: int) -> None:
    from s2dnas.train.loops import reestimate_batch_norm

    net = freeze_trunk(attach_exits(create_model("resnet20", num_classes=10, in_channels=1), num_stages=3,
                                    input_shape=SHAPE))
    trunk = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in trunk:
        m.running_mean.uniform_(-1, 1)
    stats = [m.running_mean.clone() for m in trunk]
    reestimate_batch_norm(net, [(torch.randn(4, *SHAPE), None)], batches=1, device=torch.device("cpu"))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, trunk))


def test_frozen_trunk_trains_only_the_heads(seed: int) -> None:
    net = freeze_trunk(attach_exits(create_model("resnet20", num_classes=10, in_channels=1), num_stages=3,
                                    input_shape=SHAPE))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(".exit_head." in n for n in trainable)
    net.train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # running statistics of the base stay fixed
    assert all(s.exit_head.training for s in net.stages[:-1])
    stats = [m.running_mean.clone() for m in bns]
    net(torch.randn(8, *SHAPE))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns))


def test_cascade_runs_independent_models(seed: int) -> None:
    little = create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.5).eval()
    big = create_model("resnet20", num_classes=10, in_channels=1).eval()
    net = cascade([little, big], input_shape=SHAPE).eval()
    x = torch.randn(5, *SHAPE)
    out = net(x)
    assert torch.equal(out[0], little(x)) and torch.equal(out[1], big(x))
    assert net.reads == [[], []] and net.writes == [[], []]
    z = torch.zeros(1, *SHAPE)
    assert net.stage_macs() == [count_macs(little, z), count_macs(big, z)]
    dyn = DynamicNet(net, [2.0])  # nobody trusts the little model: the big one answers for all
    assert torch.equal(dyn(x).logits, big(x)) and dyn.macs_of(dyn(x).exit_stage) == 5 * sum(net.stage_macs())


def test_single_stage_is_the_static_model(seed: int) -> None:
    base = create_model("resnet20", num_classes=10, in_channels=1).eval()
    dyn = DynamicNet(single_stage(base, input_shape=SHAPE).eval(), [])
    x = torch.randn(3, *SHAPE)
    out = dyn(x)
    assert torch.equal(out.logits, base(x)) and out.exit_stage.tolist() == [0, 0, 0]
