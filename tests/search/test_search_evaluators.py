"""Tests of the evaluators (brief training, super-network), on a 2-block toy CNN and an easy synthetic
task: 8x8 images, class = which quadrant is bright."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from s2dnas.config import CalibrationConfig, CalibrationTarget, SupernetConfig, TrainConfig, resolve_target
from s2dnas.data import DataSplits, make_loader
from s2dnas.data.datasets import RandomCropFlip, TensorImageDataset
from s2dnas.errors import ConfigError
from s2dnas.search.evaluator import CandidateResult, Evaluator, SupernetEvaluator, TrainedEvaluator
from s2dnas.search.score import score
from s2dnas.space import Architecture, Space
from s2dnas.train.loops import evaluate
from s2dnas.train.supernet import SuperNet
from s2dnas.train.supernet_training import train_supernet
from tests._models import trained_toy

NUM_CLASSES, SIZE = 4, 8  # ToyCNN's default class count
CPU = torch.device("cpu")


def quadrant_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise, plus a bright 4x4 quadrant: top-left, top-right, bottom-left, bottom-right = class 0..3."""
    labels = torch.arange(n) % NUM_CLASSES
    images = torch.randn(n, 1, SIZE, SIZE, generator=generator) * 0.5
    half = SIZE // 2
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        images[i, 0, r * half:(r + 1) * half, c * half:(c + 1) * half] += 2.0
    return images, labels


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    gen = torch.Generator().manual_seed(0)
    (xtr, ytr), (xva, yva), (xte, yte) = (quadrant_images(n, gen) for n in (384, 128, 64))
    # an augmented train split like the real ones (random shifts drawn from the global RNG)
    augment = RandomCropFlip(pad=1, flip=False, fill=torch.zeros(1))
    return DataSplits(name="quadrants", train=TensorImageDataset(xtr, ytr, augment), val=TensorImageDataset(xva, yva),
                      test=TensorImageDataset(xte, yte), num_classes=NUM_CLASSES, in_channels=1,
                      input_size=(SIZE, SIZE), mean=(0.0,), std=(1.0,), class_names=("tl", "tr", "bl", "br"))


@pytest.fixture(scope="module")
def base(splits: DataSplits) -> nn.Module:
    """The toy CNN trained for a few epochs (it gets the easy task right)."""
    model = trained_toy(splits, epochs=3)
    assert evaluate(model, make_loader(splits.val, batch_size=256), device=CPU).accuracy > 0.9
    return model


@pytest.fixture(scope="module")
def space(base: nn.Module) -> Space:
    return Space(base, input_shape=(1, SIZE, SIZE), num_stages=3, ratio_grid=4, model_name="toy")


@pytest.fixture(scope="module")
def common(base: nn.Module, splits: DataSplits) -> dict:
    target = evaluate(base, make_loader(splits.val, batch_size=256), device=CPU).accuracy - 0.02
    return dict(target=CalibrationTarget(target_accuracy=target), confidence="max_softmax", reward="macs_saving",
                device=CPU, eval_batch_size=256)


TRAIN = TrainConfig(epochs=1, lr=0.05, batch_size=32, limit_train=128, seed=0)
ARCH_A = {"split.g1": 0, "split.g2": 1, "concat.s2": 0, "concat.s3": 1}
ARCH_B = {"split.g1": 2, "split.g2": 0, "concat.s2": 1, "concat.s3": 0}


def check_result(result: CandidateResult, arch: Architecture, space: Space) -> None:
    assert isinstance(result, CandidateResult)
    assert result.architecture == arch
    assert math.isfinite(result.reward)
    m = result.metrics
    assert len(m["stage_val_accuracy"]) == space.num_stages
    assert all(0.0 <= a <= 1.0 for a in m["stage_val_accuracy"])
    assert 0.0 < m["macs_ratio"] <= 1.0
    assert len(m["thresholds"]) == space.num_stages - 1
    assert sum(m["exit_fractions"]) == pytest.approx(1.0)
    assert len(m["stage_macs"]) == space.num_stages and sum(m["stage_macs"]) <= space.base_macs()
    assert m["oracle_macs_ratio"] <= 1.0
    # the reward follows the feasibility rule of macs_saving
    assert (result.reward >= 1.0) if m["feasible"] else (result.reward < 0.0)
    assert result.seconds > 0.0


