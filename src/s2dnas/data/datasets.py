"""Datasets and their three splits: train (augmented), val (held out of train), test.

Val is a seeded part of the official training set: every choice the tool makes (thresholds,
search rewards, early stopping) uses it. Test is the official test set, used only for reporting.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from s2dnas.data import cifar, fashion_mnist
from s2dnas.errors import DataError

__all__ = ["DataSplits", "TensorImageDataset", "RandomCropFlip", "build_splits", "list_datasets", "make_loader"]


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
    """The three splits of a dataset and what a model needs to know about it."""

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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input."""
        return (self.in_channels, *self.input_size)


def _split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < val_size < n:
        raise DataError(
            f"Expected 0 < val_size < {n} (the training set's size), but got {val_size}: the validation "
            "or the training split would be empty; "
            + (f"pass --val-size between 1 and {n - 1}" if n > 1 else "use a training set of at least 2 images")
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def _in_memory_splits(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                      test_y: np.ndarray, *, val_size: int, seed: int, pad: int, flip: bool,
                      class_names: tuple[str, ...]) -> DataSplits:
    """Normalise uint8 ``(N, H, W[, C])`` arrays and cut val out of train."""
    if train_x.ndim == 3:
        train_x, test_x = train_x[:, None], test_x[:, None]
    else:
        train_x, test_x = train_x.transpose(0, 3, 1, 2), test_x.transpose(0, 3, 1, 2)
    if len(train_x) == 0 or len(test_x) == 0:
        raise DataError(f"Dataset {name!r} has an empty split (train {len(train_x)}, test {len(test_x)})")
    tr = torch.from_numpy(np.ascontiguousarray(train_x)).float().div_(255)
    te = torch.from_numpy(np.ascontiguousarray(test_x)).float().div_(255)
    mean = tr.mean(dim=(0, 2, 3))
    std = tr.std(dim=(0, 2, 3)).clamp_min(1e-6)
    tr = (tr - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    te = (te - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    ytr = torch.as_tensor(train_y, dtype=torch.int64)
    yte = torch.as_tensor(test_y, dtype=torch.int64)
    fit_idx, val_idx = _split_indices(len(tr), val_size, seed)
    fit_idx_t, val_idx_t = torch.from_numpy(fit_idx), torch.from_numpy(val_idx)
    augment = RandomCropFlip(pad=pad, flip=flip, fill=-mean / std)
    num_classes = int(max(ytr.max(), yte.max())) + 1 if not class_names else len(class_names)
    return DataSplits(
        name=name,
        train=TensorImageDataset(tr[fit_idx_t], ytr[fit_idx_t], augment),
        val=TensorImageDataset(tr[val_idx_t], ytr[val_idx_t]),
        test=TensorImageDataset(te, yte),
        num_classes=num_classes,
        in_channels=tr.shape[1],
        input_size=(tr.shape[2], tr.shape[3]),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        class_names=class_names,
    )


def _fashion_mnist(data_dir: str | os.PathLike | None, *, val_size: int, seed: int, download: bool) -> DataSplits:
    arrays = fashion_mnist.load_fashion_mnist(fashion_mnist.find_fashion_mnist(data_dir, download=download))
    return _in_memory_splits(
        "fashion-mnist", arrays["train_images"], arrays["train_labels"], arrays["test_images"],
        arrays["test_labels"], val_size=val_size, seed=seed, pad=2, flip=True,
        class_names=fashion_mnist.CLASSES,
    )


def _cifar(num: int, data_dir: str | os.PathLike | None, *, val_size: int, seed: int, download: bool) -> DataSplits:
    # Our own reader (restricted unpickler), not torchvision's CIFAR10 class, which unpickles freely.
    arrays = cifar.load_cifar(cifar.find_cifar(num_classes=num, data_dir=data_dir, download=download),
                              num_classes=num)
    return _in_memory_splits(
        f"cifar{num}", arrays.train_images, arrays.train_labels, arrays.test_images, arrays.test_labels,
        val_size=val_size, seed=seed, pad=4, flip=True, class_names=arrays.class_names,
    )


_DATASETS: dict[str, Callable[..., DataSplits]] = {
    "fashion-mnist": _fashion_mnist,
    "cifar10": lambda d, **kw: _cifar(10, d, **kw),
    "cifar100": lambda d, **kw: _cifar(100, d, **kw),
}


def list_datasets() -> list[str]:
    """Return the names accepted by :func:`build_splits` (plus ``imagefolder:<root>``)."""
    return sorted(_DATASETS)


def build_splits(name: str, *, data_dir: str | os.PathLike | None = None, val_size: int = 5000,
                 seed: int = 0, download: bool = True) -> DataSplits:
    """Load a dataset and cut its seeded validation split out of the training set.

    Args:
        name: ``fashion-mnist``, ``cifar10``, ``cifar100`` or ``imagefolder:<root>``.
        data_dir: where to look first for the files.
        val_size: images held out of train for validation.
        seed: seed of the train/val cut.
        download: allow torchvision to download when the files are not found.

    Raises:
        DataError: unknown name, missing or truncated files, empty split.
    """
    if name.startswith("imagefolder:"):
        from s2dnas.data.imagefolder import imagefolder_splits

        return imagefolder_splits(name.split(":", 1)[1], val_size=val_size, seed=seed)
    if name not in _DATASETS:
        raise DataError(
            f"Unknown dataset {name!r}: expected one of {', '.join(list_datasets())} or imagefolder:<root>"
        )
    return _DATASETS[name](data_dir, val_size=val_size, seed=seed, download=download)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, limit: int | None = None) -> DataLoader:
    """Return a DataLoader; ``shuffle`` uses a generator seeded with ``seed`` (deterministic)."""
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    if len(dataset) == 0:
        raise DataError("Expected a non-empty dataset split, but got 0 examples")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=False)
