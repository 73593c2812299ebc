"""Torch-free runtime of an exported dynamic network: ONNX Runtime + numpy only.

``s2dnas export`` (or :func:`s2dnas.export.export_dynamic`) writes a directory with one ONNX graph
per stage and a ``manifest.json``; :class:`OnnxDynamicNet` loads it and routes inputs exactly as
the PyTorch ``DynamicNet`` does. One module per job:

* :mod:`~s2dnas_runtime.policy`: :class:`ExitPolicy` (thresholds, confidence measure, per-stage
  cost, calibration record) and the list of confidence measures;
* :mod:`~s2dnas_runtime.confidence`: the confidence measures in numpy and the reference exit rule;
* :mod:`~s2dnas_runtime.preprocessing`: raw images -> network input;
* :mod:`~s2dnas_runtime.manifest`: the export format and its validation;
* :mod:`~s2dnas_runtime.session`: the ONNX Runtime sessions and the batched router;
* :mod:`~s2dnas_runtime.errors`: its exceptions.

Design choice: this is a separate top-level package, not a submodule of ``s2dnas``, because
``import s2dnas`` imports torch and a submodule cannot be imported without its package. It
imports nothing but the standard library, numpy and (lazily) onnxruntime; a test checks that
``torch`` is not in ``sys.modules`` after using it. The torch library depends on it (the exit
policy and the numpy confidence are defined here once), never the reverse.

Example:
    >>> from s2dnas_runtime import OnnxDynamicNet          # doctest: +SKIP
    >>> net = OnnxDynamicNet("export_dir")                 # doctest: +SKIP
    >>> logits, exit_stage = net(images_uint8)             # doctest: +SKIP
"""
from __future__ import annotations

from s2dnas_runtime.confidence import confidence_np, exit_rule
from s2dnas_runtime.errors import ExportError, PolicyError
from s2dnas_runtime.manifest import (
    FORMAT,
    FORMAT_VERSION,
    IMAGE_INPUT,
    LOGITS_OUTPUT,
    MANIFEST_NAME,
    manifest_policy,
    manifest_preprocessing,
    read_manifest,
)
from s2dnas_runtime.policy import CONFIDENCE_MEASURES, NEVER_EXIT, POLICY_FORMAT, ExitPolicy, validate_measure
from s2dnas_runtime.preprocessing import Preprocessing, preprocess
from s2dnas_runtime.session import OnnxDynamicNet

__all__ = [
    "CONFIDENCE_MEASURES",
    "FORMAT",
    "FORMAT_VERSION",
    "IMAGE_INPUT",
    "LOGITS_OUTPUT",
    "MANIFEST_NAME",
    "NEVER_EXIT",
    "POLICY_FORMAT",
    "ExitPolicy",
    "ExportError",
    "OnnxDynamicNet",
    "PolicyError",
    "Preprocessing",
    "confidence_np",
    "exit_rule",
    "manifest_policy",
    "manifest_preprocessing",
    "preprocess",
    "read_manifest",
    "validate_measure",
]
