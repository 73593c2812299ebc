"""Saving and loading a dynamic model as a directory of JSON and safetensors (never pickle).

Layout of a model directory::

    architecture.json   Architecture.to_dict()
    thresholds.json     thresholds, confidence measure, calibration summary and curve
    weights.safetensors MultiStageNet.state_dict()
    model.json          how to rebuild it: base model name, classes, channels, input shape, space
                        options, class names, normalisation, per-stage MACs, base MACs, and the
                        SHA-256 of weights.safetensors

Loading rebuilds the base model with ``create_model`` (random weights), the :class:`Space` with
the saved options, builds the architecture (the stage shapes depend only on it), then loads the
saved weights after checking every key and shape.

Design choice (atomicity): a new directory is written as a hidden sibling and renamed into place,
so it appears complete or not at all. An existing directory (which may also hold evaluation plots)
is updated file by file, each file atomically (temporary file, fsync, rename), ``model.json`` last;
it records the weights' SHA-256, so a save interrupted between files is reported by :func:`load`
instead of silently mixing two models.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch

from s2dnas._io import atomic_write_bytes, atomic_write_json, fsync_dir
from s2dnas.dynamic.calibrate import Calibration
from s2dnas.dynamic.confidence import CONFIDENCE_MEASURES
from s2dnas.dynamic.executor import DynamicNet, validate_thresholds
from s2dnas.errors import CalibrationError, CheckpointError, ConfigError, RunDirError, S2DNASError
from s2dnas.train.checkpoint import check_state_dict

__all__ = ["MODEL_FILES", "build_model_spec", "save_dynamic", "load"]

_logger = logging.getLogger(__name__)

_MODEL_FORMAT = "s2dnas.dynamic/1"
_THRESHOLDS_FORMAT = "s2dnas.thresholds/1"
MODEL_FILES = ("model.json", "architecture.json", "thresholds.json", "weights.safetensors")
_REQUIRED = ("model", "num_classes", "in_channels")


def build_model_spec(space: Any, *, num_classes: int, model: str | None = None, class_names: Any = (),
                     mean: Any = (), std: Any = (), base_accuracy: float | None = None,
                     data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``model_spec`` that :meth:`DynamicNet.save` needs, taken from the space the net came from.

    Args:
        space: the :class:`~s2dnas.space.Space` the multi-stage network was built from.
        num_classes: number of classes of the base model.
        model: base model name accepted by ``create_model`` (default: ``space.model_name``).
        class_names: names of the classes, in label order.
        mean: per-channel input normalisation mean.
        std: per-channel input normalisation standard deviation.
        base_accuracy: the base model's validation accuracy (informational).
        data: the data set, val split and preprocessing (``DataSplits.data_spec()``), stored unchanged.

    Returns:
        A JSON-serialisable dict.

    Raises:
        ConfigError: no model name.
    """
    name = model if model is not None else space.model_name
    if not name:
        raise ConfigError("Expected a base model name (as accepted by create_model), but got None; pass model=...")
    return {
        "model": str(name), "num_classes": int(num_classes), "in_channels": int(space.input_shape[0]),
        "input_shape": list(space.input_shape), "num_stages": int(space.num_stages),
        "ratio_grid": int(space.ratio_grid), "groups": str(space.groups), "importance": str(space.importance),
        "class_names": [str(c) for c in class_names], "mean": [float(v) for v in mean],
        "std": [float(v) for v in std], "base_macs": int(space.base_macs()),
        "base_accuracy": None if base_accuracy is None else float(base_accuracy),
        "data": data,
    }


