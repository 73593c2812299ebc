"""Tests of compute_reward on hand-made calibrations (no network, no data)."""
from __future__ import annotations

import itertools

import pytest

from s2dnas.dynamic.calibrate import Calibration, CurvePoint
from s2dnas.errors import ConfigError
from s2dnas.search.reward import REWARDS, compute_reward
from s2dnas.search.strategy import REWARD_FOR_INVALID

BASE_MACS = 1000


def make_cal(*, accuracy: float, expected_macs: float, feasible: bool, target: float | None = 0.9,
             budget: float | None = None, best_accuracy: float | None = None) -> Calibration:
    """A 3-stage calibration; its curve's best point has ``best_accuracy`` (default: ``accuracy``)."""
    best = accuracy if best_accuracy is None else best_accuracy
    curve = (CurvePoint(expected_macs=expected_macs / 2, accuracy=min(accuracy, best) - 0.05, thresholds=(0.5, 0.5)),
             CurvePoint(expected_macs=expected_macs, accuracy=best, thresholds=(0.9, 0.9)))
    return Calibration(thresholds=(0.9, 0.9), confidence="max_softmax", accuracy=accuracy, expected_macs=expected_macs,
                       exit_fractions=(0.5, 0.25, 0.25), feasible=feasible, target_accuracy=target,
                       macs_budget=budget, stage_macs=(100, 200, 700), num_examples=100, curve=curve)


# candidates of a target-mode (macs_saving) search: feasible ones meet target 0.9 at any cost up to the
# base's; infeasible ones miss it by various gaps, including ones that are very cheap or very accurate
FEASIBLE = [make_cal(accuracy=a, expected_macs=m, feasible=True) for a, m in
            itertools.product((0.90, 0.95, 1.0), (50.0, 400.0, 999.0, 1000.0))]
INFEASIBLE = [make_cal(accuracy=a, expected_macs=m, feasible=False) for a, m in
              itertools.product((0.0, 0.5, 0.85, 0.8999), (1.0, 50.0, 1000.0))]


def reward_of(cal: Calibration, reward: str = "macs_saving", **kw: float) -> float:
    return compute_reward(cal, reward=reward, base_macs=BASE_MACS, **kw)[0]


def test_feasible_always_outranks_infeasible() -> None:
    worst_feasible = min(reward_of(c) for c in FEASIBLE)
    best_infeasible = max(reward_of(c) for c in INFEASIBLE)
    assert worst_feasible >= 1.0 > 0.0 > best_infeasible
    assert min(reward_of(c) for c in INFEASIBLE) > REWARD_FOR_INVALID  # failed candidates rank below all


def test_feasible_ranked_by_macs_saving() -> None:
    cheap, dear = make_cal(accuracy=0.91, expected_macs=250.0, feasible=True), \
        make_cal(accuracy=0.99, expected_macs=500.0, feasible=True)
    assert reward_of(cheap) == pytest.approx(4.0)
    assert reward_of(dear) == pytest.approx(2.0)  # more accurate than needed earns nothing


def test_infeasible_ranked_by_accuracy_gap() -> None:
    # the gap is measured with the most accurate point of the curve, whatever the chosen point's cost
    near = make_cal(accuracy=0.7, best_accuracy=0.88, expected_macs=1000.0, feasible=False)
    far = make_cal(accuracy=0.7, best_accuracy=0.60, expected_macs=10.0, feasible=False)
    assert reward_of(near) == pytest.approx(0.88 - 0.9)
    assert reward_of(far) == pytest.approx(0.60 - 0.9)
    ranked = sorted(INFEASIBLE, key=reward_of)
    gaps = [0.9 - c.accuracy for c in ranked]
    assert gaps == sorted(gaps, reverse=True)


def test_metrics_describe_the_calibration() -> None:
    value, metrics = compute_reward(make_cal(accuracy=0.95, expected_macs=250.0, feasible=True),
                                    reward="macs_saving", base_macs=BASE_MACS)
    assert value == pytest.approx(4.0)
    assert metrics["macs_ratio"] == pytest.approx(0.25)
    assert metrics["feasible"] is True
    assert metrics["thresholds"] == [0.9, 0.9]
    assert metrics["exit_fractions"] == [0.5, 0.25, 0.25]
    assert metrics["target_accuracy"] == 0.9
    assert metrics["best_accuracy"] == pytest.approx(0.95)


def test_accuracy_in_budget() -> None:
    def cal(accuracy: float, feasible: bool, macs: float = 300.0) -> Calibration:
        return make_cal(accuracy=accuracy, expected_macs=macs, feasible=feasible, target=None, budget=300.0)

    fits = [cal(a, True) for a in (0.1, 0.5, 0.9)]
    # over the budget (the cheapest setting is returned): ordered by the excess, whatever the accuracy
    over = [cal(a, False, macs) for a, macs in ((0.2, 310.0), (0.99, 500.0), (1.0, 1000.0))]
    assert [reward_of(c, "accuracy_in_budget") for c in fits] == pytest.approx([0.1, 0.5, 0.9])
    assert [reward_of(c, "accuracy_in_budget") for c in over] == pytest.approx([-0.01, -0.2, -0.7])
    assert min(reward_of(c, "accuracy_in_budget") for c in fits) > max(reward_of(c, "accuracy_in_budget") for c in over)
    assert min(reward_of(c, "accuracy_in_budget") for c in over) > REWARD_FOR_INVALID


