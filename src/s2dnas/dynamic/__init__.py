"""Dynamic inference: exit policy, confidence measures, the batched early-exit executor, calibration, save/load.

Modules, in import order (each imports only the ones before it): :mod:`.policy` (the
:class:`ExitPolicy`, defined in the torch-free runtime), :mod:`.confidence`, :mod:`.files` (the
model directory format, writing), :mod:`.executor` (:class:`DynamicNet`), :mod:`.optimise` (the
threshold optimiser), :mod:`.calibrate`, :mod:`.evaluate` (a policy and its curve re-scored on a split),
:mod:`.io` (loading), :mod:`.plots`.
"""
from __future__ import annotations

from s2dnas.dynamic.calibrate import (
    Calibration,
    CurvePoint,
    StageLogits,
    calibrate,
    collect_logits,
    evaluate_dynamic,
    oracle,
    pareto_front,
)
from s2dnas.dynamic.confidence import confidence, confidence_np
from s2dnas.dynamic.evaluate import PolicyScores, evaluate_policy
from s2dnas.dynamic.executor import DynamicNet, DynamicOutput, executed_macs, reference_forward, route
from s2dnas.dynamic.files import build_model_spec, save_dynamic
from s2dnas.dynamic.io import load
from s2dnas.dynamic.optimise import ThresholdSearch, optimise_thresholds
from s2dnas.dynamic.plots import plot_accuracy_vs_macs, plot_exit_histogram
from s2dnas.dynamic.policy import CONFIDENCE_MEASURES, NEVER_EXIT, ExitPolicy, PolicyError

__all__ = [
    "CONFIDENCE_MEASURES",
    "NEVER_EXIT",
    "Calibration",
    "CurvePoint",
    "DynamicNet",
    "DynamicOutput",
    "ExitPolicy",
    "PolicyError",
    "PolicyScores",
    "StageLogits",
    "ThresholdSearch",
    "build_model_spec",
    "calibrate",
    "collect_logits",
    "confidence",
    "confidence_np",
    "evaluate_dynamic",
    "evaluate_policy",
    "executed_macs",
    "load",
    "optimise_thresholds",
    "oracle",
    "pareto_front",
    "plot_accuracy_vs_macs",
    "plot_exit_histogram",
    "reference_forward",
    "route",
    "save_dynamic",
]
