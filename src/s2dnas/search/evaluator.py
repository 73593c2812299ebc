"""Evaluators: score one architecture (train it briefly or take it from the super-network, then
calibrate on val at the run's target and reward, see :mod:`s2dnas.search.score`).

``SupernetEvaluator`` (strategy ``oneshot``, the default path of METHOD.md) extracts the candidate
from the super-network trained once (:class:`~s2dnas.train.supernet.SuperNet`: shared weights,
per-stage heads) and recalibrates its batch norms: seconds per candidate. ``TrainedEvaluator``
(strategies ``rl``/``random``) builds it with inherited weights and trains it briefly with the
multi-stage loss and distillation. Both only ever see the val split for scoring, and both score
with :func:`~s2dnas.search.score.score_logits` (one calibration call, one reward).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from s2dnas.config import CalibrationTarget, SearchConfig, TrainConfig
from s2dnas.data import DataSplits, make_loader
from s2dnas.dynamic.calibrate import StageLogits, collect_logits
from s2dnas.errors import ConfigError
from s2dnas.cost import StageCost, macs_stage_cost
from s2dnas.search.score import score_logits
from s2dnas.space import Architecture, MultiStageNet, Space
from s2dnas.train.loops import reestimate_batch_norm_seeded
from s2dnas.train.multistage import train_multistage
from s2dnas.train.supernet import SuperNet, recalibrate

__all__ = ["CandidateResult", "Evaluator", "TrainedEvaluator", "SupernetEvaluator"]

_logger = logging.getLogger(__name__)

_BN_SEED = 12345  # data order and augmentation of every candidate's batch-norm re-estimation


@dataclass(frozen=True)
class CandidateResult:
    """One scored architecture."""

    architecture: Architecture
    reward: float
    metrics: dict[str, Any]
    seconds: float


class Evaluator:
    """Scores architectures of one space on the val split.

    Subclasses implement :meth:`_prepare` (turn an architecture into a trained network); this
    base class calibrates it on val and computes the reward, the same way for every evaluator.

    Args:
        space: the space the architectures come from.
        splits: the data (only ``val`` is used for scoring).
        target: what the thresholds aim at (:func:`s2dnas.config.resolve_target`, the same rule
            as the final calibration's).
        confidence: the confidence measure of the exits.
        reward: ``macs_saving`` (default), ``accuracy_in_budget`` or ``tradeoff``.
        device: where to run.
        eval_batch_size: batch size of the val pass.
        tradeoff_weight: weight ``w >= 0`` of the MAC term of the ``tradeoff`` reward.
        stage_cost: the per-stage cost hook the thresholds minimise (default MACs; the final
            calibration uses the same one).
        base_cost: the base model's cost in the hook's unit when that is not MACs (the reward's
            reference, e.g. its measured latency in ms).
    """

    def __init__(self, space: Space, splits: DataSplits, *, target: CalibrationTarget, confidence: str, reward: str,
                 device: torch.device, eval_batch_size: int = 512,
                 tradeoff_weight: float = SearchConfig.tradeoff_weight,
                 stage_cost: StageCost = macs_stage_cost, base_cost: float | None = None) -> None:
        if reward == "accuracy_in_budget" and not target.budget_mode:
            raise ConfigError("Reward 'accuracy_in_budget' needs calibration.macs_budget (a fraction of the base "
                              "model's MACs, e.g. 0.3)")
        if reward == "macs_saving" and target.budget_mode:
            raise ConfigError("Reward 'macs_saving' needs an accuracy target, but calibration.macs_budget is set; "
                              "set it to null or use search.reward=accuracy_in_budget")
        self.space = space
        self.splits = splits
        self.target = target
        self.confidence = confidence
        self.reward = reward
        self.device = device
        self.tradeoff_weight = tradeoff_weight
        self.stage_cost = stage_cost
        self.base_cost = base_cost
        self.val_loader = make_loader(splits.val, batch_size=eval_batch_size)
        self.base_macs = space.base_macs()

    def _prepare(self, arch: Architecture) -> MultiStageNet:
        raise NotImplementedError

    def _reestimate_batch_norm(self, net: MultiStageNet, *, batch_size: int, batches: int) -> None:
        """Re-estimate ``net``'s batch-norm statistics on training batches that depend on nothing else.

        The loader is made afresh with a fixed seed, and the augmentation's draws come from a
        fixed seed in a forked RNG, so a candidate scores the same whatever was scored before it
        (a resumed search scores its next candidates in a new process; issue 7, determinism).
        """
        reestimate_batch_norm_seeded(net, self.splits.train, batch_size=batch_size, batches=batches, seed=_BN_SEED,
                                     device=self.device)

    def evaluate(self, arch: Architecture) -> CandidateResult:
        """Build, train (or take from the super-network), calibrate on val and score ``arch``."""
        start = time.time()
        net = self._prepare(arch)
        reward, metrics = self.score_network(net)
        return CandidateResult(arch, reward, metrics, time.time() - start)

    def score_network(self, net: MultiStageNet) -> tuple[float, dict[str, Any]]:
        """Score a network that is ready for evaluation (its batch-norm statistics final): collect
        every stage's val logits once, calibrate at the run's target, compute the reward.

        The step :meth:`evaluate` ends with; call it directly to score a network made elsewhere
        (e.g. a candidate after its own fine-tuning) exactly like a search candidate.
        """
        logits = collect_logits(net, self.val_loader, device=self.device)
        return self.score(logits, net)

    def score(self, logits: StageLogits, net: MultiStageNet) -> tuple[float, dict[str, Any]]:
        """Calibrate ``net``'s cached val logits at the run's target and compute the reward."""
        # the final calibration's target and cost (issue 16: with reward=tradeoff and a MACs
        # budget the search used to aim at the accuracy target instead)
        reward, metrics, _ = score_logits(logits, stage_cost=self.stage_cost(net), stage_macs=net.analytic_macs,
                                          target=self.target, base_macs=self.base_macs, base_cost=self.base_cost,
                                          reward=self.reward,
                                          confidence=self.confidence, tradeoff_weight=self.tradeoff_weight)
        return reward, metrics


class TrainedEvaluator(Evaluator):
    """Scores a candidate after brief training from inherited weights (METHOD.md "Search").

    Brief training leaves the batch norms' running statistics far from the trained weights'
    (momentum 0.1 over a few dozen steps, starting from statistics the sliced network never had),
    so they are re-estimated on ``bn_batches`` training batches before scoring.
    """

    def __init__(self, space: Space, splits: DataSplits, *, teacher: nn.Module, train: TrainConfig,
                 bn_batches: int = SearchConfig.bn_batches, **kwargs: Any) -> None:
        super().__init__(space, splits, **kwargs)
        self.teacher = teacher
        self.train_config = train
        self.bn_batches = bn_batches
        self.bn_batch_size = train.batch_size or 128

    def _prepare(self, arch: Architecture) -> MultiStageNet:
        net = self.space.build(arch).to(self.device)
        train_multistage(net, self.splits, config=self.train_config, teacher=self.teacher, out_dir=None,
                         device=self.device, progress=False, evaluate_val=False)
        self._reestimate_batch_norm(net, batch_size=self.bn_batch_size, batches=self.bn_batches)
        return net


class SupernetEvaluator(Evaluator):
    """Scores a candidate taken from the trained super-network, without its own training.

    The candidate is extracted (copies of its slices and the per-stage heads) and its batch norms
    are recalibrated on ``bn_batches`` seeded training batches (the same batches for every
    candidate, so a score depends on nothing scored before it), then scored like any other.

    Args:
        supernet: the trained super-network; its space is the one searched.
        splits: the data (``val`` for scoring, ``train`` for the batch-norm statistics).
        bn_batches: training batches of the batch-norm recalibration.
        batch_size: their batch size.
        **kwargs: the :class:`Evaluator` options.
    """

    def __init__(self, supernet: SuperNet, splits: DataSplits, *, bn_batches: int = SearchConfig.bn_batches,
                 batch_size: int = 128, **kwargs: Any) -> None:
        super().__init__(supernet.space, splits, **kwargs)
        self.supernet = supernet
        self.bn_batches = bn_batches
        self.bn_batch_size = batch_size
        self._bn_images: list[torch.Tensor] | None = None

    def recalibration_images(self) -> list[torch.Tensor]:
        """The ``bn_batches`` seeded training batches every candidate's statistics come from.

        Drawn once (shuffled with seed ``_BN_SEED``, augmented in an RNG forked and seeded with it)
        and kept: the same tensors a fresh seeded loader would give each candidate (when no
        stochastic layer, e.g. dropout, drew from the same RNG between the batches), without
        loading and augmenting them again for every candidate.
        """
        if self._bn_images is None:
            loader = make_loader(self.splits.train, batch_size=self.bn_batch_size, shuffle=True, seed=_BN_SEED)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_BN_SEED)
                self._bn_images = [x for _, (x, _y) in zip(range(self.bn_batches), loader)]
        return self._bn_images

    def recalibrate(self, net: MultiStageNet) -> None:
        """Re-estimate ``net``'s batch-norm statistics on :meth:`recalibration_images` (then eval mode)."""
        batches = [(x, None) for x in self.recalibration_images()]
        recalibrate(net, batches, batches=len(batches), seed=_BN_SEED, device=self.device)

    def _prepare(self, arch: Architecture) -> MultiStageNet:
        net = self.supernet.extract(arch).to(self.device)
        self.recalibrate(net)
        return net
