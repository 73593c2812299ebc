"""CIFAR-10 and CIFAR-100 from the official "python version" batches, read without running code.

The official files are Python pickles. Plain :func:`pickle.load` (what torchvision's ``CIFAR10``
does) runs whatever a pickle asks for, so a planted ``data_batch_1`` could execute code. Here the
batches go through :class:`RestrictedUnpickler`, which rebuilds only numpy arrays, dtypes and plain
containers (dicts, lists, bytes, numbers) and refuses every other global.

The folders are looked for, in order, under ``--data-dir``, ``$S2DNAS_DATA`` and
``~/.cache/s2dnas/data`` (each root may hold the extracted folder, or be that folder); else, when
allowed, torchvision's downloader fetches and md5-checks the official archive into ``--data-dir``
(or ``~/.cache/s2dnas/data``). The downloader is only used to fetch files: reading always goes
through the restricted unpickler.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from s2dnas.errors import DataError

__all__ = ["CIFAR_LAYOUTS", "CifarArrays", "RestrictedUnpickler", "find_cifar", "load_cifar", "read_batch"]


@dataclass(frozen=True)
class _Layout:
    """Where one CIFAR variant keeps its files and under which keys."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    url: str
    archive: str
    md5: str


#: The official layouts, keyed by number of classes (10 or 100).
CIFAR_LAYOUTS: dict[int, _Layout] = {
    10: _Layout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch", meta_file="batches.meta",
        label_key=b"labels", names_key=b"label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive="cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
    ),
    100: _Layout(
        folder="cifar-100-python",
        train_files=("train",), test_file="test", meta_file="meta",
        label_key=b"fine_labels", names_key=b"fine_label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive="cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}

