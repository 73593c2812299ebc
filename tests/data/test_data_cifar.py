"""CIFAR-10/100: our reader of the python-format batches (restricted unpickler), look-up, errors."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from s2dnas.data import build_splits
from s2dnas.data.cifar import find_cifar, load_cifar, read_batch
from s2dnas.errors import DataError


class Planted:
    """Unpickling this would create the file ``path`` (via ``builtins.open``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _batch(n: int, *, label_key: bytes, num_classes: int, offset: int) -> dict[bytes, object]:
    rng = np.random.default_rng(offset)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(offset, offset + n) % 256  # red channel, pixel (0, 0): the image's id
    return {b"batch_label": b"training batch", label_key: [(offset + i) % num_classes for i in range(n)],
            b"data": data, b"filenames": [f"img_{offset + i}.png".encode() for i in range(n)]}


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # the originals are protocol 2


def write_cifar10(root: Path, *, per_batch: int = 4, n_test: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _batch(per_batch, label_key=b"labels", num_classes=10,
                                                  offset=(i - 1) * per_batch))
    _dump(folder / "test_batch", _batch(n_test, label_key=b"labels", num_classes=10, offset=100))
    _dump(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)],
                                    b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return folder


def write_cifar100(root: Path, *, n_train: int = 12, n_test: int = 5) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 50)):
        batch = _batch(n, label_key=b"fine_labels", num_classes=100, offset=offset)
        batch[b"coarse_labels"] = [0] * n
        _dump(folder / name, batch)
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return folder


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $S2DNAS_DATA, HOME in tmp_path, and a download that fails."""
    from torchvision.datasets import utils as tv_utils

    monkeypatch.delenv("S2DNAS_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    return tmp_path


def test_cifar10_reads_batches(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    arrays = load_cifar(folder, num_classes=10)
    assert arrays.train_images.shape == (20, 32, 32, 3) and arrays.train_images.dtype == np.uint8
    assert arrays.test_images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(arrays.train_labels, np.arange(20) % 10)
    # Row layout: 1024 red values, then green, then blue; pixel (0, 0) red holds the id.
    np.testing.assert_array_equal(arrays.train_images[:, 0, 0, 0], np.arange(20))
    raw = read_batch(folder / "data_batch_1")[b"data"]
    np.testing.assert_array_equal(arrays.train_images[0, :, :, 1].ravel(), raw[0, 1024:2048])
    assert arrays.class_names == tuple(f"class{i}" for i in range(10))


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    arrays = load_cifar(write_cifar100(tmp_path), num_classes=100)
    assert arrays.train_images.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(arrays.train_labels, np.arange(12))
    assert len(arrays.class_names) == 100 and arrays.class_names[3] == "fine3"


def test_build_splits_cifar(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    s10 = build_splits("cifar10", data_dir=tmp_path, val_size=5, seed=0, download=False)
    assert (len(s10.train), len(s10.val), len(s10.test)) == (15, 5, 6)
    assert (s10.num_classes, s10.input_shape) == (10, (3, 32, 32))
    x, y = s10.val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    s100 = build_splits("cifar100", data_dir=tmp_path, val_size=2, seed=0, download=False)
    assert s100.num_classes == 100 and len(s100.test) == 5


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``bytes`` and ``str`` as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as cPickle did."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        op = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(op + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def test_python2_format_is_accepted(tmp_path: Path) -> None:
    """The original files: Python 2 cPickle, protocol 2, numpy.core.multiarray._reconstruct."""
    batch = _batch(3, label_key=b"labels", num_classes=10, offset=0)
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(batch)
    data = buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert "BINSTRING" in ops and "SHORT_BINSTRING" in ops and b"numpy.core.multiarray" in data
    (tmp_path / "data_batch_1").write_bytes(data)
    loaded = read_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"labels"] == batch[b"labels"] and loaded[b"batch_label"] == b"training batch"


def test_protocol_5_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.arange(6, dtype=np.uint8)}, protocol=5))
    np.testing.assert_array_equal(read_batch(path)[b"data"], np.arange(6))


def test_malicious_batch_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path / "root")
    victim = tmp_path / "pwned.txt"
    _dump(folder / "data_batch_3", {b"data": Planted(victim), b"labels": []})
    with pytest.raises(DataError, match=r"Refusing to load CIFAR file .*data_batch_3: it asks for \w+\.open"):
        build_splits("cifar10", data_dir=tmp_path / "root", val_size=2, download=False)
    assert not victim.exists()
    # The threat is real: plain pickle would have created the file.
    pickle.loads((folder / "data_batch_3").read_bytes(), encoding="bytes")[b"data"].close()
    assert victim.exists()


@pytest.mark.parametrize("global_name", [b"os\nsystem", b"subprocess\nPopen", b"numpy\nload"])
def test_other_globals_are_refused(tmp_path: Path, global_name: bytes) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + global_name + b"\nX\x04\x00\x00\x00true\x85R.")
    with pytest.raises(DataError, match="Refusing to load"):
        read_batch(path)


def test_truncated_batch_names_the_file(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"test_batch is truncated or corrupt"):
        load_cifar(folder, num_classes=10)


def test_malformed_contents(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    _dump(folder / "data_batch_2", {b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4})
    with pytest.raises(DataError, match=r"shape \(N, 3072\).*data_batch_2"):
        load_cifar(folder, num_classes=10)
    _dump(folder / "data_batch_2", {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]})
    with pytest.raises(DataError, match=r"labels in \[0, 10\)"):
        load_cifar(folder, num_classes=10)
    _dump(folder / "data_batch_2", [1, 2])
    with pytest.raises(DataError, match="Expected a dict"):
        load_cifar(folder, num_classes=10)


def test_lookup_order(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given, env = write_cifar10(offline / "given"), write_cifar10(offline / "env")
    cache = write_cifar10(offline / "home" / ".cache" / "s2dnas" / "data")
    monkeypatch.setenv("S2DNAS_DATA", str(offline / "env"))
    assert find_cifar(num_classes=10, data_dir=offline / "given") == given
    assert find_cifar(num_classes=10, data_dir=given) == given  # the extracted folder itself
    assert find_cifar(num_classes=10) == env
    monkeypatch.delenv("S2DNAS_DATA")
    assert find_cifar(num_classes=10) == cache


def test_not_found_lists_places_and_how_to_get_it(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2DNAS_DATA", str(offline / "env"))
    folder = write_cifar10(offline / "given")
    os.remove(folder / "data_batch_4")
    with pytest.raises(DataError) as info:
        find_cifar(num_classes=10, data_dir=offline / "given")
    message = str(info.value)
    assert "missing data_batch_4" in message and "env" in message and ".cache" in message
    assert "torchvision download" in message and "cifar-10-python.tar.gz" in message and "\n" not in message
    with pytest.raises(DataError, match="download not allowed"):
        find_cifar(num_classes=100, download=False)


def test_missing_through_cli_exit_2(offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from s2dnas.cli.main import main

    code = main(["train-base", "--dataset", "cifar10", "--data-dir", str(offline / "none"),
                 "--out", str(offline / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "CIFAR-10 not found" in err and "Traceback" not in err
