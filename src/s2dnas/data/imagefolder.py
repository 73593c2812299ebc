"""Any ImageNet-style folder of images: ``root/train/<class>/*`` and ``root/val|test/<class>/*``.

Val is a seeded part of ``root/train`` (like every dataset in s2dnas); ``root/val`` (or
``root/test`` when there is no ``val``) is the test split, used only for reporting.

Preprocessing (see :class:`~s2dnas.data.preprocessing.Preprocessing`; stored with the model so that
evaluate, bench, export and the runtime apply the same):

* **decoding**: every PIL mode. 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ...) are divided
  by 255, 16-bit grey (``I;16*``, and ``I`` within 0..65535) by 65535, float grey (``F``) is taken
  as already in [0, 1]; alpha is dropped. Anything else is refused with a line naming the file.
* **input size**: ``options.input_size``; default the images' native size, read from the headers of
  the training images, when they all share one (else the folder is refused with a line asking for
  ``--input-size``). Images of another size are resized bilinearly.
* **channels**: 1 when every training image is grey, else 3 (grey -> RGB by repetition, RGB -> grey
  by ITU-R 601 luminance); ``options.channels`` overrides.
* **normalisation**: per-channel mean and std of the training images (of a seeded sample of at most
  :data:`STATS_IMAGES` of them), or the ImageNet statistics with ``normalize="imagenet"``.
* **augmentation** (train only): ``crop`` by default (random crop with padding of 1/8 of the side);
  ``crop-flip`` adds a horizontal flip (wrong for digits and text, so never the default); ``none``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from s2dnas.data.preprocessing import (IMAGENET_MEAN, IMAGENET_STD, ImageOptions, Preprocessing,
                                       default_val_size)
from s2dnas.data.splits import DataSplits, RandomCropFlip, split_indices
from s2dnas.errors import DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "STATS_IMAGES", "decode_image", "folder_shape",
           "imagefolder_splits"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
#: Training images (a seeded sample) the normalisation statistics are computed from.
STATS_IMAGES = 2000
_TEST_DIRS = ("val", "test")
_GREY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _bad(path: Path | str, why: str) -> DataError:
    return DataError(f"Cannot decode image {path} ({why}); delete, convert or replace the file")


def decode_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode one image file as a float tensor ``(C, H, W)`` in [0, 1], ``C`` 1 (grey) or 3 (colour).

    Raises:
        DataError: unreadable, truncated, or a mode/value range that cannot be mapped to [0, 1].
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("1", "L", "P", "RGB") or mode not in _GREY_MODES:
                if mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                if mode == "L":
                    arr = np.asarray(img, dtype=np.float32) / 255.0
                elif mode == "1":
                    arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
                else:
                    try:
                        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
                    except (ValueError, OSError) as err:
                        raise _bad(path, f"PIL mode {mode} cannot be converted to RGB: {err}") from None
            elif mode in ("LA", "La"):
                arr = np.asarray(img.getchannel(0), dtype=np.float32) / 255.0
            elif mode == "F":
                arr = np.asarray(img, dtype=np.float32)
                if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0):
                    raise _bad(path, f"float image with values in [{arr.min():.4g}, {arr.max():.4g}], expected [0, 1]")
            else:  # 16- or 32-bit integer grey: 16-bit data
                arr = np.asarray(img).astype(np.float64)
                if arr.size and (arr.min() < 0 or arr.max() > 65535):
                    raise _bad(path, f"PIL mode {mode} with values in [{arr.min():.0f}, {arr.max():.0f}], "
                                     "expected 16-bit data (0..65535)")
                arr = (arr / 65535.0).astype(np.float32)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise _bad(path, str(err).splitlines()[0][:150] if str(err) else type(err).__name__) from None
    x = torch.from_numpy(np.array(arr, dtype=np.float32))  # a writable copy
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def _to_input(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """``(C0, H0, W0)`` in [0, 1] -> normalised ``(C, H, W)`` of ``prep``."""
    if x.shape[0] != prep.channels:
        x = x.expand(3, -1, -1) if prep.channels == 3 else (x * _LUMA.view(3, 1, 1)).sum(0, keepdim=True)
    if tuple(x.shape[1:]) != prep.input_size:
        x = F.interpolate(x[None], size=prep.input_size, mode="bilinear", align_corners=False)[0]
    mean = torch.tensor(prep.mean).view(-1, 1, 1)
    std = torch.tensor(prep.std).view(-1, 1, 1)
    return (x - mean) / std


class _Images(Dataset):
    """``(path, label)`` pairs decoded on access and preprocessed, with an optional train transform."""

    def __init__(self, samples: list[tuple[str, int]], prep: Preprocessing,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.samples, self.prep, self.transform = samples, prep, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.samples[index]
        x = _to_input(decode_image(path), self.prep)
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.tensor(label, dtype=torch.int64)


def _list_folder(path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class folders (sorted; hidden ones skipped) and the image files under each, recursively."""
    if not path.is_dir():
        raise DataError(f"Expected a folder {path}, but it does not exist")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(path / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            samples += [(os.path.join(dirpath, f), label) for f in sorted(filenames)
                        if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    if not classes or not samples:
        raise DataError(f"Expected class folders of images in {path}, but found none; lay it out as "
                        "<root>/train/<class>/<image> and <root>/val/<class>/<image>")
    empty = sorted(set(classes) - {classes[label] for _, label in samples})
    if empty:
        raise DataError(f"Expected class folders of images in {path}, but {', '.join(empty[:5])} hold(s) no image "
                        f"(extensions {', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder "
                        "(layout: <root>/train/<class>/<image> and <root>/val/<class>/<image>)")
    return classes, samples


def _scan(samples: list[tuple[str, int]]) -> tuple[dict[tuple[int, int], int], bool]:
    """``{(H, W): count}`` and whether every image is grey, from the image headers only (cheap)."""
    from PIL import Image

    sizes: dict[tuple[int, int], int] = {}
    grey = True
    for path, _ in samples:
        try:
            with Image.open(path) as img:
                w, h = img.size
                grey = grey and img.mode in _GREY_MODES
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise _bad(path, str(err).splitlines()[0][:150] if str(err) else type(err).__name__) from None
        sizes[(h, w)] = sizes.get((h, w), 0) + 1
    return sizes, grey


def _train_root(root: Path) -> Path:
    train_root = root / "train"
    if not train_root.is_dir():
        raise DataError(f"Expected a training folder {train_root}, but it does not exist; "
                        "lay the images out as <root>/train/<class>/<image>")
    return train_root


def _shape(train_root: Path, classes: list[str], samples: list[tuple[str, int]],
           options: ImageOptions, size_flag: str = "--input-size H,W") -> tuple[int, tuple[int, int]]:
    """``(channels, (H, W))`` from the options, else from the training images' headers (mixed sizes:
    an error that advises ``size_flag``, the calling command's flag for the input size)."""
    if len(classes) < 2:
        raise DataError(f"Expected at least 2 class folders in {train_root}, but found {len(classes)} "
                        f"({', '.join(classes)}): a classifier of one class learns nothing; add the other classes")
    sizes, grey = _scan(samples)
    channels = options.channels or (1 if grey and options.normalize != "imagenet" else 3)
    size = options.input_size
    if size is None:
        if len(sizes) > 1:
            common = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
            listed = ", ".join(f"{h}x{w} ({n})" for (h, w), n in common)
            raise DataError(f"Expected the training images in {train_root} to share one size, but found "
                            f"{len(sizes)} sizes ({listed}, ...); pass {size_flag} "
                            "to resize them all")
        size = next(iter(sizes))
    return channels, size


def folder_shape(root: str | os.PathLike[str], *, options: ImageOptions,
                 size_flag: str = "--input-size H,W") -> tuple[tuple[int, int, int], int]:
    """``((C, H, W), num_classes)`` of an image folder, from its headers (no image is decoded).

    ``size_flag``: what the mixed-sizes error tells the user to pass (the calling command's flag).
    """
    train_root = _train_root(Path(root))
    classes, samples = _list_folder(train_root)
    channels, size = _shape(train_root, classes, samples, options, size_flag)
    return (channels, *size), len(classes)


def _statistics(samples: list[tuple[str, int]], channels: int,
                size: tuple[int, int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (a seeded sample of) the training images, after resizing."""
    unit = Preprocessing(input_size=size, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels)
    picked = samples
    if len(samples) > STATS_IMAGES:
        idx = np.sort(np.random.default_rng(0).choice(len(samples), STATS_IMAGES, replace=False))
        picked = [samples[i] for i in idx]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for path, _ in picked:
        x = _to_input(decode_image(path), unit).double()
        total += x.sum(dim=(1, 2))
        total_sq += (x * x).sum(dim=(1, 2))
        count += x.shape[1] * x.shape[2]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def imagefolder_splits(root: str | os.PathLike[str], *, val_size: int | None, seed: int,
                       options: ImageOptions | None = None, preprocessing: Preprocessing | None = None,
                       test_dir: str | None = None) -> DataSplits:
    """Train, val (seeded, held out of ``root/train``) and test splits of an ImageNet-style folder.

    Args:
        root: Folder holding ``train/<class>/*`` and ``val/<class>/*`` (or ``test/<class>/*``).
        val_size: Images of ``root/train`` held out for validation (``None``: 10%, at most 5000; 0: none).
        seed: Seed of the train/val cut.
        options: Input size, channels, augmentation and normalisation (module docstring for the defaults).
        preprocessing: A model's stored preprocessing, reproduced exactly (no header scan, no statistics).
        test_dir: Sub-folder of the test split; default ``val``, else ``test``.

    Returns:
        The splits; images are ``(C, H, W)`` float tensors, labels ints.

    Raises:
        DataError: ``root``, ``train`` or the test folder is missing or has no images, fewer than two
            classes, the class folders of train and test differ, the training images have several
            sizes and no input size is given, an image cannot be decoded, or ``val_size`` is not
            smaller than the train set.
    """
    options = options or ImageOptions()
    root = Path(root).expanduser().resolve()
    train_root = _train_root(root)
    names = (test_dir,) if test_dir is not None else _TEST_DIRS
    test_root = next((root / n for n in names if (root / n).is_dir()), None)
    if test_root is None:
        raise DataError(f"Expected a test folder {' or '.join(str(root / n) for n in names)}, but none exists; "
                        "add <root>/val/<class>/<image> (the test split, used only for reporting)")
    classes, samples = _list_folder(train_root)
    test_classes, test_samples = _list_folder(test_root)
    if classes != test_classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise DataError(
            f"Expected the same class folders in {train_root} and {test_root}, but got "
            f"{len(classes)} and {len(test_classes)} (only in train: {only_train[:5]}, "
            f"only in test: {only_test[:5]}); add or remove folders so that they match"
        )
    if preprocessing is None:
        channels, size = _shape(train_root, classes, samples, options)
        if options.normalize == "imagenet":
            if channels != 3:
                raise DataError("Expected 3 channels for --normalize imagenet, but got 1; use --channels 3")
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = _statistics(samples, channels, size)
        preprocessing = Preprocessing(input_size=size, channels=channels, mean=mean, std=std)
    elif len(classes) < 2:
        _shape(train_root, classes, samples, options)  # refuses one class
    val_size = default_val_size(len(samples)) if val_size is None else val_size
    fit_idx, val_idx = split_indices(len(samples), val_size, seed)
    augment = options.augment or "crop"
    h, w = preprocessing.input_size
    fill = -torch.tensor(preprocessing.mean) / torch.tensor(preprocessing.std)  # black after normalisation
    transform = (None if augment == "none" else
                 RandomCropFlip(pad=max(1, min(h, w) // 8), flip=augment == "crop-flip", fill=fill))
    return DataSplits(
        name=f"imagefolder:{root}",
        train=_Images([samples[i] for i in fit_idx], preprocessing, transform),
        val=_Images([samples[i] for i in val_idx], preprocessing),
        test=_Images(test_samples, preprocessing),
        num_classes=len(classes),
        in_channels=preprocessing.channels,
        input_size=preprocessing.input_size,
        mean=preprocessing.mean,
        std=preprocessing.std,
        class_names=tuple(classes),
        val_size=val_size, seed=seed, augment=augment,
    )


