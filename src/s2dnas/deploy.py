"""Run an exported dynamic network from code that has the whole package: the runtime with ``s2dnas`` errors.

The runtime itself is the top-level package :mod:`s2dnas_runtime` (numpy and onnxruntime only;
``import s2dnas`` imports torch, and a submodule cannot be imported without its package, so a
torch-free runtime cannot live inside ``s2dnas``). Everything public is imported from there:
``from s2dnas_runtime import OnnxDynamicNet, ExitPolicy, preprocess, ...``.

Design choice: this module does not re-export the runtime. It adds one thing: the runtime's
errors as ``s2dnas`` errors, so that code (and the CLI) catching :class:`s2dnas.errors.S2DNASError`
reports a bad export in one line. :class:`OnnxDynamicNet` and :func:`read_manifest` here raise
:class:`s2dnas.errors.ExportError` where the runtime raises :class:`s2dnas_runtime.ExportError`,
and :class:`~s2dnas.errors.CalibrationError` / :class:`~s2dnas.errors.ConfigError` where it
raises :class:`s2dnas_runtime.PolicyError`; otherwise they are the runtime's.

Example:
    >>> from s2dnas.deploy import OnnxDynamicNet                 # doctest: +SKIP
    >>> net = OnnxDynamicNet("export_dir")                       # doctest: +SKIP
    >>> logits, exit_stage = net(images_uint8)                   # doctest: +SKIP
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import s2dnas_runtime as _runtime
from s2dnas.dynamic.policy import policy_errors
from s2dnas.errors import ExportError

__all__ = ["OnnxDynamicNet", "read_manifest"]


@contextmanager
def _s2dnas_errors() -> Iterator[None]:
    try:
        with policy_errors():
            yield
    except _runtime.ExportError as err:
        raise ExportError(str(err)) from None


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an export's ``manifest.json`` (see :func:`s2dnas_runtime.read_manifest`).

    Raises:
        ExportError: missing or malformed manifest, or a missing stage file.
    """
    with _s2dnas_errors():
        return _runtime.read_manifest(directory)


class OnnxDynamicNet(_runtime.OnnxDynamicNet):
    """:class:`s2dnas_runtime.OnnxDynamicNet` raising ``s2dnas`` errors.

    Args:
        directory: an export directory (``manifest.json`` + ``stage{s}.onnx``).
        providers: ONNX Runtime execution providers (default: CPU).
        policy: an exit policy replacing the manifest's.
        num_threads: ONNX Runtime intra-op threads.

    Raises:
        ExportError: missing or malformed manifest, a missing stage file, or a graph that does
            not match the manifest.
        CalibrationError: a policy for another number of stages.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, directory: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 policy: _runtime.ExitPolicy | None = None, num_threads: int | None = None) -> None:
        with _s2dnas_errors():
            super().__init__(directory, providers=providers, policy=policy, num_threads=num_threads)

    @property
    def policy(self) -> _runtime.ExitPolicy:
        """The exit policy in use (the manifest's unless replaced)."""
        return self._policy

    @policy.setter
    def policy(self, policy: _runtime.ExitPolicy) -> None:
        with _s2dnas_errors():
            _runtime.OnnxDynamicNet.policy.fset(self, policy)  # type: ignore[attr-defined]