_IMAGE_BYTES = 3 * 32 * 32


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what pickle protocol 2 emits for ``bytes``: ``(str, 'latin1')``."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise DataError(f"refusing to load _codecs.encode({type(obj).__name__}, {encoding!r})")
    return obj.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The globals a pickled numpy array needs, under both the numpy 1.x and 2.x module names."""
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        # Pickles name the module the array was pickled with: the original CIFAR files say
        # numpy.core.multiarray (Python 2, numpy 1.x); files re-pickled with numpy 2 say numpy._core.
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):  # protocol-5 form of an array
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dtypes and plain Python containers.

    Dicts, lists, tuples, bytes, strings and numbers need no globals; numpy arrays need
    ``_reconstruct``/``_frombuffer``, ``ndarray`` and ``dtype``; Python-3 protocol-2 pickles
    spell ``bytes`` as ``_codecs.encode(str, 'latin1')``. Any other global (``os.system``,
    ``builtins.open``, ``subprocess.Popen``, ...) raises :class:`DataError` before it is resolved.

    >>> import io
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]}, protocol=2)), encoding="bytes").load()
    {b'labels': [1, 2]}
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global, or raise :class:`DataError` for anything else."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(f"refusing to load {module}.{name}") from None


def read_batch(path: str | os.PathLike[str]) -> dict[bytes, Any]:
    """Read one CIFAR python-format file (batch or meta) with :class:`RestrictedUnpickler`.

    Args:
        path: A file such as ``data_batch_1``, ``test_batch``, ``batches.meta``, ``train`` or ``meta``.

    Returns:
        The pickled dict, with ``bytes`` keys (``encoding='bytes'``, like the official format).

    Raises:
        DataError: The file is missing, truncated or corrupt, not a dict, or asks for any global
            other than what numpy arrays need (then nothing it names is run).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            obj = RestrictedUnpickler(fh, encoding="bytes").load()
    except DataError as err:
        raise DataError(
            f"Refusing to load CIFAR file {path}: it asks for {str(err).removeprefix('refusing to load ')}, "
            "but a CIFAR batch holds only numpy arrays, lists and bytes; delete it and download the "
            "official archive again"
        ) from None
    except OSError as err:
        raise DataError(f"Cannot read CIFAR file {path} ({err.strerror or err}); check the path and permissions") from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the file is damaged
        raise DataError(
            f"CIFAR file {path} is truncated or corrupt ({type(err).__name__}: {err}); delete it and "
            "download the official archive again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"Expected a dict in CIFAR file {path}, but got {type(obj).__name__}; replace the file")
    return obj


@dataclass(frozen=True)
class CifarArrays:
    """One CIFAR variant in memory: uint8 images ``(N, 32, 32, 3)``, int64 labels ``(N,)``, class names."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


def _layout(num_classes: int) -> _Layout:
    if num_classes not in CIFAR_LAYOUTS:
        raise DataError(f"Expected CIFAR with 10 or 100 classes, but got {num_classes}; use cifar10 or cifar100")
    return CIFAR_LAYOUTS[num_classes]


def _missing(directory: Path, layout: _Layout) -> list[str]:
    names = (*layout.train_files, layout.test_file, layout.meta_file)
    return [name for name in names if not (directory / name).is_file()]


def _folder_in(root: Path, layout: _Layout) -> tuple[Path | None, str]:
    """Return the complete folder ``root/<folder>`` (or ``root`` itself), else ``None`` and why not."""
    why = f"no {layout.folder} folder"
    for directory in (root / layout.folder, root):
        if not directory.is_dir():
            continue
        missing = _missing(directory, layout)
        if not missing:
            return directory, ""
        if directory.name == layout.folder:  # the folder is there but incomplete: say what is missing
            why = f"{directory.name} is missing {', '.join(missing)}"
            break
    return None, why


def _default_root() -> Path:
    return Path.home() / ".cache" / "s2dnas" / "data"


def find_cifar(*, num_classes: int, data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """Return the folder holding the CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) files.

    Looks, in order, under ``data_dir``, ``$S2DNAS_DATA`` and ``~/.cache/s2dnas/data``; then, if
    ``download``, fetches the official archive (md5-checked by torchvision) into ``data_dir`` or
    ``~/.cache/s2dnas/data`` and extracts it.

    Args:
        num_classes: 10 or 100.
        data_dir: Root to look in first (``--data-dir``).
        download: Allow the download when no root has the files.

    Returns:
        The extracted folder (e.g. ``<root>/cifar-10-batches-py``).

    Raises:
        DataError: Nowhere had the files and the download failed or was not allowed; the
            message lists every place looked and how to get the data.
    """
    layout = _layout(num_classes)
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("--data-dir", Path(data_dir)))
    env = os.environ.get("S2DNAS_DATA")
    if env:
        roots.append(("$S2DNAS_DATA", Path(env)))
    roots.append(("cache", _default_root()))
    looked = []
    for label, root in roots:
        found, why = _folder_in(root, layout)
        if found is not None:
            return found
        looked.append(f"{root} ({label}: {why})")
    target = Path(data_dir) if data_dir is not None else _default_root()
    if download:
        try:
            # Design choice: torchvision's downloader (the same call CIFAR10.download makes) fetches
            # and md5-checks the archive; we never let torchvision unpickle the batches.
            from torchvision.datasets import utils as tv_utils

            target.mkdir(parents=True, exist_ok=True)
            tv_utils.download_and_extract_archive(layout.url, str(target), filename=layout.archive, md5=layout.md5)
            found, why = _folder_in(target, layout)
            if found is not None:
                return found
            looked.append(f"torchvision download into {target} (archive extracted but {why})")
        except Exception as err:  # noqa: BLE001 - any network/IO failure means "not available"
            looked.append(f"torchvision download into {target} (failed: {type(err).__name__})")
    else:
        looked.append("download not allowed")
    raise DataError(
        f"CIFAR-{num_classes} not found; looked in " + "; ".join(looked) + f". Download {layout.url}, "
        f"extract it so that DIR/{layout.folder} exists, and pass --data-dir DIR or set S2DNAS_DATA=DIR"
    )


def _images(batch: dict[bytes, Any], path: Path) -> np.ndarray:
    data = batch.get(b"data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        got = f"{type(data).__name__} {getattr(data, 'dtype', '')}".strip()
        raise DataError(f"Expected a uint8 array under b'data' in CIFAR file {path}, but got {got}; replace the file")
    if data.ndim == 2 and data.shape[1] == _IMAGE_BYTES:
        data = data.reshape(-1, 3, 32, 32)  # each row: 1024 red, 1024 green, 1024 blue, row-major
    if data.ndim != 4 or data.shape[1:] != (3, 32, 32):
        raise DataError(
            f"Expected images of shape (N, 3072) in CIFAR file {path}, but got {tuple(data.shape)}; replace the file"
        )
    return data.transpose(0, 2, 3, 1)  # (N, 32, 32, 3)


def _labels(batch: dict[bytes, Any], key: bytes, n: int, num_classes: int, path: Path) -> np.ndarray:
    raw = batch.get(key)
    if raw is None:
        raise DataError(f"Expected labels under {key!r} in CIFAR file {path}, but found keys "
                        f"{sorted(batch, key=repr)}; replace the file")
    try:
        labels = np.asarray(raw, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"Expected integer labels under {key!r} in CIFAR file {path}; replace the file") from None
    if labels.shape != (n,):
        raise DataError(f"Expected {n} labels (one per image) in CIFAR file {path}, but got {labels.shape}; "
                        "replace the file")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"Expected labels in [0, {num_classes}) in CIFAR file {path}, but got "
                        f"[{labels.min()}, {labels.max()}]; replace the file")
    return labels


def _names(meta: dict[bytes, Any], layout: _Layout, num_classes: int, path: Path) -> tuple[str, ...]:
    raw = meta.get(layout.names_key)
    if not isinstance(raw, (list, tuple)) or len(raw) != num_classes:
        got = len(raw) if isinstance(raw, (list, tuple)) else type(raw).__name__
        raise DataError(f"Expected {num_classes} class names under {layout.names_key!r} in {path}, "
                        f"but got {got}; replace the file")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw)


def load_cifar(directory: str | os.PathLike[str], *, num_classes: int) -> CifarArrays:
    """Read every batch of an extracted CIFAR folder with the restricted unpickler.

    Args:
        directory: The folder returned by :func:`find_cifar`.
        num_classes: 10 or 100 (CIFAR-100 uses the 100 fine labels).

    Returns:
        Train (all training batches) and test arrays and the class names.

    Raises:
        DataError: A file is missing, truncated, unsafe, or its arrays or labels are malformed.
    """
    layout = _layout(num_classes)
    directory = Path(directory)
    names = _names(read_batch(directory / layout.meta_file), layout, num_classes, directory / layout.meta_file)

    def read_split(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for name in files:
            path = directory / name
            batch = read_batch(path)
            x = _images(batch, path)
            images.append(x)
            labels.append(_labels(batch, layout.label_key, len(x), num_classes, path))
        return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)

    train_x, train_y = read_split(layout.train_files)
    test_x, test_y = read_split((layout.test_file,))
    return CifarArrays(train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y,
                       class_names=names)
