"""Space(channel_multiple=m): slices are multiples of m channels, falling back where a layer is narrow."""
from __future__ import annotations

import itertools

import pytest
import torch

from s2dnas.errors import ConfigError, InvalidArchitectureError
from s2dnas.space import Space
from s2dnas.space.space import compositions
from s2dnas.zoo import create_model


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10, in_channels=1).eval()  # 16, 32, 64 channels


def _sizes(space, splits):
    arch = space.architecture(splits=splits, concat=[0, 0])
    per_stage = space.stage_indices(arch)
    return {space.analysis.classes[c].size: tuple(len(per_stage[s][c]) for s in range(3)) for c in per_stage[0]}


def test_multiple_one_is_the_unrounded_grid(base):
    space = Space(base, input_shape=(1, 8, 8))
    assert space.channel_multiple == 1 and not space.signature.endswith("-m1")
    assert _sizes(space, [(1, 3, 4), (1, 1, 6), (3, 2, 3)]) == {16: (2, 6, 8), 32: (4, 4, 24), 64: (24, 16, 24)}


def test_multiple_eight_rounds_every_slice(base):
    space = Space(base, input_shape=(1, 8, 8), channel_multiple=8)
    sizes = _sizes(space, [(1, 3, 4), (1, 1, 6), (3, 2, 3)])
    # 16 channels cannot give 3 stages 8 each: the multiple halves to 4 there
    assert sizes == {16: (4, 4, 8), 32: (8, 8, 16), 64: (24, 16, 24)}
    for (c, parts) in sizes.items():
        step = 8 if c >= 24 else 4
        assert sum(parts) == c and all(p % step == 0 and p >= step for p in parts)
    # every architecture of the space keeps the rule and conserves channels
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        arch = space.sample(gen)
        for cid, cls in space.analysis.classes.items():
            idx = [space.stage_indices(arch)[s][cid] for s in range(3)]
            assert sorted(torch.cat(idx).tolist()) == list(range(cls.size))
            if cls.size >= 24:
                assert all(len(i) % 8 == 0 for i in idx)


def test_remainder_goes_to_the_last_stage():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 20, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(20, 10)).eval()
    space = Space(model, input_shape=(1, 8, 8), channel_multiple=6)
    assert _sizes(space, [(1, 1, 6)])[20] == (6, 6, 8)  # 3 units of 6, 2 channels left over


def test_multiple_is_part_of_the_signature(base):
    fine, coarse = Space(base, input_shape=(1, 8, 8)), Space(base, input_shape=(1, 8, 8), channel_multiple=8)
    assert coarse.signature == fine.signature + "-m8"
    arch = fine.default_architecture()
    with pytest.raises(InvalidArchitectureError, match="signature"):
        coarse.build(arch)
    net = coarse.build(coarse.default_architecture()).eval()
    assert [t.shape for t in net(torch.zeros(2, 1, 8, 8))] == [torch.Size([2, 10])] * 3


@pytest.mark.parametrize("bad", [0, -8, 2.5, True])
def test_bad_multiple_is_refused(base, bad):
    with pytest.raises(ConfigError, match="channel_multiple must be an integer >= 1"):
        Space(base, input_shape=(1, 8, 8), channel_multiple=bad)


def _network(space, arch):
    """What the network of ``arch`` is made of: every stage's channels of every class, and the concat."""
    per_stage = space.stage_indices(arch)
    return tuple(tuple(tuple(per_stage[s][c].tolist()) for c in sorted(per_stage[s])) for s in range(3)), arch.concat


def test_splits_that_build_the_same_network_are_one_choice(base):
    """With slices of 4/8 channels, ResNet-20's 16- and 32-channel groups have 4 steps, and 4 steps make
    3 distinct splits into 3 non-empty parts; the 64-channel group has 8 steps, as many as q, so all 21 differ."""
    space = Space(base, input_shape=(1, 8, 8), channel_multiple=8)
    splits = [d for d in space.decisions if d.name.startswith("split.")]
    assert [d.size for d in splits] == [3, 3, 21]
    assert space.size() == 3 * 3 * 21 * 4 * 4
    for g, decision in enumerate(splits):
        other = [space.default_architecture().splits[h] for h in range(space.num_groups)]
        networks = set()
        for parts in compositions(8, 3):  # every composition maps to a choice that builds the same network
            arch = space.architecture(splits=[*other[:g], parts, *other[g + 1:]], concat=[1, 2])
            canonical = space.canonical(arch)
            assert canonical.splits[g] in decision.choices
            assert _network(space, canonical) == _network(space, arch)
            assert space.from_sample(space.to_sample(arch)) == canonical
            networks.add(_network(space, arch))
        assert len(networks) == decision.size  # and the choices are pairwise different networks
    # the representative's ratios are the shares it gives: 16 channels cut 4/4/8 read (2, 2, 4)/8
    assert space.canonical(space.architecture(splits=[(1, 1, 6)], concat=[0, 0])).splits[0] == (2, 2, 4)


def test_without_rounding_every_split_is_its_own_network(base):
    space = Space(base, input_shape=(1, 8, 8))  # channel_multiple 1: 16 channels give 2-channel steps
    assert [d.size for d in space.decisions if d.name.startswith("split.")] == [21, 21, 21]


def test_choice_names_are_the_shares_they_give(base):
    space = Space(base, input_shape=(1, 8, 8), channel_multiple=8)
    splits = [d.choices for d in space.decisions if d.name.startswith("split.")]
    # 4/4/8 of 16 and 8/8/16 of 32 channels (and permutations): 1/4, 1/4, 1/2 in eighths
    assert splits[0] == splits[1] == ((2, 2, 4), (2, 4, 2), (4, 2, 2))
    assert splits[2] == tuple(compositions(8, 3))  # 64 channels in 8 steps: every ratio is its own network


def _signature(space, arch, x):
    """A network's identity by behaviour: every stage's MACs and logits on fixed inputs."""
    net = space.build(arch).eval()
    with torch.no_grad():
        return tuple(net.stage_macs()), tuple(tuple(o.flatten().tolist()) for o in net(x))


@pytest.mark.parametrize("groups", ["resolution", "resolution:3"])
def test_size_counts_the_distinct_networks_by_brute_force(groups):
    """Every (split, concat) spelling of a tiny space built and run: as many different networks as size()
    says, each choice of a decision a different one. With resolution:3 a group holds only the stem or
    only the classifier, so concat positions coincide too."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    space = Space(model, input_shape=(1, 6, 6), num_stages=2, ratio_grid=4, groups=groups, channel_multiple=4)
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    signatures = set()
    for splits in itertools.product(compositions(4, 2), repeat=space.num_groups):
        for concat in range(space.num_groups + 1):
            arch = space.architecture(splits=splits, concat=[concat])
            sig = _signature(space, arch, x)
            assert sig == _signature(space, space.canonical(arch), x)
            signatures.add(sig)
    assert len(signatures) == space.size()
    choices = {space.from_sample(s) for s in _all_samples(space)}
    assert len({_signature(space, a, x) for a in choices}) == len(choices) == space.size()


def _all_samples(space):
    names = [d.name for d in space.decisions]
    for picks in itertools.product(*(range(d.size) for d in space.decisions)):
        yield dict(zip(names, picks))
