"""The data sets by name: ``build_splits`` (train/val/test), ``dataset_shape`` (without loading them).

Val is a seeded part of the official training set: every choice the tool makes (thresholds,
search rewards, early stopping) uses it. Test is the official test set, used only for reporting.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from s2dnas.data import cifar, fashion_mnist, imagefolder
from s2dnas.data.preprocessing import (IMAGENET_MEAN, IMAGENET_STD, ImageOptions, Preprocessing, default_val_size,
                                      read_preprocessing)
from s2dnas.data.splits import DataSplits, RandomCropFlip, TensorImageDataset, check_data_spec, split_indices
from s2dnas.errors import DataError

_logger = logging.getLogger(__name__)

__all__ = ["DataSplits", "TensorImageDataset", "RandomCropFlip", "DATASET_SHAPES", "build_splits",
           "canonical_dataset", "dataset_shape", "list_datasets", "make_loader", "splits_for_model"]

#: Input shape ``(C, H, W)`` and class count of the built-in datasets (no files needed).
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}
_PREFIX = "imagefolder:"


def _in_memory_splits(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                      test_y: np.ndarray, *, val_size: int | None, seed: int, pad: int, options: ImageOptions,
                      preprocessing: Preprocessing | None, class_names: tuple[str, ...]) -> DataSplits:
    """Normalise uint8 ``(N, H, W[, C])`` arrays and cut val out of train."""
    if train_x.ndim == 3:
        train_x, test_x = train_x[:, None], test_x[:, None]
    else:
        train_x, test_x = train_x.transpose(0, 3, 1, 2), test_x.transpose(0, 3, 1, 2)
    if len(train_x) == 0 or len(test_x) == 0:
        raise DataError(f"Dataset {name!r} has an empty split (train {len(train_x)}, test {len(test_x)})")
    native = (train_x.shape[1], train_x.shape[2], train_x.shape[3])
    wanted = (options.channels or native[0], *(options.input_size or native[1:]))
    if preprocessing is not None:
        wanted = preprocessing.input_shape
    if tuple(wanted) != native:
        raise DataError(f"Expected inputs of shape {list(native)} for {name} (its images are stored at that size), "
                        f"but got {list(wanted)}; drop --input-size/--channels for the built-in data sets")
    tr = torch.from_numpy(np.ascontiguousarray(train_x)).float().div_(255)
    te = torch.from_numpy(np.ascontiguousarray(test_x)).float().div_(255)
    if preprocessing is not None:
        mean, std = torch.tensor(preprocessing.mean), torch.tensor(preprocessing.std)
    elif options.normalize == "imagenet":
        if native[0] != 3:
            raise DataError(f"Expected 3 channels for --normalize imagenet, but {name} has {native[0]}; "
                            "use --normalize train")
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    else:
        mean = tr.mean(dim=(0, 2, 3))
        std = tr.std(dim=(0, 2, 3)).clamp_min(1e-6)
    tr = (tr - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    te = (te - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    ytr = torch.as_tensor(train_y, dtype=torch.int64)
    yte = torch.as_tensor(test_y, dtype=torch.int64)
    val_size = default_val_size(len(tr)) if val_size is None else val_size
    fit_idx, val_idx = split_indices(len(tr), val_size, seed)
    fit_idx_t, val_idx_t = torch.from_numpy(fit_idx), torch.from_numpy(val_idx)
    augment = options.augment or "crop-flip"
    transform = None if augment == "none" else RandomCropFlip(pad=pad, flip=augment == "crop-flip", fill=-mean / std)
    num_classes = int(max(ytr.max(), yte.max())) + 1 if not class_names else len(class_names)
    return DataSplits(
        name=name,
        train=TensorImageDataset(tr[fit_idx_t], ytr[fit_idx_t], transform),
        val=TensorImageDataset(tr[val_idx_t], ytr[val_idx_t]),
        test=TensorImageDataset(te, yte),
        num_classes=num_classes,
        in_channels=tr.shape[1],
        input_size=(tr.shape[2], tr.shape[3]),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        class_names=class_names,
        val_size=val_size, seed=seed, augment=augment,
    )


def _fashion_mnist(data_dir: str | os.PathLike | None, *, download: bool, **kw: object) -> DataSplits:
    arrays = fashion_mnist.load_fashion_mnist(fashion_mnist.find_fashion_mnist(data_dir, download=download))
    return _in_memory_splits(
        "fashion-mnist", arrays["train_images"], arrays["train_labels"], arrays["test_images"],
        arrays["test_labels"], pad=2, class_names=fashion_mnist.CLASSES, **kw,  # type: ignore[arg-type]
    )


def _cifar(num: int, data_dir: str | os.PathLike | None, *, download: bool, **kw: object) -> DataSplits:
    # Our own reader (restricted unpickler), not torchvision's CIFAR10 class, which unpickles freely.
    arrays = cifar.load_cifar(cifar.find_cifar(num_classes=num, data_dir=data_dir, download=download),
                              num_classes=num)
    return _in_memory_splits(
        f"cifar{num}", arrays.train_images, arrays.train_labels, arrays.test_images, arrays.test_labels,
        pad=4, class_names=arrays.class_names, **kw,  # type: ignore[arg-type]
    )


_DATASETS: dict[str, Callable[..., DataSplits]] = {
    "fashion-mnist": _fashion_mnist,
    "cifar10": lambda d, **kw: _cifar(10, d, **kw),
    "cifar100": lambda d, **kw: _cifar(100, d, **kw),
}


def list_datasets() -> list[str]:
    """Return the names accepted by :func:`build_splits` (plus ``imagefolder:<root>``)."""
    return sorted(_DATASETS)


def canonical_dataset(name: str) -> str:
    """``name`` with an image folder's root made absolute and resolved (``./data`` and ``/abs/data`` agree)."""
    if name.startswith(_PREFIX):
        return _PREFIX + str(Path(name[len(_PREFIX):]).expanduser().resolve())
    return name


