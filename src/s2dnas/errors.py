"""Exception hierarchy of s2dnas.

Every error a user can cause derives from :class:`S2DNASError`; the CLI prints its message as
one line and exits with code 2. Messages say what was expected, what was found, and what to do.
"""
from __future__ import annotations

__all__ = [
    "S2DNASError",
    "ConfigError",
    "UnknownModelError",
    "DataError",
    "CheckpointError",
    "UnsupportedModelError",
    "InvalidArchitectureError",
    "TransformError",
    "CalibrationError",
    "ExportError",
    "RunDirError",
    "TrainingError",
]


class S2DNASError(Exception):
    """Base class of every error s2dnas raises on purpose."""

    exit_code: int = 2

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(S2DNASError, ValueError):
    """A configuration value (file, ``--set`` override or keyword argument) is invalid."""


class UnknownModelError(S2DNASError, KeyError):
    """A model name is not registered, or a ``module:factory`` reference cannot be resolved."""


class DataError(S2DNASError):
    """A dataset is missing, truncated, empty, or does not match the model."""


class CheckpointError(S2DNASError):
    """A checkpoint or model directory is missing, truncated, unsafe, or for another model."""


class UnsupportedModelError(S2DNASError):
    """The graph analysis met a node it cannot split; the message names the node and why."""


class InvalidArchitectureError(S2DNASError, ValueError):
    """An architecture does not belong to its space; ``path`` names the offending field."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.path = path


class TransformError(S2DNASError):
    """Building a multi-stage network from a valid architecture failed."""


class CalibrationError(S2DNASError, ValueError):
    """Thresholds cannot be chosen or are invalid (wrong count, out of range)."""


class ExportError(S2DNASError):
    """Export to ONNX or TorchScript failed, or an exported directory is malformed."""


class RunDirError(S2DNASError):
    """An output or run directory is unwritable, or exists without ``--resume``/``--force``."""


class TrainingError(S2DNASError):
    """Training stopped: the loss became NaN or infinite (the last good checkpoint is kept)."""
