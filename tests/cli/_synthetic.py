"""Synthetic Fashion-MNIST-shaped IDX files shared by the CLI tests."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, magic: int, *, compress: bool = False) -> None:
    """One IDX file: big-endian magic, the dimensions, then uint8 data (gzipped with ``compress``)."""
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _write_split(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *,
                 compress: bool = False) -> None:
    suffix = ".gz" if compress else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x00000803, compress=compress)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x00000801, compress=compress)


def write_band_dataset(directory: Path, *, n_train: int, n_test: int, compress: bool = False) -> Path:
    """10 classes: class k is a bright band at height 2k, plus noise (``.gz`` files with ``compress``)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 + 2 * k: 4 + 2 * k] += 180
        _write_split(directory, prefix, images, labels, compress=compress)
    return directory


def write_pattern_dataset(directory: Path, *, n_train: int, n_test: int, seed: int = 0) -> Path:
    """4 easy classes: horizontal stripes, vertical stripes, a checkerboard, flat grey (plus noise);
    they survive the random shifts and flips of augmentation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    patterns = [(yy // 2) % 2 * 200, (xx // 2) % 2 * 200, (yy // 2 + xx // 2) % 2 * 200, np.full((28, 28), 100)]
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % len(patterns)
        rng.shuffle(labels)
        images = np.clip(rng.integers(0, 50, size=(n, 28, 28)) + np.stack([patterns[k] for k in labels]), 0, 255)
        _write_split(directory, prefix, images, labels)
    return directory