def test_trained_evaluator(space: Space, splits: DataSplits, base: nn.Module, common: dict) -> None:
    before = {k: v.clone() for k, v in base.state_dict().items()}
    evaluator = TrainedEvaluator(space, splits, teacher=base, train=TRAIN, bn_batches=4, **common)
    arch = space.from_sample(ARCH_A)
    first = evaluator.evaluate(arch)
    check_result(first, arch, space)
    # deterministic whatever was scored before (a resumed search scores candidates in a new process)
    check_result(evaluator.evaluate(space.from_sample(ARCH_B)), space.from_sample(ARCH_B), space)
    again = evaluator.evaluate(arch)
    assert again.reward == first.reward
    assert again.metrics == first.metrics
    # the teacher is never modified
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_evaluator_reward_modes(space: Space, splits: DataSplits, base: nn.Module, common: dict) -> None:
    supernet = SuperNet(space)  # untrained: the reward rules do not depend on the weights
    arch = space.from_sample(ARCH_A)
    budget = resolve_target(CalibrationConfig(macs_budget=0.6), base_val_accuracy=0.0, base_macs=space.base_macs())
    kw = {**common, "reward": "accuracy_in_budget", "target": budget}
    result = SupernetEvaluator(supernet, splits, bn_batches=2, batch_size=32, **kw).evaluate(arch)
    m = result.metrics
    assert m["feasible"] == (m["expected_macs"] <= 0.6 * space.base_macs())
    assert result.reward == (m["accuracy"] if m["feasible"]
                             else pytest.approx(-(m["expected_macs"] - 0.6 * space.base_macs()) / space.base_macs()))
    tradeoff = SupernetEvaluator(supernet, splits, bn_batches=2, batch_size=32,
                                **{**common, "reward": "tradeoff", "tradeoff_weight": 0.5}).evaluate(arch)
    assert tradeoff.reward == pytest.approx(tradeoff.metrics["accuracy"] * tradeoff.metrics["macs_ratio"] ** -0.5)
    with pytest.raises(ConfigError, match="accuracy_in_budget' needs calibration.macs_budget"):
        SupernetEvaluator(supernet, splits, bn_batches=2, batch_size=32, **{**common, "reward": "accuracy_in_budget"})
    with pytest.raises(ConfigError, match="macs_saving' needs an accuracy target"):
        SupernetEvaluator(supernet, splits, bn_batches=2, batch_size=32, **{**common, "target": budget})
    # issue 16: with reward=tradeoff and a MACs budget, the search aims at the budget, as the final calibration does
    in_budget = SupernetEvaluator(supernet, splits, bn_batches=2, batch_size=32,
                                 **{**common, "reward": "tradeoff", "target": budget}).evaluate(arch)
    assert in_budget.metrics["target_accuracy"] is None
    assert in_budget.metrics["expected_macs"] <= 0.6 * space.base_macs() or not in_budget.metrics["feasible"]
    assert in_budget.metrics["expected_macs"] == m["expected_macs"]  # same thresholds as accuracy_in_budget's


@pytest.fixture(scope="module")
def supernet(space: Space, splits: DataSplits) -> SuperNet:
    net = SuperNet(space)
    train_supernet(net, splits.train, config=SupernetConfig(epochs=1, batch_size=32, limit_train=128, lr=0.05,
                                                           num_sampled=1, seed=0), progress=False)
    return net.eval()


def test_supernet_evaluator_scores_what_score_gives(supernet: SuperNet, splits: DataSplits, common: dict,
                                                   base: nn.Module) -> None:
    teacher_before = {k: v.clone() for k, v in base.state_dict().items()}
    evaluator = SupernetEvaluator(supernet, splits, bn_batches=4, batch_size=32, **common)
    arch = supernet.space.from_sample(ARCH_A)
    first = evaluator.evaluate(arch)
    check_result(first, arch, supernet.space)

    # the evaluator is search/score.py's score(): the candidate extracted with its per-stage heads,
    # its batch norms recalibrated on the same seeded batches, calibrated at the run's target
    direct = score(supernet, arch, val_data=make_loader(splits.val, batch_size=256),
                   bn_data=make_loader(splits.train, batch_size=32, shuffle=True, seed=12345), bn_seed=12345,
                   target=common["target"], bn_batches=4)
    assert direct.reward == first.reward and direct.metrics == first.metrics
    prepared = evaluator._prepare(arch)
    for s_idx, stage in enumerate(prepared.stages):  # stage s classifies with head s (its bias is not sliced)
        assert torch.equal(stage.fc.bias, supernet.heads[s_idx]["fc"].bias)
    assert not torch.equal(prepared.stages[0].fc.bias, prepared.stages[-1].fc.bias)

    # scoring does not touch the shared weights, and scores do not depend on what was scored before
    weights_before = {k: v.clone() for k, v in supernet.state_dict().items()}
    evaluator.evaluate(supernet.space.from_sample(ARCH_B))
    again = evaluator.evaluate(arch)
    assert again.reward == first.reward and again.metrics == first.metrics
    fresh = SupernetEvaluator(supernet, splits, bn_batches=4, batch_size=32, **common).evaluate(arch)
    assert fresh.reward == first.reward and fresh.metrics == first.metrics
    assert all(torch.equal(weights_before[k], v) for k, v in supernet.state_dict().items())
    assert all(torch.equal(teacher_before[k], v) for k, v in base.state_dict().items())


