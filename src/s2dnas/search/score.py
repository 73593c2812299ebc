"""Scoring a candidate at the operating point the user asked for: one code path for every evaluator.

A candidate network (trained briefly, or taken from the super-network) is scored in four steps:
collect every stage's val logits once; take the per-stage cost from the **cost hook**
(``stage_cost(msnet) -> (costs, unit)``, default :func:`macs_stage_cost`: the analytic MACs of
each stage, unit ``"macs"``); choose the exit thresholds on val at the run's
:class:`~s2dnas.config.CalibrationTarget` (:func:`calibrate_at`, the one call into the
ExitPolicy-based calibration of :mod:`s2dnas.dynamic.calibrate`); turn the result into a reward
(:func:`~s2dnas.search.reward.compute_reward`).

With the default reward ``macs_saving`` and ``M_base``, ``M`` and ``a`` the base model's MACs,
the candidate's expected MACs and its accuracy on val at the chosen thresholds:

* target reached: ``M_base / M`` (the cost saving, >= 1);
* target missed (the calibration then returns the most accurate setting): ``a - a*`` (the
  negative accuracy gap, in [-1, 0)).

So every candidate that reaches the target ranks above every one that does not, and those are
ordered by how far they are from it. With a MACs budget (``accuracy_in_budget``): met -> ``a``;
missed -> ``-(M - B) / M_base``, the cheapest setting's excess over the budget (see
:mod:`s2dnas.search.reward`).

:func:`score` is the super-network's path: extract the architecture (copies of its slices and its
per-stage heads), recalibrate its batch norms on seeded training batches, then the four steps.

Example:
    >>> from s2dnas.config import CalibrationTarget
    >>> reward_mode(CalibrationTarget(target_accuracy=0.9)), reward_mode(CalibrationTarget(macs_budget=1e6))
    ('macs_saving', 'accuracy_in_budget')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from s2dnas.config import CalibrationTarget, SearchConfig
from s2dnas.dynamic.calibrate import Calibration, StageLogits, calibrate, collect_logits, oracle
from s2dnas.cost import StageCost, macs_stage_cost
from s2dnas.search.reward import compute_reward
from s2dnas.space import Architecture, MultiStageNet
from s2dnas.train.supernet import SuperNet, recalibrate

__all__ = ["StageCost", "macs_stage_cost", "reward_mode", "calibrate_at", "score_logits", "Score", "score"]


def reward_mode(target: CalibrationTarget) -> str:
    """The reward that ranks candidates at ``target``: ``macs_saving`` (accuracy target) or
    ``accuracy_in_budget`` (MACs budget)."""
    return "accuracy_in_budget" if target.budget_mode else "macs_saving"


def calibrate_at(stage_logits: StageLogits, *, stage_cost: tuple[Sequence[float], str], stage_macs: Sequence[int],
                 target: CalibrationTarget, confidence: str = "max_softmax", warn: bool = True) -> Calibration:
    """Thresholds chosen on ``stage_logits`` at ``target`` (its ``.policy`` is the ExitPolicy).

    The one call into the threshold calibration, for the search and the final network alike.

    Args:
        stage_logits: every stage's val logits.
        stage_cost: ``(costs, unit)`` from the cost hook: what the thresholds minimise.
        stage_macs: each stage's own MACs per input (always counted and reported).
        target: the run's operating point.
        confidence: the exit confidence measure.
        warn: log a missed target as a warning (the final network); ``False`` for candidates.
    """
    return calibrate(stage_logits, stage_macs=[int(m) for m in stage_macs], stage_cost=stage_cost,
                     confidence=confidence, warn=warn, **target.calibrate_kwargs())


def score_logits(stage_logits: StageLogits, *, stage_cost: tuple[Sequence[float], str], stage_macs: Sequence[int],
                 target: CalibrationTarget, base_macs: int, base_cost: float | None = None,
                 reward: str | None = None, confidence: str = "max_softmax",
                 tradeoff_weight: float = SearchConfig.tradeoff_weight) -> tuple[float, dict[str, Any], Calibration]:
    """Calibrate cached val logits at ``target`` and compute the reward.

    Args:
        stage_logits: every stage's val logits.
        stage_cost: ``(costs, unit)`` from the cost hook (what the thresholds minimise).
        stage_macs: each stage's own MACs (always reported).
        target: the run's operating point.
        base_macs: the base model's MACs per input.
        base_cost: the base model's cost per input in ``stage_cost``'s unit when that is not MACs
            (e.g. its measured latency in ms): the reward's reference.
        reward: one of :data:`~s2dnas.search.reward.REWARDS`; None = :func:`reward_mode`.
        confidence: the exit confidence measure.
        tradeoff_weight: weight of the MAC term of the ``tradeoff`` reward.

    Returns:
        ``(reward, metrics, calibration)``.
    """
    cal = calibrate_at(stage_logits, stage_cost=stage_cost, stage_macs=stage_macs, target=target,
                       confidence=confidence, warn=False)  # a candidate missing the target is ordinary
    value, metrics = compute_reward(cal, reward=reward or reward_mode(target), base_macs=base_macs,
                                    base_cost=base_cost, tradeoff_weight=tradeoff_weight)
    metrics.update(stage_val_accuracy=stage_logits.stage_accuracy(), stage_macs=[int(m) for m in stage_macs],
                   stage_cost=[float(c) for c in stage_cost[0]], cost_unit=stage_cost[1],
                   oracle_macs_ratio=oracle(stage_logits, stage_macs)["expected_macs"] / base_macs)
    return value, metrics, cal


@dataclass(frozen=True)
class Score:
    """One architecture scored from the super-network (val only).

    Attributes:
        architecture: what was scored.
        reward: the number the search maximises (module docstring).
        metrics: accuracy, expected MACs, thresholds, exits, per-stage accuracy and MACs, ...
        calibration: the thresholds chosen at the target (``.policy`` is the ExitPolicy).
        network: the extracted, recalibrated network (``score(..., keep_network=True)``).
    """

    architecture: Architecture
    reward: float
    metrics: dict[str, Any]
    calibration: Calibration
    network: MultiStageNet | None = field(default=None, compare=False, repr=False)

    @property
    def reached(self) -> bool:
        """Whether the target (accuracy or budget) was met on val."""
        return bool(self.metrics["feasible"])

    def to_dict(self) -> dict[str, Any]:
        """Plain data (without the network)."""
        return {"architecture": self.architecture.to_dict(), "reward": self.reward, "reached": self.reached,
                **self.metrics}


def score(supernet: SuperNet, arch: Architecture, *, val_data: Iterable[Any], bn_data: Iterable[Any],
          target: CalibrationTarget, reward: str | None = None, bn_batches: int = SearchConfig.bn_batches,
          bn_seed: int = 0, confidence: str = "max_softmax", stage_cost: StageCost = macs_stage_cost,
          base_cost: float | None = None,
          tradeoff_weight: float = SearchConfig.tradeoff_weight, device: torch.device | str | None = None,
          keep_network: bool = False) -> Score:
    """Score ``arch`` from ``supernet`` at ``target``.

    Args:
        supernet: the trained super-network.
        arch: an architecture of its space.
        val_data: the val loader (thresholds are chosen on it; nothing else is read for scoring).
        bn_data: a deterministically ordered training loader for the batch-norm recalibration
            (a seeded shuffling DataLoader draws another order at every pass: make one per call).
        target: the run's operating point (:func:`s2dnas.config.resolve_target`).
        reward: one of :data:`~s2dnas.search.reward.REWARDS`; None = :func:`reward_mode`.
        bn_batches: batches of ``bn_data`` the statistics are averaged over.
        bn_seed: seed of the recalibration's random augmentation.
        confidence: the exit confidence measure.
        stage_cost: the per-stage cost hook (default MACs).
        base_cost: the base model's cost in the hook's unit when that is not MACs.
        tradeoff_weight: weight of the MAC term of the ``tradeoff`` reward.
        device: where to run (default: the super-network's device).
        keep_network: return the extracted, recalibrated network in :attr:`Score.network`.
    """
    net = supernet.extract(arch)
    if device is not None:
        net.to(device)
    recalibrate(net, bn_data, batches=bn_batches, seed=bn_seed)
    logits = collect_logits(net, val_data)
    value, metrics, cal = score_logits(logits, stage_cost=stage_cost(net), stage_macs=net.analytic_macs,
                                       target=target, base_macs=supernet.space.base_macs(), base_cost=base_cost,
                                       reward=reward,
                                       confidence=confidence, tradeoff_weight=tradeoff_weight)
    return Score(architecture=arch, reward=value, metrics=metrics, calibration=cal,
                 network=net if keep_network else None)
