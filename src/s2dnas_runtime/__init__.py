"""Torch-free runtime of an exported dynamic network: ONNX Runtime + numpy only.

``s2dnas export`` (or :func:`s2dnas.export.export_dynamic`) writes a directory with one ONNX graph
per stage and a ``manifest.json``; :class:`OnnxDynamicNet` loads it and runs the same batched
early-exit routing as the PyTorch ``DynamicNet``: stage 1 runs on the whole batch, the inputs whose
confidence reaches the stage's threshold leave, and only the others go on to the next stage, which
reads the cached features of the earlier stages (gathered with numpy fancy indexing, never
recomputed). The last stage answers for every input still left.

Design choice: this is a separate top-level package, not a submodule of ``s2dnas``, because
``import s2dnas`` imports torch and a submodule cannot be imported without its package. It must
import nothing but the standard library, numpy and (lazily) onnxruntime; a test checks that
``torch`` is not in ``sys.modules`` after using it. It also owns the manifest format
(:data:`FORMAT_VERSION`, :func:`read_manifest`), which the exporter writes and validates with.
``s2dnas.deploy`` re-exports it for users who have the full package.

Example:
    >>> from s2dnas_runtime import OnnxDynamicNet          # doctest: +SKIP
    >>> net = OnnxDynamicNet("export_dir")                 # doctest: +SKIP
    >>> logits, exit_stage = net(net.preprocess(images_uint8))  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIDENCE_MEASURES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ExportError",
    "OnnxDynamicNet",
    "confidence_np",
    "exit_rule",
    "preprocess",
    "read_manifest",
]

FORMAT = "s2dnas-dynamic-onnx"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CONFIDENCE_MEASURES = ("max_softmax", "entropy", "margin")
IMAGE_INPUT = "image"
LOGITS_OUTPUT = "logits"
_PIP_HINT = "pip install 's2dnas[export]'"


class ExportError(Exception):
    """An exported directory is missing, malformed, or does not match its ONNX graphs.

    The torch-free twin of :class:`s2dnas.errors.ExportError` (which this package cannot import
    without importing torch); ``s2dnas.deploy.OnnxDynamicNet`` raises the ``s2dnas`` one.
    """


# ----------------------------------------------------------------------------------------------
# Confidence measures (numpy twins of s2dnas.dynamic.confidence)
# ----------------------------------------------------------------------------------------------
def confidence_np(logits: np.ndarray, measure: str = "max_softmax") -> np.ndarray:
    """Confidence of every row of ``logits`` in ``[0, 1]``; higher means "exit now".

    The same float32 formulas as ``s2dnas.dynamic.confidence`` (which imports torch-side code, so
    the runtime keeps its own copy; a test checks the two agree).

    Args:
        logits: ``(B, K)`` scores.
        measure: ``"max_softmax"`` (largest probability), ``"entropy"`` (``1 - H(p) / log K``)
            or ``"margin"`` (largest minus second largest probability).

    Returns:
        ``(B,)`` float32 confidences.

    Raises:
        ValueError: unknown measure or logits not of shape ``(B, K)``.
    """
    if measure not in CONFIDENCE_MEASURES:
        raise ValueError(f"Expected `measure` to be one of {CONFIDENCE_MEASURES}, but got {measure!r}")
    z = np.asarray(logits, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"Expected logits of shape (B, K) with K >= 1, but got shape {z.shape}")
    k = z.shape[1]
    if z.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    # Stable softmax: shift by the row max so exp never overflows.
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    if measure == "max_softmax":
        return np.clip((e / total).max(axis=1), 0.0, 1.0).astype(np.float32)
    if k == 1:  # a single class is always certain
        return np.ones(z.shape[0], dtype=np.float32)
    if measure == "entropy":
        log_p = shifted - np.log(total)
        entropy = -(np.exp(log_p) * log_p).sum(axis=1)  # p -> 0 gives 0 * finite = 0, never NaN
        return np.clip(1.0 - entropy / np.float32(math.log(k)), 0.0, 1.0).astype(np.float32)
    p = e / total
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return np.clip(top2[:, 0] - top2[:, 1], 0.0, 1.0).astype(np.float32)


def exit_rule(stage_logits: Sequence[np.ndarray], thresholds: Sequence[float], *,
              confidence: str = "max_softmax") -> tuple[np.ndarray, np.ndarray]:
    """The reference routing rule on precomputed logits of every stage (all stages run).

    Each input takes the first stage ``s < S-1`` whose confidence is ``>= thresholds[s]``, the
    last stage otherwise. :meth:`OnnxDynamicNet.predict` must agree with it.

    Args:
        stage_logits: ``S`` arrays ``(B, K)``.
        thresholds: ``S - 1`` thresholds.
        confidence: the confidence measure.

    Returns:
        ``(logits (B, K), exit_stage (B,))`` with 0-based exit stages.
    """
    num_stages = len(stage_logits)
    if len(thresholds) != num_stages - 1:
        raise ValueError(f"Expected {num_stages - 1} thresholds for {num_stages} stages, but got {len(thresholds)}")
    batch = stage_logits[0].shape[0]
    exit_stage = np.full(batch, num_stages - 1, dtype=np.int64)
    undecided = np.ones(batch, dtype=bool)
    for s in range(num_stages - 1):
        leave = undecided & (confidence_np(stage_logits[s], confidence) >= np.float32(thresholds[s]))
        exit_stage[leave] = s
        undecided &= ~leave
    stacked = np.stack([np.asarray(lg) for lg in stage_logits])  # (S, B, K)
    return stacked[exit_stage, np.arange(batch)], exit_stage


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------
def _fail(path: Path, problem: str) -> ExportError:
    return ExportError(f"Malformed export manifest {path}: {problem}; re-export the model with `s2dnas export`")


def _check_thresholds(values: Any, num_stages: int) -> list[float]:
    """Validate ``S - 1`` finite thresholds (ValueError otherwise)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) and not isinstance(values, np.ndarray):
        raise ValueError(f"Expected `thresholds` to be a list of {num_stages - 1} numbers, but got {values!r}")
    out = []
    for v in list(values):
        if (isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer))
                or not math.isfinite(v) or v < 0):
            raise ValueError(f"Expected `thresholds` to be finite numbers >= 0 (above 1: nobody exits), "
                             f"but got {list(values)!r}")
        out.append(float(v))
    if len(out) != num_stages - 1:
        raise ValueError(f"Expected {num_stages - 1} thresholds (one per stage but the last), but got {len(out)}")
    return out


