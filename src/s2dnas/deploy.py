"""Run an exported dynamic network on ONNX Runtime (convenience re-export of :mod:`s2dnas_runtime`).

The runtime itself lives in the top-level package :mod:`s2dnas_runtime`, which imports only
numpy and onnxruntime: ``import s2dnas`` imports torch, and Python cannot import a submodule
without running its package's ``__init__``, so a torch-free runtime cannot live inside ``s2dnas``.
On a deployment machine without torch, use ``from s2dnas_runtime import OnnxDynamicNet``; this
module is for code that has the whole package anyway. The only difference: its
:class:`OnnxDynamicNet` raises :class:`s2dnas.errors.ExportError` (so ``except S2DNASError``
catches it), where the torch-free one raises :class:`s2dnas_runtime.ExportError`.

Example:
    >>> from s2dnas.deploy import OnnxDynamicNet                 # doctest: +SKIP
    >>> net = OnnxDynamicNet("export_dir")                       # doctest: +SKIP
    >>> logits, exit_stage = net(net.preprocess(images_uint8))   # doctest: +SKIP
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import s2dnas_runtime as _runtime
from s2dnas.errors import ExportError
from s2dnas_runtime import CONFIDENCE_MEASURES, FORMAT_VERSION, MANIFEST_NAME, confidence_np, exit_rule, preprocess

__all__ = [
    "CONFIDENCE_MEASURES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "OnnxDynamicNet",
    "confidence_np",
    "exit_rule",
    "preprocess",
    "read_manifest",
]


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an export's ``manifest.json`` (see :func:`s2dnas_runtime.read_manifest`).

    Raises:
        ExportError: missing or malformed manifest, or a missing stage file.
    """
    try:
        return _runtime.read_manifest(directory)
    except _runtime.ExportError as err:
        raise ExportError(str(err)) from None


class OnnxDynamicNet(_runtime.OnnxDynamicNet):
    """:class:`s2dnas_runtime.OnnxDynamicNet` raising :class:`s2dnas.errors.ExportError`.

    Args:
        directory: an export directory (``manifest.json`` + ``stage{s}.onnx``).
        providers: ONNX Runtime execution providers (default: CPU).
        thresholds: ``S - 1`` thresholds overriding the manifest's.
        confidence: a confidence measure overriding the manifest's.
        num_threads: ONNX Runtime intra-op threads.

    Raises:
        ExportError: missing or malformed manifest, a missing stage file, or a graph that does
            not match the manifest.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, directory: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 thresholds: Sequence[float] | None = None, confidence: str | None = None,
                 num_threads: int | None = None) -> None:
        try:
            super().__init__(directory, providers=providers, thresholds=thresholds, confidence=confidence,
                             num_threads=num_threads)
        except _runtime.ExportError as err:
            raise ExportError(str(err)) from None
