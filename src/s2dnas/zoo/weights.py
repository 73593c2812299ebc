"""Pretrained weights shipped with s2dnas: metadata (``WeightsMeta``) and safetensors loading.

Each entry ``<name>`` is two files in ``src/s2dnas/zoo/weights/``: ``<name>.json`` (the metadata
below) and ``<name>.safetensors`` (the state dict; never a pickle). The JSON holds::

    {"name": "resnet20_fashion_mnist", "model": "resnet20", "dataset": "fashion_mnist",
     "num_classes": 10, "in_channels": 1, "input_size": [28, 28],
     "num_params": 272186, "macs": 31021952,
     "val_accuracy": 0.93, "test_accuracy": 0.92, "recipe": {...}}

``macs`` are per sample at ``input_size`` (see :mod:`s2dnas.cost`), accuracies are fractions in
[0, 1], ``recipe`` is the resolved training config. ``name`` may be omitted (the file stem is used).
Any other keys (e.g. the normalisation ``mean``/``std`` written by the trainer) are kept in
``WeightsMeta.extra``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2dnas._io import check_state_dict, read_safetensors
from s2dnas.errors import CheckpointError

__all__ = ["WeightsMeta", "WEIGHTS_DIR", "SUPERNETS_DIR", "list_pretrained", "get_weights_meta", "load_pretrained",
           "shipped_supernet_dir"]

#: Directory of the shipped weights (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Super-networks shipped for pretrained entries: ``<entry name>/supernet.safetensors`` (+ ``supernet.json``),
#: trained by ``s2dnas supernet`` over the default space of that entry (``search.supernet: shipped``).
SUPERNETS_DIR = WEIGHTS_DIR / "supernets"

# Field name -> accepted JSON types; every field of WeightsMeta except ``extra``.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "model": (str,),
    "dataset": (str,),
    "num_classes": (int,),
    "in_channels": (int,),
    "input_size": (list,),
    "num_params": (int,),
    "macs": (int,),
    "val_accuracy": (int, float),
    "test_accuracy": (int, float),
    "recipe": (dict,),
}


@dataclass(frozen=True)
class WeightsMeta:
    """Metadata of one pretrained entry (see the module docstring for the JSON form)."""

    name: str
    model: str
    dataset: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    num_params: int
    macs: int
    val_accuracy: float
    test_accuracy: float
    recipe: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    #: Directory holding ``<name>.safetensors`` (where the JSON was found).
    weights_dir: Path = field(default=WEIGHTS_DIR, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str, weights_dir: Path = WEIGHTS_DIR) -> WeightsMeta:
        """Build from a JSON dict, raising :class:`CheckpointError` that lists every bad field.

        Args:
            data: The decoded JSON object.
            source: Where ``data`` came from, for the error message.
            weights_dir: Directory holding the entry's safetensors file.
        """
        problems = []
        for key, types in _FIELD_TYPES.items():
            if key not in data:
                problems.append(f"`{key}` is missing")
                continue
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, types):
                problems.append(f"expected `{key}` to be {' or '.join(t.__name__ for t in types)}, "
                                f"but got {type(value).__name__}")
        size = data.get("input_size")
        if isinstance(size, list) and (len(size) != 2 or not all(type(s) is int and s > 0 for s in size)):
            problems.append(f"expected `input_size` to be [height, width] of positive ints, but got {size}")
        if problems:
            raise CheckpointError(f"Invalid pretrained metadata {source}: {'; '.join(problems)}; fix or remove the file")
        extra = {k: v for k, v in data.items() if k not in _FIELD_TYPES}
        return cls(
            name=data["name"], model=data["model"], dataset=data["dataset"],
            num_classes=data["num_classes"], in_channels=data["in_channels"],
            input_size=(size[0], size[1]), num_params=data["num_params"], macs=data["macs"],
            val_accuracy=float(data["val_accuracy"]), test_accuracy=float(data["test_accuracy"]),
            recipe=dict(data["recipe"]), extra=extra, weights_dir=weights_dir,
        )

    def describe(self) -> str:
        """One-line summary, e.g. ``resnet20_fashion_mnist (resnet20, 10 classes, 1 channel, 28x28)``."""
        channels = f"{self.in_channels} channel{'s' if self.in_channels != 1 else ''}"
        return (f"{self.name} ({self.model}, {self.num_classes} classes, {channels}, "
                f"{self.input_size[0]}x{self.input_size[1]}, {self.dataset})")


def _resolve(weights_dir: str | Path | None) -> Path:
    return WEIGHTS_DIR if weights_dir is None else Path(weights_dir)


def list_pretrained(*, weights_dir: str | Path | None = None) -> list[WeightsMeta]:
    """Return the metadata of every pretrained entry, sorted by name.

    Args:
        weights_dir: Directory to read instead of the shipped one (for tests and own weights).

    Returns:
        One :class:`WeightsMeta` per ``<name>.json``; empty if the directory does not exist.

    Raises:
        CheckpointError: If a JSON file is unreadable or does not match the schema.
    """
    directory = _resolve(weights_dir)
    if not directory.is_dir():
        return []
    metas = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"Pretrained metadata {path} is not readable JSON ({err}); fix or remove it") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"Expected a JSON object in {path}, but got {type(data).__name__}; fix or remove it")
        data = {"name": path.stem, **data}
        if data["name"] != path.stem:
            raise CheckpointError(
                f"Expected `name` in {path} to equal the file stem {path.stem!r}, but got {data['name']!r}; rename one"
            )
        metas.append(WeightsMeta.from_dict(data, source=str(path), weights_dir=directory))
    return metas


def get_weights_meta(
    model: str, *, num_classes: int, in_channels: int, weights_dir: str | Path | None = None
) -> WeightsMeta:
    """Find the pretrained entry for a registered model, class count and input channels.

    Args:
        model: Registered model name, e.g. ``"resnet20"``.
        num_classes: Number of classes the weights must have.
        in_channels: Number of input channels the weights must have.
        weights_dir: Directory to search instead of the shipped one.

    Returns:
        The matching entry (the first by name if several match).

    Raises:
        CheckpointError: If no entry matches; the message lists the available entries.
    """
    metas = list_pretrained(weights_dir=weights_dir)
    for meta in metas:
        if (meta.model, meta.num_classes, meta.in_channels) == (model, num_classes, in_channels):
            return meta
    available = "; ".join(m.describe() for m in metas) or "(none)"
    raise CheckpointError(
        f"Expected pretrained weights for {model!r} with {num_classes} classes and {in_channels} input channels, "
        f"but none are shipped. Available: {available}. Pass matching num_classes/in_channels, "
        "or use pretrained=False and load your own weights"
    )


def load_pretrained(model_module: nn.Module, meta: WeightsMeta) -> nn.Module:
    """Load the weights of ``meta`` into ``model_module`` (in place) and return it.

    Args:
        model_module: A freshly built model of architecture ``meta.model``.
        meta: The entry to load, from :func:`get_weights_meta` or :func:`list_pretrained`; its
            ``weights_dir`` holds ``<meta.name>.safetensors``.

    Returns:
        ``model_module``, with the pretrained weights.

    Raises:
        CheckpointError: If the weights file is missing, not safetensors, or its keys or shapes
            do not match the model.
    """
    path = meta.weights_dir / f"{meta.name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"Expected weights file {path} for pretrained entry {meta.name!r}, but it does not exist; "
                              "reinstall s2dnas or remove the entry's JSON")
    state = read_safetensors(path)
    _check_state_dict(state, model_module, source=str(path))
    model_module.load_state_dict(state, strict=True)
    return model_module


def _check_state_dict(state: dict[str, torch.Tensor], model: nn.Module, *, source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``model``'s keys and shapes."""
    problem = check_state_dict(state, model.state_dict())
    if problem:
        raise CheckpointError(f"Expected {source} to match the model's state dict, but got {problem}; "
                              "build the model named in the entry's metadata")


def shipped_supernet_dir(entry: str) -> Path:
    """Directory of the super-network shipped for the pretrained entry named ``entry``.

    Raises:
        CheckpointError: none ships for it; the message lists the entries that have one.
    """
    directory = SUPERNETS_DIR / entry
    if (directory / "supernet.safetensors").is_file():
        return directory
    have = sorted(p.name for p in SUPERNETS_DIR.glob("*") if (p / "supernet.safetensors").is_file())
    raise CheckpointError(f"search.supernet: shipped: no super-network ships for the base weights {entry!r} "
                          f"(shipped for: {', '.join(have) or 'none'}); train one with s2dnas supernet --out DIR "
                          "and set search.supernet to DIR")
