"""Running an export on ONNX Runtime: one session per stage, batched early-exit routing.

:class:`OnnxDynamicNet` runs the same rule as the PyTorch ``DynamicNet``: stage 1 runs on the
whole batch, the inputs whose confidence reaches the stage's threshold leave, and only the others
go on to the next stage, which reads the cached features of the earlier stages (gathered with
numpy fancy indexing, never recomputed). The last stage answers for every input still left.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2dnas_runtime.confidence import confidence_np
from s2dnas_runtime.errors import ExportError
from s2dnas_runtime.manifest import manifest_policy, manifest_preprocessing, read_manifest
from s2dnas_runtime.policy import ExitPolicy
from s2dnas_runtime.preprocessing import preprocess

__all__ = ["OnnxDynamicNet"]

_PIP_HINT = "pip install 's2dnas[export]'"


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"OnnxDynamicNet needs onnxruntime; install it with: {_PIP_HINT}") from err
    return onnxruntime


class OnnxDynamicNet:
    """An exported dynamic network run on ONNX Runtime with batched early exits.

    Args:
        directory: an export directory (``manifest.json`` + ``stage{s}.onnx``).
        providers: ONNX Runtime execution providers (default: ``["CPUExecutionProvider"]``).
        policy: an :class:`ExitPolicy` replacing the manifest's (e.g. other thresholds, to trade
            accuracy for cost without re-exporting); ``net.policy = ...`` does the same later.
        num_threads: ONNX Runtime intra-op threads (default: ONNX Runtime's choice).

    Raises:
        ExportError: missing or malformed manifest, a missing stage file, or a graph whose inputs
            and outputs do not match the manifest.
        PolicyError: ``policy`` is for another number of stages.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, directory: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 policy: ExitPolicy | None = None, num_threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        ort = _import_onnxruntime()
        m = self.manifest
        self.num_stages: int = m["num_stages"]
        self.num_classes: int = m["num_classes"]
        self.input_shape: tuple[int, int, int] = tuple(m["input_shape"])  # type: ignore[assignment]
        self.class_names: tuple[str, ...] = tuple(m["class_names"])
        self.stage_macs: tuple[int, ...] = tuple(m["stage_macs"])
        self.preprocessing = manifest_preprocessing(m)
        self._policy = manifest_policy(m)
        if policy is not None:
            self.policy = policy
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self._sessions = []
        self._inputs: list[list[tuple[str, str | None]]] = []
        self._outputs: list[list[tuple[str, str | None]]] = []
        for s, entry in enumerate(m["stages"]):
            file = self.directory / entry["onnx"]
            try:
                session = ort.InferenceSession(str(file), sess_options=options, providers=providers)
            except Exception as err:  # noqa: BLE001 - onnxruntime raises several unrelated types
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ExportError(f"ONNX Runtime cannot load stage {s + 1} ({file}): {first}") from None
            inputs = [(e["name"], e.get("cache_key")) for e in entry["inputs"]]
            outputs = [(e["name"], e.get("cache_key")) for e in entry["outputs"]]
            got_in = sorted(i.name for i in session.get_inputs())
            got_out = sorted(o.name for o in session.get_outputs())
            if got_in != sorted(n for n, _ in inputs) or got_out != sorted(n for n, _ in outputs):
                raise ExportError(
                    f"Stage {s + 1} graph {file} has inputs {got_in} and outputs {got_out}, but the manifest "
                    f"lists {sorted(n for n, _ in inputs)} and {sorted(n for n, _ in outputs)}; re-export the model")
            self._sessions.append(session)
            self._inputs.append(inputs)
            self._outputs.append(outputs)
        # Last stage that reads each feature, so the cache drops a feature once nobody needs it.
        self._last_use: dict[str, int] = {}
        for s, inputs in enumerate(self._inputs):
            for name, _ in inputs[1:]:
                self._last_use[name] = s

    # -- settings ------------------------------------------------------------------------------
    @property
    def policy(self) -> ExitPolicy:
        """The exit policy in use (the manifest's unless replaced)."""
        return self._policy

    @policy.setter
    def policy(self, policy: ExitPolicy) -> None:
        if not isinstance(policy, ExitPolicy):
            raise TypeError(f"Expected an ExitPolicy, but got {type(policy).__name__}; for other thresholds use "
                            "net.policy = net.policy.with_thresholds([...])")
        policy.validate(num_stages=self.num_stages)
        self._policy = policy

    @property
    def thresholds(self) -> list[float]:
        """The ``S - 1`` exit thresholds of :attr:`policy` (read-only; replace the policy to change them)."""
        return list(self._policy.thresholds)

    @property
    def confidence(self) -> str:
        """The confidence measure of :attr:`policy`."""
        return self._policy.confidence

    # -- running -------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> np.ndarray:
        """Raw images -> the network's input ``(B, C, H, W)`` float32, as in training.

        Integer images are scaled by their dtype's maximum, floats taken as ``[0, 1]``; with the
        manifest's preprocessing entry they are also converted to the network's channels,
        resized and normalised (see :func:`s2dnas_runtime.preprocess` for the layouts).
        """
        return preprocess(images, input_shape=self.input_shape, preprocessing=self.preprocessing)

    def run_stage(self, stage: int, image: np.ndarray, features: dict[str, np.ndarray]) -> np.ndarray:
        """Run one stage; read earlier features from ``features`` and add its own to it.

        Args:
            stage: 0-based stage index.
            image: ``(B, C, H, W)`` float32, already preprocessed.
            features: feature name -> ``(B, ...)`` array written by earlier stages on the same
                inputs (updated in place).

        Returns:
            The stage's logits ``(B, K)``.
        """
        feeds = {self._inputs[stage][0][0]: image}
        for name, _ in self._inputs[stage][1:]:
            feeds[name] = features[name]
        names = [n for n, _ in self._outputs[stage]]
        results = self._sessions[stage].run(names, feeds)
        features.update(zip(names[1:], results[1:]))
        return results[0]

    def predict(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch with early exits.

        Args:
            images: either raw images as integers (uint8, uint16, ...; run through
                :meth:`preprocess` here), or float ``(B, C, H, W)`` already preprocessed.

        Returns:
            ``(logits (B, K) float32, exit_stage (B,) int64)``; exit stages are 0-based.

        Raises:
            ValueError: a float batch not of the network's shape, or integer images that cannot
                be preprocessed.
        """
        x = np.asarray(images)
        if np.issubdtype(x.dtype, np.integer):
            x = self.preprocess(x)
        elif x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"Expected preprocessed float images of shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"but got {x.dtype} {x.shape}; pass raw images through .preprocess() first (integer "
                             "images are preprocessed by predict itself)")
        x = np.ascontiguousarray(x, dtype=np.float32)
        policy = self._policy
        batch = x.shape[0]
        logits_out = np.zeros((batch, self.num_classes), dtype=np.float32)
        exit_stage = np.full(batch, self.num_stages - 1, dtype=np.int64)
        if batch == 0:
            return logits_out, exit_stage
        index = np.arange(batch)  # rows of the original batch still running
        features: dict[str, np.ndarray] = {}
        for s in range(self.num_stages):
            logits = self.run_stage(s, x, features)
            if s == self.num_stages - 1:
                logits_out[index] = logits
                break
            leave = confidence_np(logits, policy.confidence) >= np.float32(policy.thresholds[s])
            logits_out[index[leave]] = logits[leave]
            exit_stage[index[leave]] = s
            stay = ~leave
            if not stay.any():
                break  # empty remainder: later stages never run
            # Gather the remaining rows and the cached features later stages still read.
            keep_all = bool(stay.all())
            features = {k: (v if keep_all else v[stay]) for k, v in features.items() if self._last_use.get(k, -1) > s}
            if not keep_all:
                index, x = index[stay], x[stay]
        return logits_out, exit_stage

    __call__ = predict

    def average_macs(self, exit_stage: np.ndarray) -> float:
        """Mean MACs per input for the given exit stages (stages ``0..exit`` all run)."""
        cumulative = np.cumsum(np.asarray(self.stage_macs, dtype=np.float64))
        e = np.asarray(exit_stage, dtype=np.int64)
        return float(cumulative[e].mean()) if e.size else 0.0

    def __repr__(self) -> str:
        return (f"OnnxDynamicNet({str(self.directory)!r}, stages={self.num_stages}, "
                f"confidence={self.confidence!r}, thresholds={self.thresholds})")
