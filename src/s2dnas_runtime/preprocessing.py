"""Turning raw images into a network's input, as the model's training did (numpy only).

A :class:`Preprocessing` is the ``"preprocessing"`` entry the data package stores with a model
(``model.json``'s ``data``) and the exporter copies into ``manifest.json``: the input size, the
number of channels, and the per-channel mean and standard deviation. :func:`preprocess` applies
it, in this order:

1. **scale**: integer images are divided by their dtype's maximum (uint8 by 255, uint16 by
   65535); float images are taken to be in ``[0, 1]`` already;
2. **layout**: one image or a batch, channels first or last (see :func:`preprocess`);
3. **channels**: grey -> RGB by repetition, RGB -> grey by ITU-R 601 luminance
   (``0.299 R + 0.587 G + 0.114 B``), an alpha channel dropped;
4. **resize**: bilinear, half-pixel centres (as ``torch.nn.functional.interpolate(...,
   mode="bilinear", align_corners=False)``), to ``input_size``;
5. **normalise**: ``(x - mean) / std`` per channel.

Without a preprocessing entry (exports made before it existed, or a network exported without
one) only steps 1 and 2 run: the images must already have the network's channels and size.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Preprocessing", "preprocess"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


@dataclass(frozen=True)
class Preprocessing:
    """Input size, channels and normalisation of a model's inputs.

    Args:
        input_size: ``(H, W)`` the network takes.
        channels: ``C`` the network takes.
        mean: ``C`` per-channel means (of the scaled ``[0, 1]`` images).
        std: ``C`` per-channel standard deviations, all ``> 0``.

    Raises:
        ValueError: any field is invalid.
    """

    input_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        try:
            size = tuple(int(v) for v in self.input_size)
            channels = int(self.channels)
            mean = tuple(float(v) for v in self.mean)
            std = tuple(float(v) for v in self.std)
        except (TypeError, ValueError):
            raise ValueError(f"Expected preprocessing with input_size [H, W], channels, mean and std as numbers, but "
                             f"got {self!r}") from None
        if len(size) != 2 or min(size) < 1 or channels < 1:
            raise ValueError(f"Expected input_size [H, W] >= 1 and channels >= 1, but got {list(size)} and {channels}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"Expected {channels} means and stds (one per channel), but got {len(mean)} and {len(std)}")
        if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
            raise ValueError(f"Expected finite means and finite stds > 0, but got {list(mean)} and {list(std)}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return (self.channels, *self.input_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, the contract's ``preprocessing`` dict."""
        return {"input_size": list(self.input_size), "channels": self.channels, "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any) -> Preprocessing:
        """Inverse of :meth:`to_dict` (extra keys are ignored).

        Raises:
            ValueError: not an object, or a missing or invalid field.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"Expected a preprocessing object, but got {type(data).__name__}")
        missing = [k for k in ("input_size", "channels", "mean", "std") if k not in data]
        if missing:
            raise ValueError(f"Expected preprocessing with input_size, channels, mean and std, but it lacks {missing}")
        if any(isinstance(v, bool) for k in ("mean", "std", "input_size") for v in (data[k] or ())):
            raise ValueError("Expected numbers in the preprocessing entry, but got booleans")
        return cls(input_size=data["input_size"], channels=data["channels"], mean=data["mean"], std=data["std"])


def _scale(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.bool_:
        raise ValueError("Expected images as integers or floats, but got booleans")
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise ValueError(f"Expected images as integers or floats, but got dtype {x.dtype}")


def _to_nchw(x: np.ndarray, channels: int) -> np.ndarray:
    """One image or a batch, channels first or last -> ``(B, C_in, H, W)`` (see :func:`preprocess`)."""
    first = {1, 3, channels}  # channels-first axis sizes (RGBA comes channels-last, from PIL)
    last = {1, 3, 4, channels}
    if x.ndim == 2:  # one grey image (H, W)
        return x[None, None]
    if x.ndim == 3:
        if channels == 1:  # a grey model: a batch of grey images (B, H, W), unless it may be (H, W, C)
            if x.shape[2] not in last:
                return x[:, None]
        elif x.shape[0] in first and x.shape[2] not in last:  # one image (C, H, W)
            return x[None]
        elif x.shape[2] in last and x.shape[0] not in first:  # one image (H, W, C)
            return x.transpose(2, 0, 1)[None]
        elif x.shape[0] not in first and x.shape[2] not in last:  # a batch of grey images (B, H, W)
            return x[:, None]
        raise ValueError(f"Expected an unambiguous layout, but shape {x.shape} may be one image or a batch for a "
                         f"network of {channels} channel(s); pass an explicit batch (B, C, H, W)")
    if x.ndim == 4:
        if x.shape[1] in first:
            return x
        if x.shape[3] in last:
            return x.transpose(0, 3, 1, 2)
    raise ValueError(f"Expected an image (H, W), (C, H, W), (H, W, C) or a batch (B, H, W), (B, C, H, W), "
                     f"(B, H, W, C) with C in {sorted(last)}, but got shape {x.shape}")


def _convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    have = x.shape[1]
    if have == channels:
        return x
    if have == 4:  # RGBA: drop alpha
        x, have = x[:, :3], 3
        if channels == 3:
            return x
    if have == 1 and channels == 3:
        return np.repeat(x, 3, axis=1)
    if have == 3 and channels == 1:
        return np.tensordot(x, _LUMA, axes=([1], [0]))[:, None].astype(np.float32)
    raise ValueError(f"Expected images with {channels} channel(s) (or grey/RGB to convert), but got {have}")


def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation along one axis, half-pixel centres (align_corners=False)."""
    n = x.shape[axis]
    if n == size:
        return x
    pos = (np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5
    pos = np.clip(pos, 0.0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = size
    w = w.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def preprocess(images: Any, *, input_shape: Sequence[int], preprocessing: Preprocessing | Mapping[str, Any] | None = None
               ) -> np.ndarray:
    """Raw images -> the network's input, ``(B, C, H, W)`` float32 (see the module docstring).

    Layouts: a 2-D array is one grey image; a 4-D array is a batch, channels first or last. A
    3-D array, for a grey network (``C == 1``), is a batch of grey images ``(B, H, W)``; for
    other networks it is one image when either its first axis (1, 3 or ``C`` entries) or its
    last axis (1, 3, 4 or ``C``) holds the channels, a batch of grey images ``(B, H, W)`` when
    neither can. A 3-D array that could be read both ways (for a grey network, a last axis of
    1, 3 or 4; for others, both axes matching) is refused: pass it as ``(B, C, H, W)``. One
    image comes back as a batch of 1.

    Args:
        images: integer or float array (or anything ``np.asarray`` takes).
        input_shape: ``(C, H, W)`` the network expects.
        preprocessing: a :class:`Preprocessing` (or its dict); ``None``: scale and lay out only.

    Returns:
        A C-contiguous float32 array ``(B, C, H, W)``.

    Raises:
        ValueError: the array's dtype or shape cannot be turned into the network's input.
    """
    c, h, w = (int(v) for v in input_shape)
    spec = Preprocessing.from_dict(preprocessing) if isinstance(preprocessing, Mapping) else preprocessing
    if spec is not None and spec.input_shape != (c, h, w):
        raise ValueError(f"Expected preprocessing for inputs {(c, h, w)}, but it describes {spec.input_shape}")
    x = _to_nchw(_scale(np.asarray(images)), c)
    if spec is None:
        if tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"Expected images of shape (B, {c}, {h}, {w}) or (B, {h}, {w}, {c}), but got "
                             f"{np.shape(images)}; this export has no preprocessing entry to resize or convert with")
    else:
        x = _convert_channels(x, c)
        x = _resize_axis(_resize_axis(x, h, axis=2), w, axis=3)
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, c, 1, 1)
        std = np.asarray(spec.std, dtype=np.float32).reshape(1, c, 1, 1)
        x = (x - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)
