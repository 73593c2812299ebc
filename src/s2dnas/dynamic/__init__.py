"""Dynamic inference: confidence measures, the batched early-exit executor, calibration, save/load."""
from __future__ import annotations

from s2dnas.dynamic.calibrate import (
    NEVER_EXIT,
    Calibration,
    CurvePoint,
    StageLogits,
    calibrate,
    collect_logits,
    evaluate_dynamic,
    oracle,
    pareto_front,
)
from s2dnas.dynamic.confidence import CONFIDENCE_MEASURES, confidence, confidence_np
from s2dnas.dynamic.executor import DynamicNet, DynamicOutput, executed_macs, reference_forward, route
from s2dnas.dynamic.io import build_model_spec, load, save_dynamic
from s2dnas.dynamic.plots import plot_accuracy_vs_macs, plot_exit_histogram

__all__ = [
    "CONFIDENCE_MEASURES",
    "NEVER_EXIT",
    "Calibration",
    "CurvePoint",
    "DynamicNet",
    "DynamicOutput",
    "StageLogits",
    "build_model_spec",
    "calibrate",
    "collect_logits",
    "confidence",
    "confidence_np",
    "evaluate_dynamic",
    "executed_macs",
    "load",
    "oracle",
    "pareto_front",
    "plot_accuracy_vs_macs",
    "plot_exit_histogram",
    "reference_forward",
    "route",
    "save_dynamic",
]
