"""The three splits of a data set and the pieces every data set shares (the val cut, in-memory images).

Val is a seeded part of the official training set: every choice the tool makes (thresholds,
search rewards, early stopping) uses it. Test is the official test set, used only for reporting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from s2dnas.data.preprocessing import Preprocessing, read_preprocessing
from s2dnas.errors import DataError

_logger = logging.getLogger(__name__)

__all__ = ["DataSplits", "TensorImageDataset", "RandomCropFlip", "split_indices", "check_data_spec", "check_splits_fit"]


class RandomCropFlip:
    """Random crop with zero padding (of the raw image) and optional horizontal flip, on tensors."""

    def __init__(self, *, pad: int, flip: bool, fill: torch.Tensor) -> None:
        self.pad, self.flip, self.fill = pad, flip, fill

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (C, H, W), already normalised
        c, h, w = x.shape
        if self.pad:
            padded = self.fill.view(c, 1, 1).expand(c, h + 2 * self.pad, w + 2 * self.pad).clone()
            padded[:, self.pad : self.pad + h, self.pad : self.pad + w] = x
            i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = padded[:, i : i + h, j : j + w]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x


class TensorImageDataset(Dataset):
    """Images held in memory as a normalised float tensor ``(N, C, H, W)`` with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if len(images) != len(labels):
            raise DataError(f"Expected as many labels as images, but got {len(labels)} and {len(images)}")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index]


@dataclass(frozen=True)
class DataSplits:
    """The three splits of a dataset and what a model needs to know about it.

    ``val_size`` and ``seed`` say how val was cut out of train (``val_size=0``: no val split, for
    commands that only read test); ``augment`` names the train-time augmentation.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=())
    val_size: int = 0
    seed: int = 0
    augment: str = "none"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input."""
        return (self.in_channels, *self.input_size)

    @property
    def preprocessing(self) -> Preprocessing:
        """Input size, channels and normalisation of these splits."""
        return Preprocessing(input_size=self.input_size, channels=self.in_channels, mean=self.mean, std=self.std)

    def data_spec(self) -> dict[str, Any]:
        """The plain dict stored with a model (train-base's ``model.json``, a dynamic model's ``data``)."""
        return {"dataset": self.name, "val_size": int(self.val_size), "data_seed": int(self.seed),
                "augment": self.augment, "num_classes": int(self.num_classes),
                "preprocessing": self.preprocessing.to_dict()}


def check_data_spec(spec: Any, *, source: str) -> dict[str, Any]:
    """Return ``spec`` (a model's ``data`` dict) after checking its types.

    Raises:
        DataError: not a dict with ``dataset``, ``val_size``, ``data_seed`` and ``preprocessing``.
    """
    ok = (isinstance(spec, dict) and isinstance(spec.get("dataset"), str)
          and all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) and spec[k] >= 0
                  for k in ("val_size", "data_seed")))
    if not ok:
        raise DataError(f"Expected the `data` entry of {source} to hold dataset, val_size and data_seed, but got "
                        f"{spec!r}; fix or delete the entry")
    read_preprocessing(spec.get("preprocessing"))
    return spec


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded cut of ``range(n)`` into sorted ``(train, val)`` indices; ``val_size=0`` keeps all in train.

    Raises:
        DataError: ``val_size`` is negative or leaves no training image.
    """
    if val_size == 0 and n > 0:
        return np.arange(n), np.arange(0)
    if not 0 < val_size < n:
        raise DataError(
            f"Expected 0 < val_size < {n} (the training set's size), but got {val_size}: the validation "
            "or the training split would be empty; "
            + (f"pass --val-size between 1 and {n - 1}" if n > 1 else "use a training set of at least 2 images")
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def check_splits_fit(spec: dict[str, Any], splits: DataSplits) -> None:
    """Raise :class:`DataError` unless ``splits`` have the classes, channels and size of a model's ``spec``.

    ``spec`` is a saved model's description (``num_classes``, ``in_channels``, ``input_shape``;
    optionally ``mean``/``std``, compared with a warning).
    """
    problems = []
    if spec.get("num_classes") is not None and int(spec["num_classes"]) != splits.num_classes:
        problems.append(f"{spec['num_classes']} classes, but the dataset has {splits.num_classes}")
    if spec.get("in_channels") is not None and int(spec["in_channels"]) != splits.in_channels:
        problems.append(f"{spec['in_channels']} input channels, but the dataset has {splits.in_channels}")
    if spec.get("input_shape") is not None and tuple(spec["input_shape"]) != tuple(splits.input_shape):
        problems.append(f"inputs of shape {tuple(spec['input_shape'])}, but the dataset's are {splits.input_shape}")
    if problems:
        raise DataError(f"Expected a dataset matching the model, but the model has {'; '.join(problems)}; "
                        f"pass the --dataset the model was trained on")
    for key in ("mean", "std"):
        saved, data = spec.get(key) or [], getattr(splits, key)
        if saved and any(abs(a - b) > 1e-3 for a, b in zip(saved, data)):
            _logger.warning("The model was saved with input %s %s but the dataset is normalised with %s; "
                            "accuracy may suffer", key, saved, list(data))
