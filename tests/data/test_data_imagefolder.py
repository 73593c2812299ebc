"""Image folders: decoding of every PIL mode, native size, channels, statistics, augmentation, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from s2dnas.data import ImageOptions, Preprocessing, build_splits, dataset_shape
from s2dnas.data.imagefolder import IMAGENET_MEAN, decode_image, imagefolder_splits
from s2dnas.errors import DataError

from tests.data._folders import save, write_folder


@pytest.mark.parametrize("kind", ["L", "I;16", "F", "1", "LA", "RGB", "RGBA", "P", "CMYK"])
def test_every_mode_decodes_to_the_same_grey_levels(tmp_path: Path, kind: str) -> None:
    grey = np.linspace(0, 1, 64 * 32).reshape(32, 64)
    if kind == "1":
        grey = (grey > 0.5).astype(np.float64)
    ext = "jpg" if kind == "CMYK" else "tif" if kind == "F" else "png"
    save(tmp_path / f"x.{ext}", grey, kind)
    x = decode_image(tmp_path / f"x.{ext}")
    assert x.shape[1:] == (32, 64) and x.dtype == torch.float32
    # 16-bit grey was read as pure white before (16-bit values clipped to 255)
    tol = {"I;16": 1e-4, "F": 1e-6, "CMYK": 0.03, "P": 0.01}.get(kind, 0.5 / 255 + 1e-6)
    for c in range(x.shape[0]):
        assert torch.allclose(x[c], torch.from_numpy(grey).float(), atol=tol), (kind, c)


def test_16bit_grey_is_scaled_by_65535(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(tmp_path / "a.png")
    assert torch.allclose(decode_image(tmp_path / "a.png"), torch.full((1, 4, 4), 1000 / 65535))


def test_float_image_out_of_range_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32), mode="F").save(tmp_path / "a.tif")
    with pytest.raises(DataError, match=r"Cannot decode image .*a.tif \(float image with values in \[200, 200\]"):
        decode_image(tmp_path / "a.tif")


@pytest.mark.parametrize(("size", "kind", "channels"), [(32, "L", 1), (64, "I;16", 1), (32, "RGB", 3)])
def test_native_size_and_channels_by_default(tmp_path: Path, size: int, kind: str, channels: int) -> None:
    write_folder(tmp_path, size=size, kind=kind)
    splits = build_splits(f"imagefolder:{tmp_path}", val_size=3)
    assert splits.input_shape == (channels, size, size)
    assert dataset_shape(f"imagefolder:{tmp_path}") == ((channels, size, size), 3)
    x, _ = splits.val[0]
    assert x.shape == (channels, size, size)
    # normalisation from the training images: the train folder has mean ~0 and std ~1 per channel
    every = torch.stack([build_splits(f"imagefolder:{tmp_path}", val_size=0, options=ImageOptions(augment="none"),
                                      ).train[i][0] for i in range(30)])
    assert every.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (every.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2


def test_grey_16bit_is_not_white(tmp_path: Path) -> None:
    write_folder(tmp_path, kind="I;16")
    splits = build_splits(f"imagefolder:{tmp_path}", val_size=3)
    assert 0.3 < splits.mean[0] < 0.7 and splits.std[0] > 0.2  # pure white had std 0


def test_options_and_stored_preprocessing(tmp_path: Path) -> None:
    write_folder(tmp_path, size=32, kind="L")
    opts = ImageOptions(input_size=(24, 40), channels=3, normalize="imagenet", augment="none")
    splits = build_splits(f"imagefolder:{tmp_path}", val_size=3, options=opts)
    assert splits.input_shape == (3, 24, 40) and splits.mean == IMAGENET_MEAN and splits.augment == "none"
    assert torch.equal(splits.train[0][0], splits.train[0][0])  # no augmentation
    # a model's stored preprocessing is reproduced as it is
    prep = Preprocessing(input_size=(16, 16), channels=1, mean=(0.25,), std=(0.5,))
    again = build_splits(f"imagefolder:{tmp_path}", val_size=0, preprocessing=prep)
    raw = decode_image(again.test.samples[0][0])
    expected = (torch.nn.functional.interpolate(raw[None], size=(16, 16), mode="bilinear",
                                                align_corners=False)[0] - 0.25) / 0.5
    assert torch.allclose(again.test[0][0], expected)
    assert len(again.val) == 0 and len(again.train) == 30


def test_the_stored_preprocessing_is_the_runtime_value_and_a_bad_one_is_a_data_error() -> None:
    import s2dnas_runtime
    from s2dnas.data.splits import check_data_spec

    assert Preprocessing is s2dnas_runtime.Preprocessing  # one class: what data stores, export copies
    spec = {"dataset": "fashion_mnist", "val_size": 0, "data_seed": 0,
            "preprocessing": {"input_size": [8, 8], "channels": 1, "mean": [0.5], "std": [0.0]}}
    with pytest.raises(DataError, match=r"stds > 0.*re-save the model"):
        check_data_spec(spec, source="model.json")
    with pytest.raises(DataError, match="lacks"):
        check_data_spec({**spec, "preprocessing": {"input_size": [8, 8]}}, source="model.json")


def test_default_augmentation_is_crop_without_flip(tmp_path: Path) -> None:
    write_folder(tmp_path, size=32)
    splits = build_splits(f"imagefolder:{tmp_path}", val_size=3)
    assert splits.augment == "crop" and splits.train.transform.pad == 4 and not splits.train.transform.flip
    flip = build_splits(f"imagefolder:{tmp_path}", val_size=3, options=ImageOptions(augment="crop-flip"))
    assert flip.train.transform.flip


def test_mixed_sizes_ask_for_input_size(tmp_path: Path) -> None:
    write_folder(tmp_path, size=32)
    save(tmp_path / "train" / "c0" / "big.png", np.zeros((64, 64)), "L")
    with pytest.raises(DataError, match=r"share one size, but found 2 sizes \(32x32 \(30\), 64x64 \(1\).*--input-size"):
        build_splits(f"imagefolder:{tmp_path}")
    ok = build_splits(f"imagefolder:{tmp_path}", options=ImageOptions(input_size=(32, 32)))
    assert ok.train[0][0].shape == (1, 32, 32)


def test_one_class_is_refused(tmp_path: Path) -> None:
    write_folder(tmp_path, classes=1)
    with pytest.raises(DataError, match="at least 2 class folders .* found 1 \\(c0\\)"):
        build_splits(f"imagefolder:{tmp_path}")


def test_default_val_size_is_a_tenth(tmp_path: Path) -> None:
    write_folder(tmp_path, classes=3, per_class=17)
    splits = build_splits(f"imagefolder:{tmp_path}")
    assert (len(splits.train), len(splits.val), splits.val_size) == (46, 5, 5)
    spec = splits.data_spec()
    assert spec["val_size"] == 5 and spec["data_seed"] == 0 and spec["preprocessing"]["input_size"] == [32, 32]


def test_relative_and_absolute_roots_give_one_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    assert build_splits("imagefolder:./d", val_size=3).name == build_splits(f"imagefolder:{tmp_path}/d/", val_size=3).name


def test_splits_are_seeded_and_disjoint(tmp_path: Path) -> None:
    write_folder(tmp_path)
    a, b = (imagefolder_splits(tmp_path, val_size=4, seed=s) for s in (0, 1))
    again = imagefolder_splits(tmp_path, val_size=4, seed=0)
    assert again.val.samples == a.val.samples != b.val.samples
    assert not set(a.val.samples) & set(a.train.samples)


def test_missing_test_folder(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / "val").rename(tmp_path / "other")
    with pytest.raises(DataError, match=r"Expected a test folder .*val or .*test"):
        imagefolder_splits(tmp_path, val_size=1, seed=0)


def test_missing_train_folder_or_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Expected a training folder"):
        imagefolder_splits(tmp_path / "nowhere", val_size=1, seed=0)


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    save(tmp_path / "val" / "cat" / "0.png", np.zeros((4, 4)), "L")
    with pytest.raises(DataError, match="Expected class folders of images"):
        imagefolder_splits(tmp_path, val_size=1, seed=0)


def test_class_lists_must_match(tmp_path: Path) -> None:
    write_folder(tmp_path)
    save(tmp_path / "val" / "bird" / "0.png", np.zeros((32, 32)), "L")
    with pytest.raises(DataError, match=r"same class folders.*only in test: \['bird'\]"):
        imagefolder_splits(tmp_path, val_size=2, seed=0)


def test_val_size_too_large(tmp_path: Path) -> None:
    write_folder(tmp_path)
    with pytest.raises(DataError, match="--val-size between 1 and 29"):
        build_splits(f"imagefolder:{tmp_path}", val_size=5000)


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    write_folder(tmp_path)
    splits = imagefolder_splits(tmp_path, val_size=4, seed=0)
    path = Path(splits.test.samples[0][0])
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=f"Cannot decode image {path}"):
        splits.test[0]


def test_a_model_of_another_shape_is_refused_in_one_line(tmp_path: Path) -> None:
    """bench fed a 3-channel model 1x28x28 images and crashed inside torch; now the data is checked first."""
    from s2dnas.data import check_splits_fit

    write_folder(tmp_path, size=32, kind="L")
    splits = build_splits(f"imagefolder:{tmp_path}", val_size=0)
    check_splits_fit({"num_classes": 3, "in_channels": 1, "input_shape": [1, 32, 32]}, splits)
    with pytest.raises(DataError, match=r"model has 3 input channels, but the dataset has 1; inputs of shape "
                                        r"\(3, 32, 32\), but the dataset's are \(1, 32, 32\)"):
        check_splits_fit({"num_classes": 3, "in_channels": 3, "input_shape": [3, 32, 32]}, splits)
