"""Evaluators: score one architecture (build, train or re-use shared weights, calibrate on val).

``TrainedEvaluator`` follows METHOD.md: build with inherited weights, train briefly with the
multi-stage loss and distillation, calibrate thresholds on val, reward. ``OneShotEvaluator``
scores a candidate with the weights of a super-network trained once (see ``oneshot.py``), after
re-estimating its batch-norm statistics. Both only ever see the val split for scoring.
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
from s2dnas.dynamic.calibrate import StageLogits, calibrate, collect_logits, oracle
from s2dnas.errors import ConfigError
from s2dnas.search.reward import compute_reward
from s2dnas.space import Architecture, MultiStageNet, Space
from s2dnas.train.loops import reestimate_batch_norm_seeded
from s2dnas.train.multistage import train_multistage

__all__ = ["CandidateResult", "Evaluator", "TrainedEvaluator", "OneShotEvaluator"]

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
    """

    def __init__(self, space: Space, splits: DataSplits, *, target: CalibrationTarget, confidence: str, reward: str,
                 device: torch.device, eval_batch_size: int = 512,
                 tradeoff_weight: float = SearchConfig.tradeoff_weight) -> None:
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
        """Build, train (or re-use shared weights), calibrate on val and score ``arch``."""
        start = time.time()
        net = self._prepare(arch)
        logits = collect_logits(net, self.val_loader, device=self.device)
        reward, metrics = self.score(logits, stage_macs=net.analytic_macs)
        return CandidateResult(arch, reward, metrics, time.time() - start)

    def score(self, logits: StageLogits, *, stage_macs: list[int]) -> tuple[float, dict[str, Any]]:
        """Calibrate on cached val logits and compute the reward."""
        # the final calibration's target (issue 16: with reward=tradeoff and a MACs budget the
        # search used to aim at the accuracy target instead)
        cal = calibrate(logits, stage_macs=stage_macs, confidence=self.confidence, **self.target.calibrate_kwargs())
        reward, metrics = compute_reward(cal, reward=self.reward, base_macs=self.base_macs,
                                         tradeoff_weight=self.tradeoff_weight)
        metrics["stage_val_accuracy"] = logits.stage_accuracy()
        metrics["stage_macs"] = list(stage_macs)
        metrics["oracle_macs_ratio"] = oracle(logits, stage_macs)["expected_macs"] / self.base_macs
        return reward, metrics


class TrainedEvaluator(Evaluator):
    """Scores a candidate after brief training from inherited weights (METHOD.md "Search").

    Brief training leaves the batch norms' running statistics far from the trained weights'
    (momentum 0.1 over a few dozen steps, starting from statistics the sliced network never had),
    so they are re-estimated on ``bn_batches`` training batches before scoring.
    """

    def __init__(self, space: Space, splits: DataSplits, *, teacher: nn.Module, train: TrainConfig,
                 bn_batches: int = 20, **kwargs: Any) -> None:
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


class OneShotEvaluator(Evaluator):
    """Scores a candidate with the super-network's shared weights, without its own training.

    ``space`` must be built over the super-network (its model holds the shared weights).
    """

    def __init__(self, space: Space, splits: DataSplits, *, bn_batches: int = 20, batch_size: int = 128,
                 **kwargs: Any) -> None:
        super().__init__(space, splits, **kwargs)
        self.bn_batches = bn_batches
        self.bn_batch_size = batch_size

    def _prepare(self, arch: Architecture) -> MultiStageNet:
        net = self.space.build(arch).to(self.device)
        self._reestimate_batch_norm(net, batch_size=self.bn_batch_size, batches=self.bn_batches)
        return net
