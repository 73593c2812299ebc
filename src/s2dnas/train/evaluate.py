"""Loading and evaluating a trained base model (weights from ``train-base`` or shipped)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2dnas._io import read_json
from s2dnas.cost import count_macs, count_params
from s2dnas.data import DataSplits, canonical_dataset, check_data_spec, make_loader, splits_for_model
from s2dnas.errors import CheckpointError, ConfigError, DataError
from s2dnas.train.checkpoint import check_model_identity, load_weights
from s2dnas.train.loops import evaluate
from s2dnas.zoo import create_model, list_pretrained

__all__ = ["BaseEvaluation", "DEFAULT_MODEL", "base_data_spec", "base_splits", "base_weights_path", "load_base_model",
           "load_trained_base", "evaluate_base_model"]

_logger = logging.getLogger(__name__)

DEFAULT_MODEL = "resnet20"


@dataclass(frozen=True)
class BaseEvaluation:
    """Result of :func:`evaluate_base_model`; ``accuracy`` is a fraction, ``macs`` per input."""

    model: str
    weights: str
    dataset: str
    split: str
    accuracy: float
    num_examples: int
    num_params: int
    macs: int
    input_shape: tuple[int, int, int]


def _data_mismatch(*, what: str, want_classes: int, want_channels: int, splits: DataSplits, fix: str) -> DataError:
    return DataError(
        f"Expected dataset {splits.name} to have {want_classes} classes and {want_channels} input channel(s) "
        f"like {what}, but it has {splits.num_classes} classes and {splits.in_channels} channel(s); {fix}"
    )


def _meta_int(meta: dict[str, Any], key: str, source: Path) -> int | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"Expected `{key}` in {source.with_suffix('.json')} to be a positive int, "
                              f"but got {value!r}; fix or delete the metadata file")
    return value


def _check_normalisation(meta: dict[str, Any], splits: DataSplits, source: Path) -> None:
    """Warn when the weights were trained with another normalisation than ``splits`` applies."""
    for key in ("mean", "std"):
        saved = meta.get(key)
        own = getattr(splits, key)
        if isinstance(saved, list) and len(saved) == len(own) and any(
                not isinstance(a, (int, float)) or abs(a - b) > 1e-3 for a, b in zip(saved, own)):
            _logger.warning("%s was trained with %s %s, but %s normalises with %s; accuracy may suffer",
                            source, key, saved, splits.name, list(own))


def base_weights_path(weights: str | Path) -> Path:
    """``model.safetensors`` of ``weights`` (the file, or the train-base directory holding it)."""
    path = Path(weights)
    return path / "model.safetensors" if path.is_dir() else path


def base_data_spec(weights: str | Path | None) -> dict[str, Any] | None:
    """The ``data`` dict train-base stored beside ``weights`` (data set, val cut, preprocessing), or ``None``.

    Raises:
        CheckpointError: the metadata file is not valid JSON.
        DataError: its ``data`` entry is malformed.
    """
    if weights is None:
        return None
    meta_path = base_weights_path(weights).with_suffix(".json")
    if not meta_path.is_file():
        return None
    meta = read_json(meta_path)
    data = meta.get("data") if isinstance(meta, dict) else None
    return None if data is None else check_data_spec(data, source=str(meta_path))


def base_splits(*, dataset: str, data_dir: str | None, val_size: int | None, seed: int,
                weights: str | Path | None, input_shape: tuple[int, int, int] | None = None) -> DataSplits:
    """The splits to build on a trained base model: the val cut and preprocessing train-base stored.

    ``val_size=None`` takes the base's val cut (else 10% of train, at most 5000); another cut is
    used with a warning (its val may hold images the base was trained on). ``input_shape`` (the
    config's ``model.input_shape``), when given, must be the shape of these splits' inputs: the
    base model was trained at that shape, so a pipeline step cannot resize its data.

    Raises:
        ConfigError: ``input_shape`` differs from the data's.
    """
    splits = splits_for_model(base_data_spec(weights), dataset=dataset, data_dir=data_dir, val_size=val_size,
                              seed=seed, strict=False, source=str(weights))
    if input_shape is not None and tuple(input_shape) != splits.input_shape:
        raise ConfigError(f"Expected model.input_shape to be the shape of the base model's {splits.name} inputs "
                          f"{list(splits.input_shape)}, but got {list(input_shape)}; set model.input_shape to "
                          f"{list(splits.input_shape)} or null")
    return splits


def load_trained_base(*, splits: DataSplits, model_name: str | None, weights: str | Path | None,
                      pretrained: bool = True) -> tuple[nn.Module, str, str]:
    """The trained base model a multi-stage network inherits from: ``(model, name, weights source)``.

    Like :func:`load_base_model`, with the advice a pipeline step needs when no weights are given.

    Raises:
        ConfigError: neither ``weights`` nor ``pretrained``.
        CheckpointError: weights missing, corrupt, for another model, or none shipped.
        DataError: weights for another class count or number of input channels.
    """
    if weights is None and not pretrained:
        raise ConfigError("Expected a trained base model to inherit weights and distil from, but model.weights is "
                          "null and model.pretrained is false; pass --base-weights model.safetensors "
                          "(from s2dnas train-base) or set model.pretrained=true")
    try:
        return load_base_model(splits=splits, model_name=model_name, weights=weights)
    except CheckpointError as err:
        if weights is not None:
            raise
        raise CheckpointError(f"{err}. To use your own base model, pass --base-weights model.safetensors "
                              "(from s2dnas train-base)") from None


def load_base_model(*, splits: DataSplits, model_name: str | None = None,
                    weights: str | Path | None = None) -> tuple[nn.Module, str, str]:
    """Build a base model for ``splits`` and load its weights.

    Args:
        splits: The data the model will be evaluated on (class count and input channels).
        model_name: Zoo name, ``torchvision:<name>`` or ``module:factory``; default: the name stored
            in the weights' metadata, else ``resnet20``.
        weights: ``model.safetensors`` written by ``s2dnas train-base`` (or the run directory
            holding it); ``None`` loads the shipped pretrained weights.

    Returns:
        ``(model, model_name, source)`` with ``source`` the weights file or pretrained entry name.

    Raises:
        DataError: The weights were made for another class count or number of input channels.
        CheckpointError: The weights are missing, truncated, for another model, or none are shipped.
    """
    if weights is None:
        name = model_name or DEFAULT_MODEL
        entries = [m for m in list_pretrained() if m.model == name]
        matching = [m for m in entries if (m.num_classes, m.in_channels) == (splits.num_classes, splits.in_channels)]
        if entries and not matching:
            e = entries[0]
            raise _data_mismatch(
                what=f"the shipped weights {e.name}", want_classes=e.num_classes, want_channels=e.in_channels,
                splits=splits, fix=f"use --dataset {e.dataset.replace('_', '-')}, or pass --weights of a model "
                "trained on this data (s2dnas train-base)",
            )
        # No entry at all: create_model raises CheckpointError listing what is shipped.
        model = create_model(name, num_classes=splits.num_classes, in_channels=splits.in_channels, pretrained=True)
        return model, name, matching[0].name
    path = base_weights_path(weights)
    state, meta = load_weights(path)
    saved_name = meta.get("model") if isinstance(meta.get("model"), str) else None
    if model_name and saved_name and model_name != saved_name:
        raise CheckpointError(f"Expected the model to be {saved_name!r} (what {path} was trained as), but got "
                              f"{model_name!r}; pass --model {saved_name} (or model.name: {saved_name} in the config)")
    name = model_name or saved_name or DEFAULT_MODEL
    num_classes = _meta_int(meta, "num_classes", path)
    in_channels = _meta_int(meta, "in_channels", path)
    want_classes, want_channels = num_classes or splits.num_classes, in_channels or splits.in_channels
    if (want_classes, want_channels) != (splits.num_classes, splits.in_channels):
        raise _data_mismatch(what=str(path), want_classes=want_classes, want_channels=want_channels, splits=splits,
                             fix="use the --dataset the model was trained on, or train a base model for this "
                             "data with s2dnas train-base")
    if isinstance(meta.get("dataset"), str) and canonical_dataset(meta["dataset"]) != canonical_dataset(splits.name):
        _logger.warning("%s was trained on %s, evaluating on %s", path, meta["dataset"], splits.name)
    _check_normalisation(meta, splits, path)
    model = create_model(name, num_classes=splits.num_classes, in_channels=splits.in_channels)
    check_model_identity(state, model, source=str(path))
    model.load_state_dict(state)
    return model, name, str(path)


def evaluate_base_model(model: nn.Module, splits: DataSplits, *, model_name: str, weights: str,
                        split: str = "test", batch_size: int = 256, device: torch.device | None = None,
                        limit: int | None = None) -> BaseEvaluation:
    """Top-1 accuracy of ``model`` on one split, with its parameters and MACs per input.

    MACs are counted by running the model once on a batch of one input of ``splits.input_shape``
    (:func:`s2dnas.count_macs`).

    Args:
        model: A model with loaded weights (see :func:`load_base_model`).
        splits: The dataset.
        model_name: Name to report.
        weights: Weights source to report.
        split: ``test`` (reporting) or ``val`` (the held-out part of train).
        batch_size: Evaluation batch size.
        device: Where to run; default CPU.
        limit: Evaluate only the first ``limit`` examples.

    Raises:
        ConfigError: ``split``, ``batch_size`` or ``limit`` is invalid.
        DataError: The model's output does not have one logit per class of the data, or the split is empty.
    """
    if split not in ("test", "val"):
        raise ConfigError(f"Expected split 'test' or 'val', but got {split!r}")
    if batch_size < 1:
        raise ConfigError(f"Expected --batch-size >= 1, but got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"Expected --limit >= 1, but got {limit}; drop it to use the whole split")
    device = device or torch.device("cpu")
    model.to(device).eval()
    example = torch.zeros(1, *splits.input_shape, device=device)
    with torch.no_grad():
        logits = model(example)
    if logits.ndim != 2 or logits.shape[1] != splits.num_classes:
        raise DataError(f"Expected the model to output {splits.num_classes} logits (the classes of "
                        f"{splits.name}), but got shape {tuple(logits.shape)}; build it for this data")
    macs = count_macs(model, example)
    result = evaluate(model, make_loader(getattr(splits, split), batch_size=batch_size, limit=limit), device=device)
    return BaseEvaluation(
        model=model_name, weights=weights, dataset=splits.name, split=split, accuracy=result.accuracy,
        num_examples=result.num_examples, num_params=count_params(model), macs=macs,
        input_shape=splits.input_shape,
    )
