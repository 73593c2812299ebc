"""Rewards: turn a calibrated candidate into one number a controller maximises.

Design choice (METHOD.md "Search"; its evidence section): briefly trained candidates often cannot
reach the base model's accuracy at all, so every reward must still rank them. ``macs_saving``
gives a feasible candidate its MAC saving ``F_base / F_dynamic`` (>= 1, since all stages together
never cost more than the base) and an infeasible one ``accuracy - target`` (< 0): every
feasible candidate outranks every infeasible one, and among infeasible ones the closer wins.
``accuracy_in_budget`` likewise: within the budget, the accuracy (>= 0); over it (the calibration
then returns the cheapest setting), ``-(M - B) / M_base``, the excess over the budget as a fraction
of the base model's MACs (in (-1, 0)): the nearer the budget, the better.
"""
from __future__ import annotations

from typing import Any

from s2dnas.config import SearchConfig
from s2dnas.config.schema import REWARDS
from s2dnas.dynamic.calibrate import Calibration
from s2dnas.errors import ConfigError

__all__ = ["REWARDS", "compute_reward"]  # REWARDS is defined once, with the config's choices


def compute_reward(calibration: Calibration, *, reward: str, base_macs: int, base_cost: float | None = None,
                   tradeoff_weight: float = SearchConfig.tradeoff_weight) -> tuple[float, dict[str, Any]]:
    """Score a calibration; returns the reward and the metrics it came from.

    The cost the reward counts is the one the calibration minimised (``calibration.cost_unit``):
    MACs, or e.g. measured milliseconds per input, then against ``base_cost`` in that unit.

    Args:
        calibration: thresholds chosen on val in the mode matching ``reward`` (target mode for
            ``macs_saving``, budget mode for ``accuracy_in_budget``; either for ``tradeoff``).
        reward: ``macs_saving``, ``accuracy_in_budget`` or ``tradeoff``.
        base_macs: the base model's MACs per input.
        base_cost: the base model's cost per input in ``calibration.cost_unit`` when that is not
            MACs (required then).
        tradeoff_weight: ``w >= 0`` in ``accuracy * (cost / base_cost) ** -w`` (MnasNet-style;
            the weight of the cost term; its default is ``search.tradeoff_weight``'s; larger ``w``
            favours cheaper candidates more).

    Raises:
        ConfigError: unknown reward, calibration made in the wrong mode, ``tradeoff_weight < 0``,
            or a non-MAC cost without ``base_cost``.
    """
    macs_ratio = calibration.expected_macs / base_macs
    # the cost the thresholds minimised (the cost hook's), in its unit
    cost = calibration.expected_macs if calibration.expected_cost is None else calibration.expected_cost
    if calibration.cost_unit == "macs":
        base, budget = float(base_macs), calibration.macs_budget
    else:
        if base_cost is None or not base_cost > 0:
            raise ConfigError(f"Expected the base model's cost in {calibration.cost_unit} to reward a calibration "
                              f"that minimised {calibration.cost_unit}, but got {base_cost!r}")
        base, budget = float(base_cost), calibration.cost_budget
    best_accuracy = max((p.accuracy for p in calibration.curve), default=calibration.accuracy)
    metrics = {"accuracy": calibration.accuracy, "expected_macs": calibration.expected_macs,
               "macs_ratio": macs_ratio, "cost_unit": calibration.cost_unit, "cost_ratio": cost / base,
               "feasible": calibration.feasible,
               "thresholds": list(calibration.thresholds), "exit_fractions": list(calibration.exit_fractions),
               "best_accuracy": best_accuracy, "target_accuracy": calibration.target_accuracy}
    if reward == "macs_saving":
        if calibration.target_accuracy is None:
            raise ConfigError("Reward 'macs_saving' needs thresholds calibrated to a target accuracy")
        if calibration.feasible:
            value = base / cost
        else:
            value = best_accuracy - calibration.target_accuracy
    elif reward == "accuracy_in_budget":
        if budget is None:
            raise ConfigError("Reward 'accuracy_in_budget' needs thresholds calibrated to a budget (MACs or latency)")
        value = calibration.accuracy if calibration.feasible else -(cost - budget) / base
    elif reward == "tradeoff":
        if not tradeoff_weight >= 0:  # a negative weight would reward spending more MACs
            raise ConfigError(f"Expected tradeoff_weight >= 0 (the weight of the MAC term), but got {tradeoff_weight}")
        value = calibration.accuracy * (cost / base) ** -tradeoff_weight
    else:
        raise ConfigError(f"Expected reward to be one of {REWARDS}, but got {reward!r}")
    return float(value), metrics