def _names(entries: Any, path: Path, where: str) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not entries:
        raise _fail(path, f"{where} must be a non-empty list")
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise _fail(path, f"every entry of {where} needs a string 'name', got {e!r}")
        if e.get("cache_key") is not None and not isinstance(e["cache_key"], str):
            raise _fail(path, f"{where}: 'cache_key' must be a string or null, got {e['cache_key']!r}")
    return entries


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``<directory>/manifest.json`` of an exported dynamic network.

    Checks the format and version, the counts (stages, thresholds, MACs), the confidence measure,
    that every stage file exists, and that every feature a stage reads is written by an earlier
    stage.

    Args:
        directory: the export directory.

    Returns:
        The manifest as a dict (see ``docs/design.md``, "Export format").

    Raises:
        ExportError: with one line naming the file and the problem.
    """
    root = Path(directory)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ExportError(f"Export directory {root} does not exist; run `s2dnas export` first")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"{path} is missing: {root} is not an s2dnas export directory") from None
    except OSError as err:
        raise ExportError(f"Cannot read {path} ({err.strerror})") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(path, f"invalid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(m, dict):
        raise _fail(path, "expected a JSON object")
    if m.get("format") != FORMAT:
        raise _fail(path, f"expected format {FORMAT!r}, got {m.get('format')!r}")
    version = m.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise _fail(path, f"format_version {version!r} is not supported by this runtime (supports 1..{FORMAT_VERSION})")
    missing = [k for k in ("num_stages", "num_classes", "input_shape", "thresholds", "confidence", "stages",
                           "stage_macs", "class_names", "normalization") if k not in m]
    if missing:
        raise _fail(path, f"missing field(s) {missing}")
    num_stages = m["num_stages"]
    if not isinstance(num_stages, int) or num_stages < 1:
        raise _fail(path, f"num_stages must be an integer >= 1, got {num_stages!r}")
    if not isinstance(m["num_classes"], int) or m["num_classes"] < 1:
        raise _fail(path, f"num_classes must be an integer >= 1, got {m['num_classes']!r}")
    shape = m["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise _fail(path, f"input_shape must be [C, H, W] of positive integers, got {shape!r}")
    try:
        _check_thresholds(m["thresholds"], num_stages)
    except ValueError as err:
        raise _fail(path, str(err)) from None
    if m["confidence"] not in CONFIDENCE_MEASURES:
        raise _fail(path, f"confidence must be one of {CONFIDENCE_MEASURES}, got {m['confidence']!r}")
    macs = m["stage_macs"]
    if not (isinstance(macs, list) and len(macs) == num_stages and all(isinstance(v, int) for v in macs)):
        raise _fail(path, f"stage_macs must be {num_stages} integers, got {macs!r}")
    names = m["class_names"]
    if not (isinstance(names, list) and all(isinstance(v, str) for v in names)
            and len(names) in (0, m["num_classes"])):
        raise _fail(path, f"class_names must be [] or {m['num_classes']} strings")
    norm = m["normalization"]
    if norm is not None:
        ok = isinstance(norm, dict) and all(
            isinstance(norm.get(k), list) and len(norm[k]) == shape[0]
            and all(isinstance(v, (int, float)) for v in norm[k]) for k in ("mean", "std"))
        if not ok or any(v <= 0 for v in norm["std"]):
            raise _fail(path, f"normalization must be null or {{mean, std}} with {shape[0]} values each (std > 0)")
    stages = m["stages"]
    if not isinstance(stages, list) or len(stages) != num_stages:
        raise _fail(path, f"stages must list {num_stages} entries")
    available: set[str] = set()
    for s, entry in enumerate(stages):
        where = f"stages[{s}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("onnx"), str):
            raise _fail(path, f"{where} needs an 'onnx' file name")
        onnx_file = root / entry["onnx"]
        if Path(entry["onnx"]).name != entry["onnx"]:
            raise _fail(path, f"{where}.onnx must be a file name inside the directory, got {entry['onnx']!r}")
        if not onnx_file.is_file():
            raise ExportError(f"Stage {s + 1} file {onnx_file} is missing; the export directory is incomplete, "
                              "re-export the model with `s2dnas export`")
        inputs = _names(entry.get("inputs"), path, f"{where}.inputs")
        outputs = _names(entry.get("outputs"), path, f"{where}.outputs")
        if inputs[0]["name"] != IMAGE_INPUT or outputs[0]["name"] != LOGITS_OUTPUT:
            raise _fail(path, f"{where}: the first input must be {IMAGE_INPUT!r} and the first output {LOGITS_OUTPUT!r}")
        for e in inputs[1:]:
            if e.get("cache_key") is None or e["name"] not in available:
                raise _fail(path, f"{where} reads feature {e['name']!r}, which no earlier stage writes")
        for e in outputs[1:]:
            if e.get("cache_key") is None:
                raise _fail(path, f"{where}: feature output {e['name']!r} has no cache_key")
            available.add(e["name"])
    return m


# ----------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------
def preprocess(images: np.ndarray, *, input_shape: Sequence[int], mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> np.ndarray:
    """Turn a batch of raw images into the network's input, ``(B, C, H, W)`` float32.

    ``uint8`` images are scaled to ``[0, 1]`` first; float images are taken to be in ``[0, 1]``
    already. Then ``(x - mean) / std`` per channel, as in training.

    Args:
        images: ``(B, C, H, W)``, ``(B, H, W, C)`` or, for one channel, ``(B, H, W)``.
        input_shape: ``(C, H, W)`` the network expects.
        mean: per-channel mean (``None``: no normalisation).
        std: per-channel standard deviation.

    Returns:
        A float32 array ``(B, C, H, W)``.

    Raises:
        ValueError: the array's shape matches none of the layouts.
    """
    c, h, w = (int(v) for v in input_shape)
    x = np.asarray(images)
    if x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1:] == (c, h, w):
        pass
    elif x.ndim == 4 and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"Expected images of shape (B, {c}, {h}, {w}) or (B, {h}, {w}, {c})"
                         + (f" or (B, {h}, {w})" if c == 1 else "") + f", but got {x.shape}")
    out = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
    if mean is not None and std is not None:
        m = np.asarray(mean, dtype=np.float32).reshape(1, c, 1, 1)
        s = np.asarray(std, dtype=np.float32).reshape(1, c, 1, 1)
        out = (out - m) / s
    return np.ascontiguousarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Runtime
# ----------------------------------------------------------------------------------------------
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
        thresholds: ``S - 1`` thresholds overriding the manifest's (e.g. to trade accuracy for
            cost without re-exporting).
        confidence: a confidence measure overriding the manifest's.
        num_threads: ONNX Runtime intra-op threads (default: ONNX Runtime's choice).

    Raises:
        ExportError: missing or malformed manifest, a missing stage file, or a graph whose inputs
            and outputs do not match the manifest.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, directory: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 thresholds: Sequence[float] | None = None, confidence: str | None = None,
                 num_threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        ort = _import_onnxruntime()
        m = self.manifest
        self.num_stages: int = m["num_stages"]
        self.num_classes: int = m["num_classes"]
        self.input_shape: tuple[int, int, int] = tuple(m["input_shape"])  # type: ignore[assignment]
        self.class_names: tuple[str, ...] = tuple(m["class_names"])
        self.stage_macs: tuple[int, ...] = tuple(m["stage_macs"])
        norm = m["normalization"]
        self.mean: tuple[float, ...] | None = tuple(norm["mean"]) if norm else None
        self.std: tuple[float, ...] | None = tuple(norm["std"]) if norm else None
        self._thresholds = [float(t) for t in m["thresholds"]]
        self._confidence: str = m["confidence"]
        if thresholds is not None:
            self.thresholds = thresholds  # type: ignore[assignment]
        if confidence is not None:
            self.confidence = confidence
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
    def thresholds(self) -> list[float]:
        """The ``S - 1`` exit thresholds (input leaves stage ``s`` when confidence >= ``thresholds[s]``)."""
        return list(self._thresholds)

    @thresholds.setter
    def thresholds(self, values: Sequence[float]) -> None:
        self._thresholds = _check_thresholds(values, self.num_stages)

    @property
    def confidence(self) -> str:
        """The confidence measure: ``"max_softmax"``, ``"entropy"`` or ``"margin"``."""
        return self._confidence

    @confidence.setter
    def confidence(self, measure: str) -> None:
        if measure not in CONFIDENCE_MEASURES:
            raise ValueError(f"Expected `confidence` to be one of {CONFIDENCE_MEASURES}, but got {measure!r}")
        self._confidence = measure

    # -- running -------------------------------------------------------------------------------
    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw images (uint8 or float in ``[0, 1]``) -> normalised ``(B, C, H, W)`` float32.

        See :func:`preprocess` for the accepted layouts.
        """
        return preprocess(images, input_shape=self.input_shape, mean=self.mean, std=self.std)

    def run_stage(self, stage: int, image: np.ndarray, features: dict[str, np.ndarray]) -> np.ndarray:
        """Run one stage; read earlier features from ``features`` and add its own to it.

        Args:
            stage: 0-based stage index.
            image: ``(B, C, H, W)`` float32, already normalised.
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

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch with early exits.

        Args:
            images: ``(B, C, H, W)`` float32, already normalised (see :meth:`preprocess`).

        Returns:
            ``(logits (B, K) float32, exit_stage (B,) int64)``; exit stages are 0-based.

        Raises:
            ValueError: the batch does not have the shape the network was exported for.
        """
        x = np.asarray(images)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"Expected images of shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"but got {x.shape}; use .preprocess() on raw images")
        x = np.ascontiguousarray(x, dtype=np.float32)
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
            leave = confidence_np(logits, self._confidence) >= np.float32(self._thresholds[s])
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
                f"confidence={self._confidence!r}, thresholds={self._thresholds})")
