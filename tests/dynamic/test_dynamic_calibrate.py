"""Calibration on cached logits: target and budget modes against brute force, curve, oracle, errors."""
from __future__ import annotations

import inspect
import itertools
import json

import numpy as np
import pytest
import torch

from s2dnas.dynamic import (
    Calibration,
    StageLogits,
    calibrate,
    collect_logits,
    confidence,
    evaluate_dynamic,
    oracle,
)
from s2dnas.dynamic.optimise import candidate_thresholds
from s2dnas.errors import CalibrationError, DataError

STAGE_MACS = [100, 150, 400]


def synthetic(num_stages: int = 3, n: int = 80, k: int = 5, seed: int = 0) -> StageLogits:
    """Later stages are right more often; confidence is higher when a stage is far from its limit."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=gen)
    difficulty = torch.rand(n, generator=gen)
    limits = torch.linspace(0.45, 0.9, num_stages)
    logits = []
    for s in range(num_stages):
        right = difficulty < limits[s]
        predicted = torch.where(right, labels, (labels + 1) % k)
        strength = 0.5 + 4 * (limits[s] - difficulty).abs() + 0.5 * torch.rand(n, generator=gen)
        z = 0.3 * torch.randn(n, k, generator=gen)
        z[torch.arange(n), predicted] += strength
        logits.append(z)
    return StageLogits(logits=torch.stack(logits), labels=labels)


def brute(stage_logits: StageLogits, thresholds, stage_macs, measure: str = "max_softmax") -> tuple[float, int]:
    """Accuracy and total MACs of one setting, computed directly from the rule (independent code)."""
    s_count, n = stage_logits.num_stages, stage_logits.num_examples
    exit_stage = torch.full((n,), s_count - 1)
    decided = torch.zeros(n, dtype=torch.bool)
    for s in range(s_count - 1):
        leave = ~decided & (confidence(stage_logits.logits[s], measure) >= thresholds[s])
        exit_stage[leave] = s
        decided |= leave
    chosen = stage_logits.logits[exit_stage, torch.arange(n)]
    acc = (chosen.argmax(1) == stage_logits.labels).double().mean().item()
    total = sum(int((exit_stage >= s).sum()) * int(m) for s, m in enumerate(stage_macs))
    return acc, total


def grid_points(stage_logits: StageLogits, stage_macs, measure: str = "max_softmax"):
    """(thresholds, accuracy, total MACs) of every setting with a distinct outcome (independent code:
    the observed confidences themselves, 0 and 2 as thresholds; all combinations; numpy rule)."""
    conf = np.stack([confidence(z, measure).numpy() for z in stage_logits.logits[:-1]])
    per_stage = [np.unique(np.concatenate([[0.0], c, [2.0]]).astype(np.float32)) for c in conf]
    settings = np.array(list(itertools.product(*per_stage)), dtype=np.float32)
    s_count, n = stage_logits.num_stages, stage_logits.num_examples
    exit_stage = np.full((len(settings), n), s_count - 1)
    for s in range(s_count - 2, -1, -1):
        exit_stage = np.where(conf[s][None] >= settings[:, s : s + 1], s, exit_stage)
    ok = stage_logits.correct().numpy()[exit_stage, np.arange(n)[None]]
    total = sum((exit_stage >= s).sum(axis=1) * int(m) for s, m in enumerate(stage_macs))
    return [(t, a, int(tot)) for t, a, tot in zip(settings.tolist(), ok.mean(axis=1).tolist(), total.tolist())]


@pytest.mark.parametrize("measure", ["max_softmax", "entropy", "margin"])
def test_target_mode_is_the_cheapest_grid_point_reaching_the_target(measure: str) -> None:
    sl = synthetic()
    n = sl.num_examples
    target = 0.8
    cal = calibrate(sl, stage_macs=STAGE_MACS, target_accuracy=target, confidence=measure)
    assert cal.feasible and cal.accuracy >= target
    acc, total = brute(sl, cal.thresholds, STAGE_MACS, measure)
    assert acc == pytest.approx(cal.accuracy, abs=1e-12) and total == round(cal.expected_macs * n)
    assert sum(cal.exit_fractions) == pytest.approx(1.0)
    for t, a, tot in grid_points(sl, STAGE_MACS, measure):
        if a >= target:
            assert tot >= total, f"{t} reaches the target with fewer MACs"
    assert cal.expected_macs < sum(STAGE_MACS), "early exits should save MACs on this data"


def test_budget_mode_is_the_most_accurate_grid_point_within_budget() -> None:
    sl = synthetic(seed=1)
    budget = 300.0
    cal = calibrate(sl, stage_macs=STAGE_MACS, macs_budget=budget)
    assert cal.feasible and cal.expected_macs <= budget and cal.macs_budget == budget
    n = sl.num_examples
    for t, a, tot in grid_points(sl, STAGE_MACS):
        if tot <= budget * n:
            assert a <= cal.accuracy + 1e-12, f"{t} is more accurate within the budget"


def test_curve_is_the_pareto_front_of_the_grid() -> None:
    sl = synthetic(seed=2)
    cal = calibrate(sl, stage_macs=STAGE_MACS, target_accuracy=0.7)
    macs = [p.expected_macs for p in cal.curve]
    accs = [p.accuracy for p in cal.curve]
    assert macs == sorted(macs) and all(a < b for a, b in zip(accs, accs[1:]))
    n = sl.num_examples
    for _, a, tot in grid_points(sl, STAGE_MACS):
        assert any(p.expected_macs * n <= tot + 1e-6 and p.accuracy >= a - 1e-12 for p in cal.curve)
    for p in cal.curve[:: max(1, len(cal.curve) // 5)]:
        acc, total = brute(sl, p.thresholds, STAGE_MACS)
        assert acc == pytest.approx(p.accuracy) and total == round(p.expected_macs * n)


def test_infeasible_target_and_budget_return_best_effort_with_feasible_false() -> None:
    sl = synthetic()
    best = oracle(sl, STAGE_MACS)
    assert best["accuracy"] < 1.0
    cal = calibrate(sl, stage_macs=STAGE_MACS, target_accuracy=1.0)
    assert not cal.feasible and "No threshold setting meets" in cal.message
    assert cal.accuracy == pytest.approx(max(a for _, a, _ in grid_points(sl, STAGE_MACS)))
    cheap = calibrate(sl, stage_macs=STAGE_MACS, macs_budget=50.0)
    assert not cheap.feasible and cheap.expected_macs == STAGE_MACS[0] and cheap.exit_fractions[0] == 1.0


def test_default_target_is_base_accuracy_minus_tolerance() -> None:
    cal = calibrate(synthetic(), stage_macs=STAGE_MACS, base_accuracy=0.8, tolerance=0.05, grid=8)
    assert cal.target_accuracy == pytest.approx(0.75) and cal.accuracy >= 0.75


def test_modes_and_inputs_are_checked() -> None:
    sl = synthetic()
    with pytest.raises(CalibrationError, match="exactly one mode"):
        calibrate(sl, stage_macs=STAGE_MACS, target_accuracy=0.8, macs_budget=200.0)
    with pytest.raises(CalibrationError, match="base_accuracy"):
        calibrate(sl, stage_macs=STAGE_MACS)
    with pytest.raises(CalibrationError, match="a fraction"):
        calibrate(sl, stage_macs=STAGE_MACS, target_accuracy=80)
    with pytest.raises(CalibrationError, match="stage_macs"):
        calibrate(sl, target_accuracy=0.8)
    with pytest.raises(CalibrationError, match="Expected 3 per-stage MACs"):
        calibrate(sl, stage_macs=[1, 2], target_accuracy=0.8)
    with pytest.raises(CalibrationError, match="no loader"):
        calibrate(sl, [(torch.zeros(1), torch.zeros(1))], stage_macs=STAGE_MACS, target_accuracy=0.8)


def test_calibrate_takes_data_never_a_split_name(msnet3) -> None:
    """Design: calibrate reads only the loader it is given; there is no way to name a split."""
    params = inspect.signature(calibrate).parameters
    assert not {"split", "splits", "dataset"} & set(params)
    with pytest.raises(CalibrationError, match="never a split name"):
        calibrate(msnet3, "test", target_accuracy=0.5)
    with pytest.raises(CalibrationError, match="validation loader"):
        calibrate(msnet3, target_accuracy=0.5)


class _CountingLoader:
    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


def test_collect_logits_is_one_pass_and_calibrate_accepts_a_network(msnet3, data3) -> None:
    x, y = data3
    loader = _CountingLoader([(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)])
    sl = collect_logits(msnet3, loader)
    assert loader.passes == 1 and sl.logits.shape == (3, len(x), 10) and torch.equal(sl.labels, y)
    with torch.no_grad():
        torch.testing.assert_close(sl.logits, torch.stack(msnet3(x)), rtol=0, atol=1e-5)
    cal = calibrate(msnet3, loader, macs_budget=float(sum(msnet3.analytic_macs)) / 2, grid=8)
    assert loader.passes == 2, "calibrate must read its loader exactly once"
    ref = calibrate(sl, stage_macs=msnet3.analytic_macs, macs_budget=float(sum(msnet3.analytic_macs)) / 2, grid=8)
    assert cal.thresholds == ref.thresholds and cal.stage_macs == tuple(msnet3.analytic_macs)
    with pytest.raises(DataError, match="non-empty"):
        collect_logits(msnet3, [])
    with pytest.raises(DataError, match="labels in 0..9"):
        collect_logits(msnet3, [(x[:4], torch.tensor([0, 1, 2, 11]))])


def test_four_stages_are_calibrated_exactly() -> None:
    sl = synthetic(num_stages=4, n=30, seed=3)
    macs = [100, 120, 150, 400]
    cal = calibrate(sl, stage_macs=macs, target_accuracy=0.8)
    assert cal.exact and len(cal.thresholds) == 3
    n = sl.num_examples
    feasible = [tot for _, a, tot in grid_points(sl, macs) if a >= 0.8 - 1e-12]
    assert cal.feasible and round(cal.expected_macs * n) == min(feasible)
    coarse = calibrate(sl, stage_macs=macs, target_accuracy=0.8, grid=2)
    assert not coarse.exact and coarse.expected_macs >= cal.expected_macs


def test_calibration_round_trips_through_json() -> None:
    cal = calibrate(synthetic(), stage_macs=STAGE_MACS, target_accuracy=0.8, grid=8)
    data = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(data) == cal
    with pytest.raises(CalibrationError, match="malformed"):
        Calibration.from_dict({**data, "thresholds": None})
    with pytest.raises(CalibrationError, match="format"):
        Calibration.from_dict({**data, "format": "other/1"})


def test_evaluate_dynamic_edge_settings_and_oracle() -> None:
    sl = synthetic()
    n = sl.num_examples
    first = evaluate_dynamic(sl, [0.0, 0.0], stage_macs=STAGE_MACS)
    assert first["exit_fractions"] == [1.0, 0.0, 0.0] and first["expected_macs"] == STAGE_MACS[0]
    assert first["accuracy"] == pytest.approx(sl.stage_accuracy()[0])
    last = evaluate_dynamic(sl, [2.0, 1.5], stage_macs=STAGE_MACS)
    assert last["exit_counts"] == [0, 0, n] and last["total_macs"] == sum(STAGE_MACS) * n
    assert last["accuracy"] == pytest.approx(sl.stage_accuracy()[-1])
    with pytest.raises(CalibrationError, match="Expected 2 thresholds"):
        evaluate_dynamic(sl, [0.5], stage_macs=STAGE_MACS)
    best = oracle(sl, STAGE_MACS)
    correct = sl.correct()
    assert best["accuracy"] == pytest.approx(correct.any(0).double().mean().item())
    assert best["accuracy"] >= max(sl.stage_accuracy())
    first_right = int((correct[0]).sum())
    assert best["exit_counts"][0] == first_right and sum(best["exit_counts"]) == n


def test_thresholds_sit_between_observed_confidences() -> None:
    """Candidates are midpoints: a recomputed logit a few ulps off cannot flip an input."""
    conf = confidence(synthetic().logits[0], "max_softmax").numpy()
    cands = candidate_thresholds(conf)
    assert cands[0] == 0.0 and cands[-1] == 2.0 and len(cands) == len(np.unique(conf)) + 1
    inner = cands[(cands > 0.0) & (cands <= 1.0)]
    assert np.abs(conf[None] - inner[:, None]).min() > 1e-6
    # threshold j lets leave exactly the inputs at or above the j-th smallest distinct value
    u = np.unique(conf)
    for j, t in enumerate(cands[:-1]):
        assert np.array_equal(conf >= t, conf >= u[j])