def test_tradeoff() -> None:
    def cal(accuracy: float, macs: float) -> Calibration:
        return make_cal(accuracy=accuracy, expected_macs=macs, feasible=True)

    # MnasNet-style accuracy * (macs / base) ** -w: the full-cost network scores its accuracy,
    # and at equal accuracy the cheaper one wins, more so for a larger weight
    assert reward_of(cal(0.9, 1000.0), "tradeoff", tradeoff_weight=0.5) == pytest.approx(0.9)
    assert reward_of(cal(0.9, 250.0), "tradeoff", tradeoff_weight=0.5) == pytest.approx(1.8)
    assert reward_of(cal(0.9, 250.0), "tradeoff", tradeoff_weight=0.0) == pytest.approx(0.9)
    assert reward_of(cal(0.9, 250.0), "tradeoff", tradeoff_weight=0.07) > reward_of(cal(0.9, 500.0), "tradeoff",
                                                                                   tradeoff_weight=0.07)
    # at equal cost the more accurate one wins
    assert reward_of(cal(0.95, 500.0), "tradeoff") > reward_of(cal(0.9, 500.0), "tradeoff")
    # the weight trades accuracy against cost: 1 point of accuracy is worth less than halving the MACs
    assert reward_of(cal(0.89, 500.0), "tradeoff", tradeoff_weight=0.07) > reward_of(cal(0.9, 1000.0), "tradeoff",
                                                                                    tradeoff_weight=0.07)


def test_tradeoff_works_in_either_calibration_mode() -> None:
    budget_cal = make_cal(accuracy=0.8, expected_macs=500.0, feasible=True, target=None, budget=500.0)
    assert reward_of(budget_cal, "tradeoff", tradeoff_weight=0.5) == pytest.approx(0.8 * 2 ** 0.5)


def test_misuse_raises() -> None:
    target_cal = make_cal(accuracy=0.9, expected_macs=500.0, feasible=True)
    budget_cal = make_cal(accuracy=0.9, expected_macs=500.0, feasible=True, target=None, budget=500.0)
    with pytest.raises(ConfigError, match="needs thresholds calibrated to a target accuracy"):
        compute_reward(budget_cal, reward="macs_saving", base_macs=BASE_MACS)
    with pytest.raises(ConfigError, match="needs thresholds calibrated to a budget"):
        compute_reward(target_cal, reward="accuracy_in_budget", base_macs=BASE_MACS)
    with pytest.raises(ConfigError, match=r"Expected reward to be one of .*'macs_saving'.*but got 'flops'"):
        compute_reward(target_cal, reward="flops", base_macs=BASE_MACS)
    with pytest.raises(ConfigError, match="Expected tradeoff_weight >= 0"):
        compute_reward(target_cal, reward="tradeoff", base_macs=BASE_MACS, tradeoff_weight=-0.07)
    assert set(REWARDS) == {"macs_saving", "accuracy_in_budget", "tradeoff"}


def test_latency_calibrations_are_rewarded_in_milliseconds():
    """A calibration that minimised measured latency is rewarded by its milliseconds against the
    base's, not by its MACs: two candidates with equal MACs and different latency rank apart."""
    import dataclasses

    fast = dataclasses.replace(make_cal(accuracy=0.95, expected_macs=500.0, feasible=True), cost_unit="ms",
                               stage_cost=(1.0, 2.0, 4.0), expected_cost=2.0)
    slow = dataclasses.replace(fast, expected_cost=5.0)
    r_fast, m_fast = compute_reward(fast, reward="macs_saving", base_macs=BASE_MACS, base_cost=10.0)
    r_slow, _ = compute_reward(slow, reward="macs_saving", base_macs=BASE_MACS, base_cost=10.0)
    assert (r_fast, r_slow) == (pytest.approx(5.0), pytest.approx(2.0))
    assert m_fast["macs_ratio"] == pytest.approx(500.0 / BASE_MACS) and m_fast["cost_unit"] == "ms"
    over = dataclasses.replace(fast, feasible=False, target_accuracy=None, cost_budget=1.5, accuracy=0.8)
    assert compute_reward(over, reward="accuracy_in_budget", base_macs=BASE_MACS,
                          base_cost=10.0)[0] == pytest.approx(-(2.0 - 1.5) / 10.0)
    with pytest.raises(ConfigError, match="base model's cost in ms"):
        compute_reward(fast, reward="macs_saving", base_macs=BASE_MACS)
