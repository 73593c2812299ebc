"""TorchScript variant of each stage: ``torch.jit.script`` of the stage's GraphModule.

A stage is an ``fx.GraphModule`` whose generated ``forward`` is straight-line code over standard
modules, so it scripts as it is (no tracing, no example inputs, no frozen batch size). Tracing is
the fallback for a custom module that does not script; a traced stage is only valid for the
control flow the example inputs took, which the round-trip check then verifies.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from s2dnas._io import atomic_write_bytes
from s2dnas.errors import ExportError

__all__ = ["script_stage", "save_torchscript", "load_torchscript", "quiet_deprecations"]

_logger = logging.getLogger(__name__)

# torch 2.9+ deprecates TorchScript and the TorchScript-based ONNX exporter in favour of
# torch.export; we use them on purpose (see docs/design.md, "Export"), so their notices are noise.
_QUIET = (
    r".*torch\.jit\.\w+.* is deprecated.*",
    r".*TorchScript type system doesn't support instance-level annotations.*",
    r".*legacy TorchScript-based ONNX export.*",
    r".*The feature will be removed.*",
    r".*The axis name: .* will not be used.*",  # dynamo exporter: all inputs share one batch axis
)


@contextlib.contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Silence torch's deprecation notices for TorchScript and the TorchScript-based exporter."""
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def script_stage(stage: nn.Module, example_inputs: Sequence[torch.Tensor] | None = None
                 ) -> tuple[torch.jit.ScriptModule, str]:
    """Compile one stage to TorchScript.

    Args:
        stage: the stage module (an ``fx.GraphModule``), in eval mode.
        example_inputs: inputs for the tracing fallback (``(x, *cached)``).

    Returns:
        The compiled module and the method used, ``"script"`` or ``"trace"``.

    Raises:
        ExportError: neither scripting nor tracing works.
    """
    with quiet_deprecations():
        try:
            return torch.jit.script(stage), "script"
        except Exception as err:  # noqa: BLE001 - the scripting frontend raises many types
            if example_inputs is None:
                raise ExportError(f"torch.jit.script failed on {type(stage).__name__} and no example inputs "
                                  f"were given to trace it: {_first_line(err)}") from err
            _logger.info("torch.jit.script failed (%s); tracing instead", _first_line(err))
            script_error = err
        try:
            with torch.no_grad():
                return torch.jit.trace(stage, tuple(example_inputs), check_trace=False), "trace"
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"TorchScript failed on {type(stage).__name__}: script: {_first_line(script_error)}; "
                              f"trace: {_first_line(err)}") from err


def save_torchscript(module: torch.jit.ScriptModule, path: str | os.PathLike[str]) -> None:
    """Save a compiled stage atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    with quiet_deprecations():
        torch.jit.save(module, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_torchscript(path: str | os.PathLike[str], *, map_location: str | torch.device | None = "cpu"
                     ) -> torch.jit.ScriptModule:
    """Load a stage saved by :func:`save_torchscript` (``stage(x, *cached) -> (logits, *features)``)."""
    with quiet_deprecations():
        return torch.jit.load(str(path), map_location=map_location)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
