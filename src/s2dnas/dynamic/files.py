"""The model directory format: writing it, and reading its files (JSON and safetensors, never pickle).

Layout of a model directory::

    architecture.json   Architecture.to_dict()
    thresholds.json     the exit policy, ExitPolicy.to_dict(): thresholds, confidence measure,
                        per-stage cost, calibration record (summary and curve)
    weights.safetensors MultiStageNet.state_dict()
    model.json          how to rebuild it: base model name, classes, channels, input shape, space
                        options, class names, normalisation, the data spec (``data``: dataset,
                        split, preprocessing), per-stage MACs, base MACs, and the SHA-256 of
                        weights.safetensors

This module sits below the executor (it takes the net it saves duck-typed), and
:mod:`s2dnas.dynamic.io` (loading, which builds a :class:`DynamicNet`) above it, so the package
has no import circle. thresholds.json written before the exit policy existed
(``s2dnas.thresholds/1``) is still read.

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
from typing import TYPE_CHECKING, Any

import torch

from s2dnas._io import atomic_write_bytes, atomic_write_json, fsync_dir
from s2dnas.errors import CheckpointError, ConfigError, RunDirError
from s2dnas.train.checkpoint import check_state_dict
from s2dnas_runtime.errors import PolicyError
from s2dnas_runtime.policy import ExitPolicy

if TYPE_CHECKING:
    from s2dnas.dynamic.executor import DynamicNet

__all__ = ["MODEL_FILES", "MODEL_FORMAT", "REQUIRED_SPEC_KEYS", "build_model_spec", "check_weights", "read_json",
           "read_policy", "read_weights", "save_dynamic"]

_logger = logging.getLogger(__name__)

MODEL_FORMAT = "s2dnas.dynamic/1"
_OLD_THRESHOLDS_FORMAT = "s2dnas.thresholds/1"  # before the exit policy: still read
MODEL_FILES = ("model.json", "architecture.json", "thresholds.json", "weights.safetensors")
REQUIRED_SPEC_KEYS = ("model", "num_classes", "in_channels")


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
        data: the data spec made by the data package (dataset, split, ``preprocessing``), stored
            unchanged as ``model_spec["data"]``; export copies its ``preprocessing`` into the
            manifest. ``None``: not recorded.

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
        "channel_multiple": int(space.channel_multiple),
        "class_names": [str(c) for c in class_names], "mean": [float(v) for v in mean],
        "std": [float(v) for v in std], "base_macs": int(space.base_macs()),
        "base_accuracy": None if base_accuracy is None else float(base_accuracy),
        "data": _check_data(data),
    }


def _check_data(data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"Expected the data spec to be a dict or None, but got {type(data).__name__}")
    try:
        return json.loads(json.dumps(data, allow_nan=False))  # a JSON-safe copy, stored as it is
    except (TypeError, ValueError) as err:
        raise ConfigError(f"Expected the data spec to be plain JSON data, but it is not ({err})") from None


def _normalize_spec(spec: Any, net: DynamicNet) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ConfigError(
            "Expected a model_spec dict (see s2dnas.dynamic.build_model_spec), but got "
            f"{type(spec).__name__}; pass model_spec=build_model_spec(space, num_classes=...)"
        )
    missing = [k for k in REQUIRED_SPEC_KEYS if spec.get(k) is None]
    if missing:
        raise ConfigError(
            f"Expected model_spec to have {', '.join(REQUIRED_SPEC_KEYS)}, but it lacks {', '.join(missing)}; "
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
        "channel_multiple": int(spec.get("channel_multiple") or 1),  # saved before the option existed: 1
        "class_names": [str(c) for c in spec.get("class_names") or ()],
        "mean": [float(v) for v in spec.get("mean") or ()], "std": [float(v) for v in spec.get("std") or ()],
        "base_macs": None if spec.get("base_macs") is None else int(spec["base_macs"]),
        "base_accuracy": None if spec.get("base_accuracy") is None else float(spec["base_accuracy"]),
        "data": _check_data(spec.get("data")),
    }
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

    weights = st_save(tensors, metadata={"format": MODEL_FORMAT})
    files: dict[str, Any] = {
        "weights.safetensors": weights,
        "architecture.json": net.msnet.architecture.to_dict(),
        "thresholds.json": net.policy.to_dict(),
        # Written last: it is the record of a complete save.
        "model.json": {"format": MODEL_FORMAT, **spec, "stage_macs": net.stage_macs,
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


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"Expected {path.name} in the model directory {path.parent}, but it is missing; "
                              "re-save the model with DynamicNet.save")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"Expected valid JSON in {path}, but it is malformed ({err}); re-save the model") \
            from None


def read_policy(path: Path, *, num_stages: int, stage_macs: Any = None) -> ExitPolicy:
    """Read ``thresholds.json`` as an :class:`ExitPolicy` for a network of ``num_stages`` stages.

    Args:
        path: the file.
        num_stages: S, from architecture.json.
        stage_macs: model.json's per-stage MACs, the stage cost of an old-format file.

    Raises:
        CheckpointError: missing, malformed or invalid (one line naming the file and the fault,
            e.g. thresholds written as booleans).
    """
    data = read_json(path)
    try:
        if isinstance(data, dict) and data.get("format") == _OLD_THRESHOLDS_FORMAT:
            data = _from_old_format(data, stage_macs=stage_macs, num_stages=num_stages)
        policy = ExitPolicy.from_dict(data)
        policy.validate(num_stages=num_stages)
    except PolicyError as err:
        raise CheckpointError(f"Invalid {path}: {err}") from None
    return policy


def _from_old_format(data: dict[str, Any], *, stage_macs: Any, num_stages: int) -> dict[str, Any]:
    """An ``s2dnas.thresholds/1`` file (thresholds, confidence, a Calibration dict) as a policy dict."""
    calibration = data.get("calibration")
    if isinstance(calibration, dict):
        calibration = {k: v for k, v in calibration.items()
                       if k not in ("format", "thresholds", "confidence", "stage_macs")}
    cost = stage_macs if isinstance(stage_macs, list) and len(stage_macs) == num_stages else None
    return {"thresholds": data.get("thresholds"), "confidence": data.get("confidence", "max_softmax"),
            "stage_cost": cost, "cost_unit": "macs", "calibration": calibration}


def read_weights(path: Path, *, expected_sha: Any) -> dict[str, torch.Tensor]:
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


def check_weights(tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], *, source: Path) -> None:
    problem = check_state_dict(tensors, own)
    if problem:
        raise CheckpointError(f"Expected the weights in {source} to match architecture.json, but they belong to "
                              f"another model ({problem}); save the weights and architecture together")
