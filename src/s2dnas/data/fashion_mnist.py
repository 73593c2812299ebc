"""Fashion-MNIST from IDX files: located in order --data-dir, $S2DNAS_DATA, Debian, download."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from s2dnas.errors import DataError

__all__ = ["DEBIAN_DIR", "FILES", "find_fashion_mnist", "read_idx", "load_fashion_mnist"]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _file_in(directory: Path, stem: str) -> Path | None:
    for sub in ("", "FashionMNIST/raw", "raw"):
        for suffix in ("", ".gz"):
            path = directory / sub / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def _complete(directory: Path) -> bool:
    return all(_file_in(directory, stem) is not None for stem in FILES.values())


def _candidates(data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    out = []
    if data_dir is not None:
        out.append(("--data-dir", Path(data_dir)))
    env = os.environ.get("S2DNAS_DATA")
    if env:
        out.append(("$S2DNAS_DATA", Path(env)))
    out.append(("Debian package dataset-fashion-mnist", DEBIAN_DIR))
    return out


def find_fashion_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return the folder holding the four Fashion-MNIST IDX files.

    Looks, in order, in ``data_dir``, ``$S2DNAS_DATA`` and Debian's folder; then tries
    torchvision's download into ``~/.cache/s2dnas/data`` (or ``data_dir`` when given).

    Raises:
        DataError: nowhere had the files and the download failed; the message lists every place.
    """
    looked = []
    for label, directory in _candidates(data_dir):
        if _complete(directory):
            return directory
        looked.append(f"{directory} ({label})")
    target = Path(data_dir) if data_dir is not None else Path.home() / ".cache" / "s2dnas" / "data"
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(target), train=True, download=True)
            FashionMNIST(str(target), train=False, download=True)
            if _complete(target):
                return target
        except Exception as err:  # noqa: BLE001 - any network/IO failure means "not available"
            looked.append(f"torchvision download into {target} (failed: {type(err).__name__})")
    raise DataError(
        "Fashion-MNIST not found; looked in " + "; ".join(looked) + ". Install it with "
        "'apt-get install dataset-fashion-mnist', or put the four IDX files (train-images-idx3-ubyte[.gz] ...) "
        "in a folder and pass --data-dir DIR or set S2DNAS_DATA=DIR"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array, checking its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"Cannot read IDX file {path}: {err}; re-download or reinstall the dataset") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"Expected an IDX file at {path}, but its header is not IDX; replace the file")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated (header cut short); replace the file")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"IDX file {path} is truncated or corrupt: expected {expected} data bytes for shape "
            f"{tuple(shape)}, but found {len(data) - header}; replace the file"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(directory: Path) -> dict[str, np.ndarray]:
    """Load the four arrays (uint8 images ``(N, 28, 28)``, int64 labels) from ``directory``."""
    arrays = {}
    for key, stem in FILES.items():
        path = _file_in(directory, stem)
        if path is None:
            raise DataError(f"Missing Fashion-MNIST file {stem}[.gz] in {directory}")
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(f"Fashion-MNIST {split} split has {n_img} images but {n_lab} labels in {directory}")
    arrays["train_labels"] = arrays["train_labels"].astype(np.int64)
    arrays["test_labels"] = arrays["test_labels"].astype(np.int64)
    return arrays
