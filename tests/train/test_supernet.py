"""Super-network: sandwich rule, per-stage heads, extraction, BN recalibration, scoring, resume."""
from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from torch import nn

from s2dnas.data import make_loader
from s2dnas.data.datasets import RandomCropFlip, TensorImageDataset
from s2dnas.dynamic.calibrate import collect_logits
from s2dnas.errors import CalibrationError, CheckpointError, ConfigError, RunDirError, TrainingError
from s2dnas.config import CalibrationTarget, SupernetConfig
from s2dnas.search.score import calibrate_at, score
from s2dnas.space import Space
from s2dnas.space.space import compositions
from s2dnas.train.checkpoint import weights_digest
from s2dnas.train.sandwich import cheapest, most_expensive, sandwich
from s2dnas.train.supernet import SuperNet, recalibrate
from s2dnas.train.supernet_training import (BASE_DIGEST_KEY, CHECKPOINT_NAME, SupernetTrainer, load_supernet,
                                            train_supernet)


class TinyRes(nn.Module):
    """conv-bn-relu, a residual conv-bn, a strided conv-bn at half resolution, a linear head:
    two split groups, a residual add (tied channels) and a concat-able conv in each group."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _space(seed: int = 0) -> Space:
    torch.manual_seed(seed)
    model = TinyRes()
    with torch.no_grad():  # distinct BN gammas, so the channel order is not the natural one
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    return Space(model.eval(), input_shape=(1, 8, 8), num_stages=3, ratio_grid=4)


def _data(n: int = 48, *, augment: bool = False, seed: int = 0) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 8, 8, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    transform = RandomCropFlip(pad=1, flip=True, fill=torch.zeros(1)) if augment else None
    return TensorImageDataset(images, labels, transform)


# -- sandwich rule --------------------------------------------------------------------------------
def test_extremes_are_lexicographic_min_and_max_by_the_mac_counter(seed):
    space = _space()
    costs = {}
    for splits in itertools.product(compositions(4, 3), repeat=space.num_groups):
        for concat in itertools.product(range(space.num_groups + 1), repeat=space.num_stages - 1):
            arch = space.architecture(splits=splits, concat=concat)
            costs[arch] = space.build(arch).analytic_macs  # the formula; the counter agrees (below)
    assert len(costs) == 81  # every spelling; some name the same network (concat from the stem's group = from the next)
    assert len({space.canonical(a) for a in costs}) == space.size()
    for arch in (cheapest(space), most_expensive(space)):
        assert space.build(arch).stage_macs() == costs[arch]
    assert costs[cheapest(space)] == min(costs.values())
    assert costs[most_expensive(space)] == max(costs.values())
    # not a degenerate order: the extremes differ from the hand-picked point and from each other
    assert min(costs.values()) < costs[space.default_architecture()] < max(costs.values())


def test_sandwich_is_expensive_cheapest_then_seeded_samples(seed):
    space = _space()
    a = sandwich(space, num_sampled=3, generator=torch.Generator().manual_seed(5))
    b = sandwich(space, num_sampled=3, generator=torch.Generator().manual_seed(5))
    assert a == b and len(a) == 5
    assert a[:2] == [most_expensive(space), cheapest(space)]
    assert len(set(sandwich(space, num_sampled=20, generator=torch.Generator().manual_seed(1))[2:])) > 5
    with pytest.raises(ConfigError, match="num_sampled"):
        sandwich(space, num_sampled=-1, generator=torch.Generator())


# -- heads ----------------------------------------------------------------------------------------
def test_each_stage_classifies_with_its_own_head_and_only_its_loss_reaches_it(seed):
    supernet = SuperNet(_space())
    assert supernet.head_names == ("fc",)  # the classifier node is the linear layer writing the logits
    net = supernet.materialize(supernet.space.default_architecture())
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 4, (6,))
    for s in range(3):
        assert net.stages[s].fc.base is supernet.heads[s]["fc"]
        supernet.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x)[s], y).backward()
        assert [supernet.heads[t]["fc"].weight.grad is not None for t in range(3)] == [t == s for t in range(3)]
        assert supernet.model.fc.weight.grad is None  # the base's own classifier is never used
        assert supernet.model.conv3.weight.grad is not None  # the trunk is shared


def test_a_step_trains_the_heads_apart_and_leaves_the_teacher_alone(seed):
    space = _space()
    teacher_state = copy.deepcopy(space.model.state_dict())
    supernet = SuperNet(space)
    trainer = SupernetTrainer(supernet, config=SupernetConfig(num_sampled=2, inplace_distill=1.0))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,))
    archs = sandwich(supernet.space, num_sampled=2, generator=torch.Generator().manual_seed(0))
    loss, passes = trainer.step(x, y, archs=archs, lr=0.1)
    assert passes == 4 and loss > 0
    heads = [supernet.heads[s]["fc"].weight for s in range(3)]
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[1], heads[2])
    assert all(torch.equal(v, space.model.state_dict()[k]) for k, v in teacher_state.items())


def test_a_nan_in_a_later_architecture_stops_the_step_before_any_update(seed):
    """The sandwich goes through the one optimiser step: the first architecture's loss is already
    back-propagated when the second one's is NaN, and still no weight moves."""
    supernet = SuperNet(_space())
    trainer = SupernetTrainer(supernet, config=SupernetConfig(num_sampled=1))
    before = copy.deepcopy(supernet.state_dict())
    criterion, calls = trainer.criterion, []

    def nan_on_the_second(*args):
        calls.append(1)
        loss = criterion(*args)
        return loss * float("nan") if len(calls) == 2 else loss

    trainer.criterion = nan_on_the_second
    archs = sandwich(supernet.space, num_sampled=1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TrainingError, match=r"architecture 2 of the step"):
        trainer.step(torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,)), archs=archs, lr=0.1)
    assert len(calls) == 2  # stopped there: the third architecture never ran
    assert all(torch.equal(v, supernet.state_dict()[k]) for k, v in before.items())
    assert not trainer.optimizer.state  # no momentum buffer: no step was taken


