"""What a model expects of its input, stored with the model so every later step reproduces it.

Two values: :class:`Preprocessing` (input size, channels, normalisation: what evaluate, bench,
export and the runtime must apply to an image; defined once, in the torch-free runtime, and
re-exported here; :func:`read_preprocessing` reads a stored one with the data package's error) and :class:`ImageOptions` (what the user chose for an
image folder before those values were known). Every default and list of choices of the data
package's preprocessing is here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from s2dnas.errors import DataError
from s2dnas_runtime.preprocessing import Preprocessing

__all__ = ["AUGMENTATIONS", "NORMALIZATIONS", "IMAGENET_MEAN", "IMAGENET_STD", "VAL_FRACTION", "VAL_SIZE_CAP",
           "ImageOptions", "Preprocessing", "default_val_size", "parse_input_size", "read_preprocessing"]

#: Train-time augmentation: ``none``; ``crop`` (random crop with padding, 1/8 of the side);
#: ``crop-flip`` (the same plus a horizontal flip: wrong for digits and text, so never a default
#: for image folders).
AUGMENTATIONS = ("none", "crop", "crop-flip")
#: Normalisation: ``train`` (per-channel mean/std of the training images), ``imagenet`` (the usual
#: ImageNet statistics; three channels only).
NORMALIZATIONS = ("train", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Default validation split: this fraction of the training set, at most :data:`VAL_SIZE_CAP` images
#: (5000 on Fashion-MNIST and CIFAR, as before; 10% on a small folder).
VAL_FRACTION = 0.1
VAL_SIZE_CAP = 5000


def default_val_size(num_train: int) -> int:
    """Images held out for validation when the user gives no ``val_size``: 10%, at most 5000, at least 1."""
    return max(1, min(VAL_SIZE_CAP, int(math.floor(VAL_FRACTION * num_train))))


def parse_input_size(text: str | int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"32"``, ``"32,48"``, ``"32x48"``, ``32`` or ``(32, 48)`` -> ``(H, W)``.

    Raises:
        DataError: not one or two positive integers.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        parts: list[Any] = [text]
    elif isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise DataError(f"Expected an input size H or H,W of positive integers (e.g. 32 or 32,48), but got {text!r}")
    return (values[0], values[-1])


@dataclass(frozen=True)
class ImageOptions:
    """What the user chose for an image folder; ``None`` means the data's own default.

    Attributes:
        input_size: ``(H, W)`` the images are resized to; default: their native size when every
            training image has the same size (else the folder is refused and asks for one).
        channels: 1 or 3; default: 1 when every training image is grey, else 3.
        augment: one of :data:`AUGMENTATIONS`; default ``crop`` for folders (the built-in data sets
            keep ``crop-flip``).
        normalize: one of :data:`NORMALIZATIONS`; default ``train``.
    """

    input_size: tuple[int, int] | None = None
    channels: int | None = None
    augment: str | None = None
    normalize: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.input_size is not None:
            object.__setattr__(self, "input_size", parse_input_size(self.input_size))
        if self.channels not in (None, 1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels!r}")
        if self.augment not in (None, *AUGMENTATIONS):
            problems.append(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.normalize not in (None, *NORMALIZATIONS):
            problems.append(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.normalize == "imagenet" and self.channels == 1:
            problems.append("normalize=imagenet needs 3 channels; use --channels 3 or --normalize train")
        if problems:
            raise DataError("Invalid data options: " + "; ".join(problems))


def read_preprocessing(data: Any) -> Preprocessing:
    """A model's stored ``preprocessing`` entry (see :meth:`Preprocessing.from_dict`) as a value.

    Raises:
        DataError: not such an entry (the runtime's ``ValueError``, as the data package's error).
    """
    try:
        return Preprocessing.from_dict(data)
    except ValueError as err:
        raise DataError(f"{err}; re-save the model with this version of s2dnas") from None
