"""evaluate_policy: the one re-scoring of a policy and its calibration curve (``s2dnas run`` and ``evaluate``)."""
from __future__ import annotations

import pytest

from s2dnas.dynamic import ExitPolicy, calibrate, evaluate_policy
from s2dnas.errors import CalibrationError
from test_dynamic_calibrate import STAGE_MACS, brute, synthetic


def test_on_the_calibration_data_it_reproduces_the_calibration() -> None:
    """Re-scored on the logits it was chosen on, the policy and every curve point score exactly as the
    calibration's own (vectorised) scorer said; the policy's record carries the curve whole."""
    val = synthetic(seed=0)
    cal = calibrate(val, stage_macs=STAGE_MACS, macs_budget=300.0)
    scores = evaluate_policy(val, cal.policy, stage_macs=STAGE_MACS)
    assert (scores.result["accuracy"], scores.result["expected_macs"]) == (cal.accuracy, cal.expected_macs)
    assert scores.curve_source == "calibration" and len(scores.curve) == len(cal.curve) > 1
    assert scores.curve == [{"expected_macs": p.expected_macs, "accuracy": p.accuracy} for p in cal.curve]


def test_on_another_split_each_curve_point_scores_as_the_rule_says() -> None:
    val, test = synthetic(seed=0), synthetic(seed=1)
    cal = calibrate(val, stage_macs=STAGE_MACS, target_accuracy=0.7)
    scores = evaluate_policy(test, cal.policy, stage_macs=STAGE_MACS)
    n = test.num_examples
    for point, got in zip(cal.curve, scores.curve, strict=True):
        acc, total = brute(test, point.thresholds, STAGE_MACS)  # independent implementation of the rule
        assert got == {"expected_macs": total / n, "accuracy": pytest.approx(acc)}
    acc, total = brute(test, cal.thresholds, STAGE_MACS)
    assert scores.result["total_macs"] == total and scores.result["accuracy"] == pytest.approx(acc)
    assert scores.stage_accuracy == test.stage_accuracy() and scores.oracle["accuracy"] >= max(scores.stage_accuracy)


def test_without_a_record_the_curve_is_empty_or_swept_on_the_split() -> None:
    test = synthetic(seed=2)
    bare = ExitPolicy(thresholds=(0.6, 0.6), confidence="max_softmax")
    none = evaluate_policy(test, bare, stage_macs=STAGE_MACS)
    assert (none.curve, none.curve_source) == ([], None)
    swept = evaluate_policy(test, bare, stage_macs=STAGE_MACS, sweep=True)
    assert swept.curve_source == "sweep" and swept.result == none.result
    # the sweep is the calibration of this very split: its Pareto front, MACs and accuracy both rising
    macs = [p["expected_macs"] for p in swept.curve]
    accs = [p["accuracy"] for p in swept.curve]
    assert macs == sorted(macs) and accs == sorted(accs) and len(macs) > 1
    assert macs[-1] <= sum(STAGE_MACS) and accs[-1] <= swept.oracle["accuracy"]


def test_thresholds_of_another_stage_count_are_refused() -> None:
    with pytest.raises(CalibrationError):
        evaluate_policy(synthetic(num_stages=2), ExitPolicy(thresholds=(0.5, 0.5)), stage_macs=STAGE_MACS[:2])