# -- extraction -----------------------------------------------------------------------------------
def test_extracted_network_equals_the_views_and_owns_its_weights(seed):
    supernet = SuperNet(_space())
    with torch.no_grad():  # make the heads differ, so a wrong head would show
        for s in range(3):
            supernet.heads[s]["fc"].weight.add_(0.1 * s)
    x = torch.randn(6, 1, 8, 8)
    for arch in (supernet.space.default_architecture(), most_expensive(supernet.space), cheapest(supernet.space)):
        views = supernet.materialize(arch)
        net = supernet.extract(arch).train()  # train mode: batch statistics, as the views use
        for a, b in zip(views(x), net(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    own = {p.data_ptr() for p in supernet.parameters()}
    assert not any(p.data_ptr() in own for p in net.parameters())
    before = [z.detach().clone() for z in net(x)]
    with torch.no_grad():
        supernet.model.conv1.weight.mul_(2)
    assert all(torch.equal(a, b) for a, b in zip(before, net(x)))


def test_recalibration_gives_the_mean_and_variance_of_the_same_batches_deterministically(seed):
    supernet = SuperNet(_space())
    net = supernet.extract(supernet.space.default_architecture())
    data = _data(40, augment=True)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 9  # 3 norms per stage, none left out

    # direct: record every norm's per-batch input statistics on a copy, over the same 3 batches
    direct = copy.deepcopy(net).train()
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(norms))}
    copies = [m for m in direct.modules() if isinstance(m, nn.BatchNorm2d)]
    for i, m in enumerate(copies):
        m.register_forward_pre_hook(lambda mod, args, i=i: inputs[i].append(args[0].detach()))
    with torch.random.fork_rng():
        torch.manual_seed(7)
        for k, (x, _) in enumerate(make_loader(data, batch_size=16, shuffle=True, seed=3)):
            if k == 3:
                break
            direct(x)
    assert all(len(v) == 3 for v in inputs.values())

    torch.manual_seed(123)  # the global RNG state must not matter
    recalibrate(net, make_loader(data, batch_size=16, shuffle=True, seed=3), batches=3, seed=7)
    assert not net.training
    for i, m in enumerate(norms):
        means = torch.stack([t.mean(dim=(0, 2, 3)) for t in inputs[i]]).mean(0)
        variances = torch.stack([t.transpose(0, 1).flatten(1).var(1, unbiased=True) for t in inputs[i]]).mean(0)
        torch.testing.assert_close(m.running_mean, means, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var, variances, rtol=1e-5, atol=1e-6)
    again = supernet.extract(supernet.space.default_architecture())
    torch.rand(100)
    recalibrate(again, make_loader(data, batch_size=16, shuffle=True, seed=3), batches=3, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


# -- scoring ----------------------------------------------------------------------------------------
def test_score_reaches_an_easy_target_and_ranks_an_unreachable_one_by_its_gap(seed):
    supernet = SuperNet(_space())
    arch = supernet.space.default_architecture()
    val = make_loader(_data(32, seed=1), batch_size=16)
    bn = make_loader(_data(32, seed=2), batch_size=16, shuffle=True, seed=0)
    easy = score(supernet, arch, val_data=val, bn_data=bn, target=CalibrationTarget(target_accuracy=0.0),
                 bn_batches=2, keep_network=True)
    m = easy.metrics
    assert easy.reached and easy.reward == pytest.approx(supernet.space.base_macs() / m["expected_macs"])
    assert m["expected_macs"] <= sum(m["stage_macs"]) and m["cost_unit"] == "macs"
    # the ExitPolicy of the calibration records what was minimised: the stages' MACs
    assert easy.calibration.policy.stage_cost == tuple(m["stage_macs"]) and easy.calibration.policy.cost_unit == "macs"
    hard = score(supernet, arch, val_data=val, bn_data=bn, target=CalibrationTarget(target_accuracy=1.0), bn_batches=2)
    assert not hard.reached and hard.reward == pytest.approx(hard.metrics["best_accuracy"] - 1.0) and hard.reward < 0
    assert hard.metrics["accuracy"] >= max(hard.metrics["stage_val_accuracy"])  # the most accurate setting
    again = score(supernet, arch, val_data=val, bn_data=bn, target=CalibrationTarget(target_accuracy=0.0),
                  bn_batches=2)
    assert again.to_dict() == easy.to_dict()  # scoring is deterministic


def test_scoring_at_a_budget_and_through_the_cost_hook(seed):
    """The target is the run's CalibrationTarget; thresholds minimise what the cost hook returns."""
    supernet = SuperNet(_space())
    arch = supernet.space.default_architecture()
    val = make_loader(_data(32, seed=1), batch_size=16)
    bn = make_loader(_data(32, seed=2), batch_size=16, shuffle=True, seed=0)
    net = supernet.extract(arch)
    macs = net.analytic_macs
    budget = CalibrationTarget(macs_budget=float(macs[0]))  # stage 1 alone fits, nothing more
    s = score(supernet, arch, val_data=val, bn_data=bn, target=budget, bn_batches=2)
    assert s.reached and s.metrics["expected_macs"] == macs[0] and s.metrics["exit_fractions"][0] == 1.0
    assert s.reward == s.metrics["accuracy"]  # accuracy_in_budget
    # a hook that makes stage 1 cost more than the budget: the cheapest setting is over it, ordered by the excess
    calls = []

    def heavy_first_stage(msnet):
        calls.append(msnet)
        return (float(macs[0]) * 2, *map(float, macs[1:])), "macs"

    over = score(supernet, arch, val_data=val, bn_data=bn, target=budget, bn_batches=2, stage_cost=heavy_first_stage)
    assert len(calls) == 1 and not over.reached
    assert over.reward == pytest.approx(-(2 * macs[0] - macs[0]) / supernet.space.base_macs())
    with pytest.raises(CalibrationError, match="with a seconds stage cost, but got macs_budget"):
        calibrate_at(collect_logits(net, val), stage_cost=((1.0, 2.0, 3.0), "seconds"), stage_macs=macs,
                     target=budget)


# -- training, checkpoints, resume ------------------------------------------------------------------
def _train(tmp_path, name, *, resume=False, stop=None, **overrides):
    config = SupernetConfig(**{"epochs": 2, "batch_size": 16, "num_sampled": 1, "lr": 0.05, "warmup_epochs": 0.5,
                               "inplace_distill": 0.5, **overrides})
    supernet = SuperNet(_space())
    out = train_supernet(supernet, _data(40, augment=True), config=config, out_dir=tmp_path / name, resume=resume,
                         progress=False, stop_after_epochs=stop)
    return supernet, out


def test_resume_continues_bit_for_bit_and_refuses_another_config(seed, tmp_path):
    full, out = _train(tmp_path, "full")
    assert out["epochs"] == 2 and out["steps"] == 6
    _train(tmp_path, "split", stop=1)
    resumed, out = _train(tmp_path, "split", resume=True)
    assert [h["epoch"] for h in out["history"]] == [1, 2]
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.conv1.weight"], SuperNet(_space()).state_dict()["model.conv1.weight"])

    ckpt = tmp_path / "split" / CHECKPOINT_NAME
    saved = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="another configuration") as err:
        _train(tmp_path, "split", resume=True, lr=0.01)
    assert "\n" not in str(err.value)
    with pytest.raises(RunDirError, match="--resume"):
        _train(tmp_path, "split")
    assert ckpt.read_bytes() == saved  # nothing overwritten

    shipped = SuperNet(_space())
    meta = shipped.load(tmp_path / "full" / "supernet.safetensors")
    assert meta["epoch"] == 2 and all(torch.equal(v, a[k]) for k, v in shipped.state_dict().items())
    assert meta["train_seconds"] == pytest.approx(sum(h["seconds"] for h in meta["history"]))
    assert meta["machine"]["torch"] == torch.__version__ and meta["config"]["epochs"] == 2