def _normalize_spec(spec: Any, net: DynamicNet) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ConfigError(
            "Expected a model_spec dict (see s2dnas.dynamic.build_model_spec), but got "
            f"{type(spec).__name__}; pass model_spec=build_model_spec(space, num_classes=...)"
        )
    missing = [k for k in _REQUIRED if spec.get(k) is None]
    if missing:
        raise ConfigError(
            f"Expected model_spec to have {', '.join(_REQUIRED)}, but it lacks {', '.join(missing)}; "
            "use build_model_spec(space, num_classes=...)"
        )
    arch = net.msnet.architecture
    input_shape = [int(v) for v in spec.get("input_shape") or net.input_shape]
    if tuple(input_shape) != tuple(net.input_shape):
        raise ConfigError(f"Expected model_spec input_shape {list(net.input_shape)} (the network's), "
                          f"but got {input_shape}")
    for key, value in (("num_stages", arch.num_stages), ("ratio_grid", arch.ratio_grid)):
        if spec.get(key) is not None and int(spec[key]) != value:
            raise ConfigError(f"Expected model_spec {key} = {value} (the architecture's), but got {spec[key]}")
    out = {
        "model": str(spec["model"]), "num_classes": int(spec["num_classes"]),
        "in_channels": int(spec["in_channels"]), "input_shape": input_shape,
        "num_stages": arch.num_stages, "ratio_grid": arch.ratio_grid,
        "groups": str(spec.get("groups") or "resolution"), "importance": str(spec.get("importance") or "bn"),
        "class_names": [str(c) for c in spec.get("class_names") or ()],
        "mean": [float(v) for v in spec.get("mean") or ()], "std": [float(v) for v in spec.get("std") or ()],
        "base_macs": None if spec.get("base_macs") is None else int(spec["base_macs"]),
        "base_accuracy": None if spec.get("base_accuracy") is None else float(spec["base_accuracy"]),
    }
    if isinstance(spec.get("data"), dict):
        out["data"] = spec["data"]
    return out


def save_dynamic(net: DynamicNet, directory: str | os.PathLike[str], *,
                 model_spec: dict[str, Any] | None = None) -> Path:
    """Write ``net`` as a model directory (see the module docstring for the layout).

    Args:
        net: the dynamic network.
        directory: target directory; created if missing, updated in place if it exists.
        model_spec: how to rebuild the base model (:func:`build_model_spec`); default: ``net.model_spec``.

    Returns:
        The directory.

    Raises:
        ConfigError: no or incomplete ``model_spec``.
        RunDirError: the directory cannot be written.
    """
    spec = _normalize_spec(model_spec if model_spec is not None else net.model_spec, net)
    target = Path(directory)
    # safetensors refuses tensors that share memory; contiguous CPU copies are always accepted.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.msnet.state_dict().items()}
    from safetensors.torch import save as st_save

    weights = st_save(tensors, metadata={"format": _MODEL_FORMAT})
    calibration = net.calibration
    if isinstance(calibration, Calibration):
        calibration = calibration.to_dict()
    files: dict[str, Any] = {
        "weights.safetensors": weights,
        "architecture.json": net.msnet.architecture.to_dict(),
        "thresholds.json": {"format": _THRESHOLDS_FORMAT, "thresholds": list(net.thresholds),
                            "confidence": net.confidence, "calibration": calibration},
        # Written last: it is the record of a complete save.
        "model.json": {"format": _MODEL_FORMAT, **spec, "stage_macs": net.stage_macs,
                       "weights_sha256": hashlib.sha256(weights).hexdigest()},
    }
    try:
        if target.exists():
            if not target.is_dir():
                raise RunDirError(f"Expected a directory at {target}, but it is a file; choose another path")
            _write_files(target, files)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            staging.mkdir()
            try:
                _write_files(staging, files)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync_dir(target.parent)
    except OSError as err:
        raise RunDirError(f"Cannot write the model to {target} ({err.strerror or err}); choose another directory") \
            from None
    net.model_spec = spec
    _logger.info("Saved the dynamic model to %s", target)
    return target


def _write_files(directory: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        if isinstance(content, bytes):
            atomic_write_bytes(directory / name, content)
        else:
            atomic_write_json(directory / name, content)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"Expected {path.name} in the model directory {path.parent}, but it is missing; "
                              "re-save the model with DynamicNet.save")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"Expected valid JSON in {path}, but it is malformed ({err}); re-save the model") \
            from None


