"""Small synthetic image folders written by the tests (grey 8/16-bit, RGB; 32x32 or 64x64)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Grey pattern of class ``k`` in [0, 1] (stripes of period 2+k, horizontal for even k), plus noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = 2 + k // 2
    axis = yy if k % 2 == 0 else xx
    base = ((axis // period) % 2).astype(np.float64) * 0.7 + 0.15
    return np.clip(base + rng.normal(0, 0.05, size=(size, size)), 0, 1)


def save(path: Path, grey: np.ndarray, kind: str) -> None:
    """Write ``grey`` (values in [0, 1]) as ``kind``: ``L``, ``I;16``, ``RGB``, ``RGBA``, ``P``, ``1``, ``LA``, ``F``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "I;16":
        Image.fromarray((grey * 65535).round().astype(np.uint16)).save(path)
    elif kind == "F":
        Image.fromarray(grey.astype(np.float32), mode="F").save(path)
    else:
        img = Image.fromarray((grey * 255).round().astype(np.uint8))
        if kind in ("RGB", "RGBA", "P", "1", "LA", "CMYK"):
            img = img.convert(kind)
        img.save(path)


def write_folder(root: Path, *, classes: int = 3, per_class: int = 10, test_per_class: int = 3, size: int = 32,
                 kind: str = "L", seed: int = 0, ext: str = "png") -> Path:
    """``root/train/c<k>/*`` and ``root/val/c<k>/*`` of class patterns (see :func:`pattern`)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", test_per_class)):
        for k in range(classes):
            for i in range(n):
                save(root / split / f"c{k}" / f"{i}.{ext}", pattern(k, size, rng), kind)
    return root
