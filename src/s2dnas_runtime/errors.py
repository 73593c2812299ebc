"""The runtime's own exceptions (it cannot import :mod:`s2dnas.errors`, which imports torch)."""
from __future__ import annotations

__all__ = ["ExportError", "PolicyError"]


class ExportError(Exception):
    """An exported directory is missing, malformed, or does not match its ONNX graphs.

    The torch-free twin of :class:`s2dnas.errors.ExportError`; ``s2dnas.deploy.OnnxDynamicNet``
    raises the ``s2dnas`` one.
    """


class PolicyError(ValueError):
    """An exit policy (thresholds, confidence measure, per-stage cost) is invalid.

    Attributes:
        field: the policy field at fault: ``"thresholds"``, ``"confidence"``, ``"stage_cost"``,
            ``"cost_unit"`` or ``"calibration"`` (lets ``s2dnas`` map it to its own error types).
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