def _unknown(name: str) -> DataError:
    return DataError(f"Unknown dataset {name!r}: expected one of {', '.join(list_datasets())} or imagefolder:<root>")


def build_splits(name: str, *, data_dir: str | os.PathLike | None = None, val_size: int | None = None,
                 seed: int = 0, download: bool = True, options: ImageOptions | None = None,
                 preprocessing: Preprocessing | None = None) -> DataSplits:
    """Load a dataset and cut its seeded validation split out of the training set.

    Args:
        name: ``fashion-mnist``, ``cifar10``, ``cifar100`` or ``imagefolder:<root>``.
        data_dir: where to look first for the files.
        val_size: images held out of train for validation; ``None``: 10% of train, at most 5000
            (:func:`~s2dnas.data.preprocessing.default_val_size`); ``0``: no val split.
        seed: seed of the train/val cut.
        download: allow torchvision to download when the files are not found.
        options: the user's choices (input size, channels, augmentation, normalisation).
        preprocessing: reproduce a model's preprocessing exactly (its stored input size, channels,
            mean and std); takes precedence over ``options``' size, channels and normalisation.

    Raises:
        DataError: unknown name, missing or truncated files, empty split, one class only.
    """
    options = options or ImageOptions()
    if val_size is not None and val_size < 0:
        raise DataError(f"Expected --val-size >= 0, but got {val_size}")
    if name.startswith(_PREFIX):
        return imagefolder.imagefolder_splits(name[len(_PREFIX):], val_size=val_size, seed=seed, options=options,
                                              preprocessing=preprocessing)
    if name not in _DATASETS:
        raise _unknown(name)
    return _DATASETS[name](data_dir, val_size=val_size, seed=seed, download=download, options=options,
                           preprocessing=preprocessing)


def splits_for_model(data_spec: dict[str, Any] | None, *, dataset: str | None = None,
                     data_dir: str | os.PathLike | None = None, val_size: int | None = None, seed: int | None = None,
                     need_val: bool = True, strict: bool = True, source: str = "the model") -> DataSplits:
    """The splits a stored model was made with: its data set, val cut and preprocessing.

    Args:
        data_spec: the model's ``data`` dict (:meth:`DataSplits.data_spec`), or ``None`` for a model
            saved without one (then the arguments alone decide, as :func:`build_splits`).
        dataset: another data set to evaluate on (default: the model's, else ``fashion-mnist``);
            the model's preprocessing is applied to it.
        data_dir: where to look first for the files.
        val_size: the val size the user asked for (default: the model's).
        seed: the val seed the user asked for (default: the model's, else 0).
        need_val: ``False`` for commands that read test only: no val split is cut (``val_size=0``).
        strict: refuse a ``val_size``/``seed`` other than the model's; else warn and use the given one.
        source: how to name the model in messages.

    Raises:
        DataError: a val cut other than the model's (``strict``), or what :func:`build_splits` raises.
    """
    preprocessing = None
    if data_spec is not None:
        data_spec = check_data_spec(data_spec, source=source)
        preprocessing = read_preprocessing(data_spec["preprocessing"])
        stored = canonical_dataset(data_spec["dataset"])
        if dataset is not None and canonical_dataset(dataset) != stored:
            _logger.warning("%s was trained on %s, evaluating on %s", source, data_spec["dataset"], dataset)
        same_data = dataset is None or canonical_dataset(dataset) == stored
        dataset = dataset or data_spec["dataset"]
        if need_val and same_data:
            given = {"--val-size": val_size, "--data-seed": seed}
            saved = {"--val-size": data_spec["val_size"], "--data-seed": data_spec["data_seed"]}
            differs = [f"{k} {saved[k]}" for k in given if given[k] is not None and given[k] != saved[k]]
            if differs and strict:
                raise DataError(f"Expected the val split {source} was made with ({', '.join(differs)}), but got "
                                f"{', '.join(f'{k} {given[k]}' for k in given if given[k] is not None)}: another "
                                "cut's val holds training images; drop --val-size/--data-seed or pass the model's")
            if differs:
                _logger.warning("%s was made with %s; the val split given here differs and may hold images the "
                                "base model was trained on", source, ", ".join(differs))
            val_size = saved["--val-size"] if val_size is None else val_size
            seed = saved["--data-seed"] if seed is None else seed
    options = ImageOptions(augment=data_spec.get("augment")) if data_spec and data_spec.get("augment") else None
    return build_splits(dataset or "fashion-mnist", data_dir=data_dir, val_size=val_size if need_val else 0,
                        seed=seed or 0, options=options, preprocessing=preprocessing)


def dataset_shape(name: str, *, options: ImageOptions | None = None,
                  size_flag: str = "--input-size H,W") -> tuple[tuple[int, int, int], int]:
    """``((C, H, W), num_classes)`` of a dataset without loading it (an image folder: read from the headers;
    ``size_flag`` is the flag its mixed-sizes error advises).

    Raises:
        DataError: unknown name, or an image folder :func:`build_splits` would refuse.
    """
    if name.startswith(_PREFIX):
        return imagefolder.folder_shape(name[len(_PREFIX):], options=options or ImageOptions(), size_flag=size_flag)
    if name not in DATASET_SHAPES:
        raise _unknown(name)
    return DATASET_SHAPES[name]


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
