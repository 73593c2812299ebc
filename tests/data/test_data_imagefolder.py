"""ImageNet-style folders: splits, transforms, and the errors for missing or mismatched folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from s2dnas.data import build_splits
from s2dnas.data.imagefolder import IMAGENET_MEAN, imagefolder_splits
from s2dnas.errors import DataError


def write_folder(root: Path, split: str, classes: dict[str, int], *, size: int = 40) -> None:
    rng = np.random.default_rng(len(split))
    for name, count in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size, size + 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / f"{i}.png")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_folder(tmp_path, "train", {"cat": 6, "dog": 6})
    write_folder(tmp_path, "val", {"cat": 2, "dog": 2})
    return tmp_path


def test_splits_small_images(root: Path) -> None:
    splits = imagefolder_splits(root, val_size=4, seed=0, image_size=32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 4)
    assert (splits.num_classes, splits.class_names, splits.input_shape) == (2, ("cat", "dog"), (3, 32, 32))
    assert splits.mean == IMAGENET_MEAN
    x, y = splits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and int(y) in (0, 1)
    # Seeded: the same seed holds out the same files, another seed others.
    again = imagefolder_splits(root, val_size=4, seed=0, image_size=32)
    other = imagefolder_splits(root, val_size=4, seed=1, image_size=32)
    assert again.val.indices == splits.val.indices != other.val.indices
    assert set(splits.val.indices).isdisjoint(splits.train.indices)


def test_augmentation_only_on_train(root: Path) -> None:
    splits = imagefolder_splits(root, val_size=4, seed=0, image_size=32)
    for split in (splits.val, splits.test):
        assert torch.equal(split[0][0], split[0][0])
    torch.manual_seed(0)
    draws = [splits.train[0][0] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_large_image_recipe_and_test_dir(tmp_path: Path) -> None:
    write_folder(tmp_path, "train", {"a": 3, "b": 3}, size=90)
    write_folder(tmp_path, "test", {"a": 1, "b": 1}, size=90)
    splits = build_splits(f"imagefolder:{tmp_path}", val_size=2, seed=0)
    assert splits.input_shape == (3, 224, 224) and splits.test[0][0].shape == (3, 224, 224)
    small = imagefolder_splits(tmp_path, val_size=2, seed=0, image_size=72)
    assert small.train[0][0].shape == (3, 72, 72) and small.val[0][0].shape == (3, 72, 72)


def test_missing_test_folder(tmp_path: Path) -> None:
    write_folder(tmp_path, "train", {"cat": 2, "dog": 2})
    with pytest.raises(DataError, match=r"Expected a test folder .*val or .*test"):
        imagefolder_splits(tmp_path, val_size=1, seed=0)


def test_missing_train_folder_or_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Expected a training folder"):
        imagefolder_splits(tmp_path / "nowhere", val_size=1, seed=0)


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    write_folder(tmp_path, "val", {"cat": 1})
    with pytest.raises(DataError, match="Expected class folders of images"):
        imagefolder_splits(tmp_path, val_size=1, seed=0)


def test_class_lists_must_match(root: Path) -> None:
    write_folder(root, "val", {"bird": 1})
    with pytest.raises(DataError, match=r"same class folders.*only in test: \['bird'\]"):
        imagefolder_splits(root, val_size=2, seed=0)


def test_val_size_too_large(root: Path) -> None:
    with pytest.raises(DataError, match="--val-size"):
        build_splits(f"imagefolder:{root}", val_size=5000)


def test_truncated_image_names_the_file(root: Path) -> None:
    splits = imagefolder_splits(root, val_size=4, seed=0, image_size=32)
    path = Path(splits.test.samples[0][0])
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=f"Cannot decode image {path}"):
        splits.test[0]
