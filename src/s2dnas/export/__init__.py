"""Export a dynamic network for deployment: one ONNX graph per stage, a manifest, TorchScript.

The exported directory runs without torch on :class:`s2dnas_runtime.OnnxDynamicNet` (also
available as ``s2dnas.deploy.OnnxDynamicNet``, which raises ``s2dnas`` errors).
"""
from __future__ import annotations

from s2dnas.export.onnx import StageIO, export_dynamic, export_stage_onnx, plan_features, preprocessing_of, prune_stage
from s2dnas.export.torchscript import load_torchscript, save_torchscript, script_stage

__all__ = [
    "StageIO",
    "export_dynamic",
    "export_stage_onnx",
    "plan_features",
    "preprocessing_of",
    "prune_stage",
    "load_torchscript",
    "save_torchscript",
    "script_stage",
]
