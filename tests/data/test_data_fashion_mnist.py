"""Fashion-MNIST: the IDX reader, the look-up order and its error, and the train/val/test splits."""
from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s2dnas.cli.main import main
from s2dnas.data import build_splits, fashion_mnist
from s2dnas.data.fashion_mnist import FILES, find_fashion_mnist, load_fashion_mnist, read_idx
from s2dnas.errors import DataError


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write ``array`` (uint8) in the IDX format: magic 0x0000 08 <ndim>, big-endian dims, data."""
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_fashion_mnist(directory: Path, *, n_train: int = 40, n_test: int = 12, gz: bool = False) -> Path:
    """A complete Fashion-MNIST folder; image ``i`` of train is unique (its index is in pixels 0 and 1)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        write_idx(directory / FILES[f"{split}_images"], images, gz=gz)
        write_idx(directory / FILES[f"{split}_labels"], (np.arange(n) % 10).astype(np.uint8), gz=gz)
    return directory


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $S2DNAS_DATA, an empty Debian folder and HOME, and a download that fails."""
    import torchvision.datasets

    monkeypatch.delenv("S2DNAS_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")

    def no_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", no_network)
    return tmp_path


# --- IDX reader --------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_load_fashion_mnist_reads_raw_and_gz(tmp_path: Path, gz: bool) -> None:
    write_fashion_mnist(tmp_path, n_train=30, n_test=7, gz=gz)
    arrays = load_fashion_mnist(tmp_path)
    assert arrays["train_images"].shape == (30, 28, 28) and arrays["train_images"].dtype == np.uint8
    assert arrays["test_images"].shape == (7, 28, 28)
    assert arrays["train_labels"].dtype == np.int64
    np.testing.assert_array_equal(arrays["train_labels"], np.arange(30) % 10)
    np.testing.assert_array_equal(arrays["train_images"][:, 0, 0], np.arange(30))


def test_read_idx_big_endian_int32(tmp_path: Path) -> None:
    values = np.array([[1, -2], [70000, 3]], dtype=">i4")
    path = tmp_path / "x-idx2-int"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 2) + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), [[1, -2], [70000, 3]])


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_the_file(tmp_path: Path, gz: bool) -> None:
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), gz=gz)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        read_idx(path)


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError, match="header is not IDX"):
        read_idx(path)


def test_images_labels_count_mismatch(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, n_train=20, n_test=5)
    write_idx(tmp_path / FILES["train_labels"], np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        load_fashion_mnist(tmp_path)


# --- look-up order ---------------------------------------------------------------------------

def test_lookup_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given, env, debian = (write_fashion_mnist(isolated / n) for n in ("given", "env", "debian"))
    monkeypatch.setenv("S2DNAS_DATA", str(env))
    assert find_fashion_mnist(given) == given  # --data-dir first
    assert find_fashion_mnist(None) == env  # then $S2DNAS_DATA
    monkeypatch.delenv("S2DNAS_DATA")
    assert find_fashion_mnist(None) == debian  # then Debian's folder
    # An incomplete --data-dir is skipped, not an error.
    (isolated / "partial").mkdir()
    write_idx(isolated / "partial" / FILES["train_images"], np.zeros((1, 28, 28), np.uint8))
    assert find_fashion_mnist(isolated / "partial") == debian


def test_torchvision_layout_is_found(isolated: Path) -> None:
    write_fashion_mnist(isolated / "root" / "FashionMNIST" / "raw", gz=True)
    assert load_fashion_mnist(find_fashion_mnist(isolated / "root"))["train_images"].shape[0] == 40


def test_not_found_lists_places_and_apt_hint(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2DNAS_DATA", str(isolated / "env"))
    with pytest.raises(DataError) as info:
        find_fashion_mnist(isolated / "given")
    message = str(info.value)
    for place in ("given", "env", "debian", "torchvision download"):
        assert place in message
    assert message.index("given") < message.index("env") < message.index("debian")
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message


def test_not_found_through_cli_exit_2(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train-base", "--data-dir", str(isolated / "nothing"), "--out", str(isolated / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("s2dnas: error: Fashion-MNIST not found")
    assert "Traceback" not in err and "apt-get" in err


def test_not_found_subprocess_exit_2(tmp_path: Path) -> None:
    """The real process: exit status 2, one line on stderr, no traceback (download disabled offline)."""
    code = (
        "import sys, torchvision.datasets as d\n"
        "def fail(*a, **k): raise RuntimeError('offline')\n"
        "d.FashionMNIST = fail\n"
        "import s2dnas.data.fashion_mnist as f, pathlib\n"
        f"f.DEBIAN_DIR = pathlib.Path({str(tmp_path / 'debian')!r})\n"
        "from s2dnas.cli.main import main\n"
        f"sys.exit(main(['evaluate-base', '--data-dir', {str(tmp_path / 'none')!r}]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Fashion-MNIST not found" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- splits ----------------------------------------------------------------------------------

def _ids(images: torch.Tensor, mean: float, std: float) -> list[int]:
    """Recover each image's index from its first two (normalised) pixels."""
    raw = (images[:, 0, 0, :2] * std + mean) * 255
    return [int(round(a)) + 256 * int(round(b)) for a, b in raw.tolist()]


def test_splits_seeded_disjoint_and_sized(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, n_train=40, n_test=12)
    a = build_splits("fashion-mnist", data_dir=tmp_path, val_size=10, seed=1, download=False)
    b = build_splits("fashion-mnist", data_dir=tmp_path, val_size=10, seed=1, download=False)
    c = build_splits("fashion-mnist", data_dir=tmp_path, val_size=10, seed=2, download=False)
    assert (len(a.train), len(a.val), len(a.test)) == (30, 10, 12)
    assert (a.num_classes, a.in_channels, a.input_shape) == (10, 1, (1, 28, 28))
    mean, std = a.mean[0], a.std[0]
    val_ids, train_ids = _ids(a.val.images, mean, std), _ids(a.train.images, mean, std)
    assert set(val_ids).isdisjoint(train_ids) and sorted(val_ids + train_ids) == list(range(40))
    assert _ids(b.val.images, mean, std) == val_ids
    assert _ids(c.val.images, mean, std) != val_ids


def test_augmentation_only_on_train(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, n_train=40, n_test=12)
    splits = build_splits("fashion-mnist", data_dir=tmp_path, val_size=10, seed=0, download=False)
    for split in (splits.val, splits.test):
        for i in range(3):
            torch.testing.assert_close(split[i][0], split[i][0], rtol=0, atol=0)
            assert split[i][0].shape == (1, 28, 28)
    torch.manual_seed(0)
    draws = [splits.train[0][0] for _ in range(8)]
    assert all(d.shape == (1, 28, 28) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


@pytest.mark.parametrize("val_size", [40, 100, -1])
def test_val_size_out_of_range(tmp_path: Path, val_size: int) -> None:
    write_fashion_mnist(tmp_path, n_train=40, n_test=12)
    with pytest.raises(DataError, match="val.size"):
        build_splits("fashion-mnist", data_dir=tmp_path, val_size=val_size, download=False)


def test_val_size_zero_and_default(tmp_path: Path) -> None:
    """0: no val split (for commands that read test only); None: 10% of train (at most 5000)."""
    write_fashion_mnist(tmp_path, n_train=40, n_test=12)
    none = build_splits("fashion-mnist", data_dir=tmp_path, val_size=0, download=False)
    assert (len(none.train), len(none.val)) == (40, 0)
    default = build_splits("fashion-mnist", data_dir=tmp_path, download=False)
    assert (len(default.train), len(default.val), default.val_size) == (36, 4, 4)