def test_evaluator_base_class_needs_prepare(space: Space, splits: DataSplits, common: dict) -> None:
    with pytest.raises(NotImplementedError):
        Evaluator(space, splits, **common).evaluate(space.default_architecture())


class _CountingDataset(torch.utils.data.Dataset):
    """Counts the images read from the dataset it wraps."""

    def __init__(self, inner: torch.utils.data.Dataset) -> None:
        self.inner, self.reads = inner, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.inner[i]


def test_supernet_evaluator_draws_the_recalibration_batches_once(supernet: SuperNet, splits: DataSplits,
                                                                 common: dict) -> None:
    counting = _CountingDataset(splits.train)
    evaluator = SupernetEvaluator(supernet, dataclasses.replace(splits, train=counting), bn_batches=3, batch_size=32,
                                  **common)
    first = evaluator.evaluate(supernet.space.from_sample(ARCH_A))
    evaluator.evaluate(supernet.space.from_sample(ARCH_B))
    assert counting.reads == 3 * 32  # two candidates, one draw of the batches
    # and the kept batches give what a fresh seeded loader gives (score() draws them anew)
    direct = score(supernet, supernet.space.from_sample(ARCH_A), val_data=make_loader(splits.val, batch_size=256),
                   bn_data=make_loader(splits.train, batch_size=32, shuffle=True, seed=12345), bn_seed=12345,
                   target=common["target"], bn_batches=3)
    assert direct.reward == first.reward and direct.metrics == first.metrics


def test_score_network_scores_a_network_made_elsewhere_like_a_candidate(supernet: SuperNet, splits: DataSplits,
                                                                       common: dict) -> None:
    evaluator = SupernetEvaluator(supernet, splits, bn_batches=3, batch_size=32, **common)
    arch = supernet.space.from_sample(ARCH_B)
    net = supernet.extract(arch)
    evaluator.recalibrate(net)
    reward, metrics = evaluator.score_network(net)
    result = evaluator.evaluate(arch)
    assert reward == result.reward and metrics == result.metrics


def test_a_candidate_missing_the_target_is_not_a_warning_but_the_final_network_is(
        caplog: pytest.LogCaptureFixture) -> None:
    """A search scores hundreds of candidates, most below the target: one WARNING line each buried
    the demo's output. The candidate's miss is recorded by its reward; the final network's miss warns."""
    from s2dnas.dynamic.calibrate import StageLogits
    from s2dnas.search.score import calibrate_at, score_logits

    labels = torch.arange(40) % 4
    wrong = torch.nn.functional.one_hot((labels + 1) % 4, 4).float() * 5  # every stage always wrong
    logits = StageLogits(logits=torch.stack([wrong, wrong]), labels=labels)
    target = CalibrationTarget(target_accuracy=0.9)
    kwargs = dict(stage_cost=([1.0, 2.0], "macs"), stage_macs=[1, 2], target=target)
    with caplog.at_level("INFO", logger="s2dnas.dynamic.calibrate"):
        reward, metrics, cal = score_logits(logits, base_macs=3, **kwargs)
    assert not cal.feasible and metrics["feasible"] is False
    assert [r.levelname for r in caplog.records] == ["INFO"] and "No threshold setting meets" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="s2dnas.dynamic.calibrate"):
        assert not calibrate_at(logits, **kwargs).feasible
    assert [r.levelname for r in caplog.records] == ["WARNING"]
