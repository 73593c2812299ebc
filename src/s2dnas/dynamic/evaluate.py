"""How an exit policy does on one split: the one re-scoring that ``s2dnas run`` and ``s2dnas evaluate`` share.

Given a split's cached logits (:func:`~s2dnas.dynamic.calibrate.collect_logits`) and the policy
whole, :func:`evaluate_policy` applies the policy's thresholds, the oracle exits and every stage
alone, and re-scores the thresholds of the calibration's curve (chosen on val) on this split: the
accuracy-vs-MACs curve a user can expect. ``run`` reports it on test after calibrating; ``evaluate``
on whichever split it is asked for.

Example:
    >>> import torch
    >>> from s2dnas.dynamic import StageLogits, calibrate
    >>> logits = StageLogits(logits=torch.randn(2, 50, 3), labels=torch.randint(0, 3, (50,)))
    >>> policy = calibrate(logits, stage_macs=[10, 30], macs_budget=25.0).policy
    >>> scores = evaluate_policy(logits, policy, stage_macs=[10, 30])
    >>> scores.result["expected_macs"] <= 25.0, scores.curve_source
    (True, 'calibration')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from s2dnas.dynamic.calibrate import Calibration, StageLogits, calibrate, evaluate_dynamic, oracle
from s2dnas.dynamic.policy import ExitPolicy

__all__ = ["PolicyScores", "evaluate_policy"]


@dataclass(frozen=True)
class PolicyScores:
    """An exit policy's results on one split.

    Attributes:
        result: :func:`~s2dnas.dynamic.calibrate.evaluate_dynamic` of the policy (accuracy,
            expected MACs, exit fractions, ...).
        oracle: the best any exit rule could do on these inputs.
        stage_accuracy: per stage, its accuracy on every input.
        curve: ``{"expected_macs", "accuracy"}`` per threshold setting of the curve, by MACs.
        curve_source: ``"calibration"`` (the calibration's thresholds re-scored here), ``"sweep"``
            (no saved curve: thresholds swept on this split itself, optimistic) or ``None`` (no curve).
    """

    result: dict[str, Any]
    oracle: dict[str, Any]
    stage_accuracy: list[float]
    curve: list[dict[str, float]]
    curve_source: str | None


def evaluate_policy(stage_logits: StageLogits, policy: ExitPolicy, *, stage_macs: Sequence[int],
                    sweep: bool = False) -> PolicyScores:
    """Score ``policy`` and its calibration's curve on one split's cached logits.

    Args:
        stage_logits: every stage's logits on the split, with its labels.
        policy: the exit policy; its calibration record (if any) holds the curve re-scored here.
        stage_macs: per stage, its own MACs per input.
        sweep: when the policy records no curve, sweep the thresholds on this split instead
            (optimistic: chosen on the data it reports); else the curve stays empty.

    Raises:
        CalibrationError: thresholds or per-stage MACs that do not fit the logits, or a
            malformed calibration record.
    """
    result = evaluate_dynamic(stage_logits, policy, stage_macs=stage_macs)
    calibration = Calibration.from_policy(policy)
    if calibration is not None and calibration.curve:
        scored = (evaluate_dynamic(stage_logits, policy.with_thresholds(p.thresholds), stage_macs=stage_macs)
                  for p in calibration.curve)
        curve = [{"expected_macs": r["expected_macs"], "accuracy": r["accuracy"]} for r in scored]
        source: str | None = "calibration"
    elif sweep:
        swept = calibrate(stage_logits, stage_macs=stage_macs, macs_budget=float(sum(stage_macs)),
                          confidence=policy.confidence)
        curve = [{"expected_macs": p.expected_macs, "accuracy": p.accuracy} for p in swept.curve]
        source = "sweep"
    else:
        curve, source = [], None
    return PolicyScores(result=result, oracle=oracle(stage_logits, stage_macs),
                        stage_accuracy=stage_logits.stage_accuracy(), curve=curve, curve_source=source)