def test_load_supernet_refuses_unfinished_weights_and_another_split(seed, tmp_path):
    data = {"dataset": "toy", "val_size": 10, "data_seed": 0}
    config = SupernetConfig(epochs=2, batch_size=16, num_sampled=0)
    train_supernet(SuperNet(_space()), _data(32), config=config, out_dir=tmp_path / "half", progress=False,
                   stop_after_epochs=1, context={"data": data})
    with pytest.raises(CheckpointError, match="trained 1 of 2 epochs.*--resume"):
        load_supernet(SuperNet(_space()), tmp_path / "half", data=data)
    train_supernet(SuperNet(_space()), _data(32), config=config, out_dir=tmp_path / "half", resume=True,
                   progress=False, context={"data": data})
    assert load_supernet(SuperNet(_space()), tmp_path / "half", data=data)["epoch"] == 2
    with pytest.raises(CheckpointError, match="another train/val split.*val_size=10.*val_size=20"):
        load_supernet(SuperNet(_space()), tmp_path / "half", data={**data, "val_size": 20})
    with pytest.raises(CheckpointError, match="does not exist; train one with s2dnas supernet"):
        load_supernet(SuperNet(_space()), tmp_path / "none", data=data)


def test_weights_digest_follows_the_values_not_the_layout_or_mode() -> None:
    model = _space().model
    digest = weights_digest(model)
    moved = copy.deepcopy(model).to(memory_format=torch.channels_last).train().requires_grad_(False)
    assert weights_digest(moved) == digest  # the same weights in another layout and mode
    bn = next(m for m in moved.modules() if isinstance(m, nn.BatchNorm2d))
    bn.running_mean[0] += 1e-3  # a buffer counts as much as a parameter
    assert weights_digest(moved) != digest
    assert weights_digest(copy.deepcopy(model).to(torch.bfloat16)) != digest  # another dtype: other weights

    class WithExtraState(nn.Module):  # a user's module may keep non-tensor state in its state dict
        def __init__(self, step: int) -> None:
            super().__init__()
            self.fc, self.step = nn.Linear(2, 2), step

        def get_extra_state(self) -> dict:
            return {"step": self.step}

        def set_extra_state(self, state: dict) -> None:
            self.step = state["step"]

    torch.manual_seed(0)
    a = WithExtraState(1)
    assert weights_digest(copy.deepcopy(a)) == weights_digest(a)
    b = copy.deepcopy(a)
    b.step = 2
    assert weights_digest(b) != weights_digest(a)


