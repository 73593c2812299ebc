"""Any ImageNet-style folder of images: ``root/train/<class>/*`` and ``root/val|test/<class>/*``.

Val is a seeded part of ``root/train`` (like every dataset in s2dnas); ``root/val`` (or
``root/test`` when there is no ``val``) is the test split, used only for reporting. Images are
decoded by PIL (torchvision's ``ImageFolder``), converted to RGB, and normalised with the ImageNet
mean and std.

Transforms (train augmentation only on train):

* ``image_size > 64`` (ImageNet-like): train ``RandomResizedCrop(image_size)`` + horizontal flip;
  eval ``Resize(int(image_size / 0.875))`` + ``CenterCrop(image_size)`` (the usual 0.875 crop ratio).
* ``image_size <= 64`` (CIFAR-like thumbnails, where a random-resized crop throws away too much):
  every split ``Resize(image_size)`` + ``CenterCrop(image_size)``; train adds
  ``RandomCrop(image_size, padding=image_size // 8)`` + horizontal flip (4 pixels at 32x32, as on CIFAR).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset

from s2dnas.data.datasets import DataSplits, _split_indices
from s2dnas.errors import DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SMALL_IMAGE_SIZE", "build_transforms", "imagefolder_splits"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Largest ``image_size`` that gets the thumbnail (pad + random crop) recipe.
SMALL_IMAGE_SIZE = 64
_TEST_DIRS = ("val", "test")


def build_transforms(*, image_size: int) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """Return ``(train_transform, eval_transform)`` for PIL images (see the module docstring).

    Args:
        image_size: Side of the square model input.

    Raises:
        DataError: If ``image_size`` is not positive.
    """
    from torchvision import transforms as T  # lazy: torchvision import is slow

    if image_size < 1:
        raise DataError(f"Expected a positive image_size, but got {image_size}")
    finish = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if image_size <= SMALL_IMAGE_SIZE:
        fit = [T.Resize(image_size), T.CenterCrop(image_size)]
        train = T.Compose([*fit, T.RandomCrop(image_size, padding=max(1, image_size // 8)),
                           T.RandomHorizontalFlip(), *finish])
        return train, T.Compose([*fit, *finish])
    train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *finish])
    evaluate = T.Compose([T.Resize(int(image_size / 0.875)), T.CenterCrop(image_size), *finish])
    return train, evaluate


def _load_rgb(path: str) -> Any:
    """Decode one image as RGB; a truncated or unreadable file raises :class:`DataError` naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"Cannot decode image {path} ({err}); delete or replace the file") from None


def _folder(path: Path, transform: Callable[..., torch.Tensor]) -> Dataset:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=transform, loader=_load_rgb)
    except (FileNotFoundError, OSError) as err:  # no class folders, or no image in them
        raise DataError(
            f"Expected class folders of images in {path}, but found none ({str(err).splitlines()[0][:150]}); "
            "lay it out as <root>/train/<class>/<image> and <root>/val/<class>/<image>"
        ) from None


def imagefolder_splits(root: str | os.PathLike[str], *, val_size: int, seed: int, image_size: int = 224,
                       test_dir: str | None = None) -> DataSplits:
    """Train, val (seeded, held out of ``root/train``) and test splits of an ImageNet-style folder.

    Args:
        root: Folder holding ``train/<class>/*`` and ``val/<class>/*`` (or ``test/<class>/*``).
        val_size: Images of ``root/train`` held out for validation.
        seed: Seed of the train/val cut.
        image_size: Side of the square model input (``<= 64`` selects the thumbnail recipe).
        test_dir: Sub-folder of the test split; default ``val``, else ``test``.

    Returns:
        The splits; images are ``(3, image_size, image_size)`` float tensors, labels ints.

    Raises:
        DataError: ``root``, ``train`` or the test folder is missing or has no images, the class
            folders of train and test differ, or ``val_size`` is not smaller than the train set.
    """
    root = Path(root)
    train_root = root / "train"
    if not train_root.is_dir():
        raise DataError(f"Expected a training folder {train_root}, but it does not exist; "
                        "lay the images out as <root>/train/<class>/<image>")
    names = (test_dir,) if test_dir is not None else _TEST_DIRS
    test_root = next((root / n for n in names if (root / n).is_dir()), None)
    if test_root is None:
        raise DataError(f"Expected a test folder {' or '.join(str(root / n) for n in names)}, but none exists; "
                        "add <root>/val/<class>/<image> (the test split, used only for reporting)")
    train_tf, eval_tf = build_transforms(image_size=image_size)
    train_all = _folder(train_root, train_tf)
    test = _folder(test_root, eval_tf)
    if train_all.classes != test.classes:
        only_train = sorted(set(train_all.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train_all.classes))
        raise DataError(
            f"Expected the same class folders in {train_root} and {test_root}, but got "
            f"{len(train_all.classes)} and {len(test.classes)} (only in train: {only_train[:5]}, "
            f"only in test: {only_test[:5]}); add or remove folders so that they match"
        )
    fit_idx, val_idx = _split_indices(len(train_all), val_size, seed)
    # Same file list, evaluation transform: val must not be augmented.
    val_base = copy.copy(train_all)
    val_base.transform = eval_tf
    return DataSplits(
        name=f"imagefolder:{root}",
        train=Subset(train_all, fit_idx.tolist()),
        val=Subset(val_base, val_idx.tolist()),
        test=test,
        num_classes=len(train_all.classes),
        in_channels=3,
        input_size=(image_size, image_size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=tuple(train_all.classes),
    )