def load(directory: str | os.PathLike[str], *, device: torch.device | str | None = None) -> DynamicNet:
    """Load a dynamic model directory written by :meth:`DynamicNet.save`.

    Nothing is unpickled: the metadata is JSON and the weights are safetensors.

    Args:
        directory: the model directory.
        device: where to put the network: a torch device, ``"auto"``, ``"cpu"``, ``"cuda[:N]"``
            (default: CPU).

    Returns:
        The :class:`DynamicNet`, in eval mode.

    Raises:
        CheckpointError: missing directory or file, malformed JSON, truncated or unsafe weights,
            weights of another model, or a base model that cannot be rebuilt.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"Expected a dynamic model directory at {root}, but it does not exist; pass the "
                              "directory written by DynamicNet.save")
    spec = _read_json(root / "model.json")
    if not isinstance(spec, dict) or spec.get("format") != _MODEL_FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise CheckpointError(f"Expected {root / 'model.json'} to have format {_MODEL_FORMAT!r}, but got {got!r}; "
                              "it was not written by DynamicNet.save")
    missing = [k for k in (*_REQUIRED, "input_shape") if spec.get(k) is None]
    if missing:
        raise CheckpointError(f"Expected {root / 'model.json'} to have {', '.join(missing)}, but they are missing; "
                              "re-save the model")
    from s2dnas.space import Architecture, Space
    from s2dnas.zoo import create_model

    try:
        arch = Architecture.from_dict(_read_json(root / "architecture.json"))
    except CheckpointError:
        raise
    except S2DNASError as err:
        raise CheckpointError(f"Invalid {root / 'architecture.json'}: {err}") from None
    thresholds, measure, calibration = _read_thresholds(root / "thresholds.json", num_stages=arch.num_stages)
    tensors = _read_weights(root / "weights.safetensors", expected_sha=spec.get("weights_sha256"))

    try:
        base = create_model(str(spec["model"]), num_classes=int(spec["num_classes"]),
                            in_channels=int(spec["in_channels"]))
        space = Space(base, input_shape=tuple(int(v) for v in spec["input_shape"]), num_stages=arch.num_stages,
                      ratio_grid=arch.ratio_grid, groups=str(spec.get("groups") or "resolution"),
                      importance=str(spec.get("importance") or "bn"), model_name=str(spec["model"]))
        msnet = space.build(arch)
    except (S2DNASError, TypeError, ValueError) as err:
        raise CheckpointError(f"Cannot rebuild the model of {root} (model {spec.get('model')!r}): {err}") from None
    _check_state(tensors, msnet.state_dict(), source=root / "weights.safetensors")
    msnet.load_state_dict(tensors, strict=True)
    msnet.eval()
    if device is None:
        target = torch.device("cpu")
    elif isinstance(device, str):
        from s2dnas._device import resolve_device

        target = resolve_device(device)
    else:
        target = torch.device(device)
    msnet.to(target)
    stage_macs = spec.get("stage_macs")
    if not isinstance(stage_macs, list) or len(stage_macs) != arch.num_stages:
        stage_macs = None  # counted again on first use
    keep = {k: v for k, v in spec.items() if k not in ("format", "stage_macs", "weights_sha256")}
    net = DynamicNet(msnet, thresholds, confidence=measure, stage_macs=stage_macs, calibration=calibration,
                     model_spec=keep)
    return net.eval()


def _read_thresholds(path: Path, *, num_stages: int) -> tuple[tuple[float, ...], str, Calibration | None]:
    data = _read_json(path)
    if not isinstance(data, dict) or "thresholds" not in data:
        raise CheckpointError(f"Expected {path} to hold an object with 'thresholds', but got {str(data)[:80]!r}; "
                              "re-save the model")
    measure = data.get("confidence", "max_softmax")
    if measure not in CONFIDENCE_MEASURES:
        raise CheckpointError(f"Expected the confidence in {path} to be one of {', '.join(CONFIDENCE_MEASURES)}, "
                              f"but got {measure!r}")
    try:
        thresholds = validate_thresholds(data["thresholds"], num_stages=num_stages)
        calibration = None if data.get("calibration") is None else Calibration.from_dict(data["calibration"])
    except CalibrationError as err:
        raise CheckpointError(f"Invalid {path}: {err}") from None
    return thresholds, measure, calibration


def _read_weights(path: Path, *, expected_sha: Any) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"Expected {path.name} in the model directory {path.parent}, but it is missing; "
                              "re-save the model")
    data = path.read_bytes()
    if isinstance(expected_sha, str) and hashlib.sha256(data).hexdigest() != expected_sha:
        raise CheckpointError(f"{path} does not match the checksum in model.json (truncated, replaced, or an "
                              "interrupted save); re-save the model")
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        # safetensors parses a JSON header and raw buffers only: no code can run while reading.
        return st_load(data)
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({str(err)[:120]}); re-save the "
                              "model") from None


def _check_state(tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], *, source: Path) -> None:
    problem = check_state_dict(tensors, own)
    if problem:
        raise CheckpointError(f"Expected the weights in {source} to match architecture.json, but they belong to "
                              f"another model ({problem}); save the weights and architecture together")