def _nudged(space: Space) -> Space:
    """``space`` over a base with one weight changed (a base retrained in place)."""
    with torch.no_grad():
        next(space.model.parameters()).view(-1)[0] += 1e-3
    return space


def test_a_super_network_is_refused_for_a_base_with_other_weights(seed, tmp_path):
    """A super-network records its base's weights digest: loading it, or resuming its training,
    over a base whose weights differ is refused; one saved before the digest existed loads unchecked."""
    config = SupernetConfig(epochs=2, batch_size=16, num_sampled=0)
    context = {"model": {"name": "tiny", "weights": "runs/base/model.safetensors"}}
    train_supernet(SuperNet(_space()), _data(16), config=config, out_dir=tmp_path, progress=False,
                   stop_after_epochs=1, context=context)
    digest = weights_digest(_space().model)
    other = weights_digest(_nudged(_space()).model)
    with pytest.raises(CheckpointError, match=f"other base weights than this run's \\(runs/base/model.safetensors, "
                                              f"digest {digest}; this run's base: digest {other}\\).*model.weights: "
                                              "runs/base/model.safetensors"):
        train_supernet(SuperNet(_nudged(_space())), _data(16), config=config, out_dir=tmp_path, resume=True,
                       progress=False, context=context)
    train_supernet(SuperNet(_space()), _data(16), config=config, out_dir=tmp_path, resume=True, progress=False,
                   context=context)
    assert load_supernet(SuperNet(_space()), tmp_path)["epoch"] == 2
    with pytest.raises(CheckpointError, match="other base weights"):
        load_supernet(SuperNet(_nudged(_space())), tmp_path)
    meta = json.loads((tmp_path / "supernet.json").read_text())
    del meta[BASE_DIGEST_KEY]  # as written before the digest was recorded
    (tmp_path / "supernet.json").write_text(json.dumps(meta))
    assert load_supernet(SuperNet(_nudged(_space())), tmp_path)["epoch"] == 2


def test_a_corrupt_checkpoint_is_one_clear_error(seed, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="truncated or not a super-network checkpoint"):
        _train(tmp_path, "run", resume=True)


def test_config_lists_every_problem(seed):
    with pytest.raises(ConfigError) as err:
        train_supernet(SuperNet(_space()), _data(16), config=SupernetConfig(epochs=0, num_sampled=-1, temperature=0),
                       progress=False)
    assert all(f"supernet.{k}" in str(err.value) for k in ("epochs", "num_sampled", "temperature"))
