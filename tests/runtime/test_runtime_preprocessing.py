"""The runtime's preprocessing on synthetic arrays: dtypes, layouts, channels, sizes (numpy only)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2dnas_runtime import Preprocessing, preprocess

GREY = Preprocessing(input_size=(8, 8), channels=1, mean=[0.5], std=[0.25])
RGB = Preprocessing(input_size=(8, 8), channels=3, mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 2.0])


def norm(x: np.ndarray, spec: Preprocessing) -> np.ndarray:
    c = spec.channels
    return (x - np.array(spec.mean, dtype=np.float32).reshape(1, c, 1, 1)) / np.array(
        spec.std, dtype=np.float32).reshape(1, c, 1, 1)


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255.0), (np.uint16, 65535.0), (np.int32, 2**31 - 1)])
def test_integer_images_are_scaled_by_their_dtype_maximum(dtype, scale: float) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, np.iinfo(dtype).max, size=(5, 8, 8), dtype=dtype, endpoint=True)
    out = preprocess(raw, input_shape=(1, 8, 8), preprocessing=GREY)
    np.testing.assert_allclose(out, norm((raw / scale).astype(np.float32)[:, None], GREY), rtol=0, atol=1e-5)
    white = np.full((2, 8, 8), np.iinfo(dtype).max, dtype=dtype)  # a white 16-bit image is white, not 257x
    np.testing.assert_allclose(preprocess(white, input_shape=(1, 8, 8)), 1.0)


def test_float_images_are_taken_as_zero_to_one() -> None:
    x = np.random.default_rng(1).random((5, 8, 8)).astype(np.float64)
    out = preprocess(x, input_shape=(1, 8, 8), preprocessing=GREY)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, norm(x[:, None].astype(np.float32), GREY), atol=1e-6)


def test_layouts_single_image_and_batch_channels_first_and_last() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, size=(4, 3, 8, 8), dtype=np.uint8)
    expected = norm(rgb.astype(np.float32) / 255, RGB)
    for layout in (rgb, rgb.transpose(0, 2, 3, 1)):
        np.testing.assert_allclose(preprocess(layout, input_shape=(3, 8, 8), preprocessing=RGB), expected, atol=1e-6)
    for single in (rgb[1], rgb[1].transpose(1, 2, 0)):  # CHW, HWC: one image -> a batch of 1
        np.testing.assert_allclose(preprocess(single, input_shape=(3, 8, 8), preprocessing=RGB), expected[1:2],
                                   atol=1e-6)
    grey = rgb[:, 0]
    for layout, count in ((grey[0], 1), (grey, 4), (grey[:, None], 4), (grey[..., None], 4)):
        assert preprocess(layout, input_shape=(1, 8, 8), preprocessing=GREY).shape == (count, 1, 8, 8)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_a_3d_array_for_a_grey_network_is_a_batch_of_grey_images(count: int) -> None:
    grey = np.random.default_rng(6).integers(0, 256, size=(count, 8, 8), dtype=np.uint8)
    out = preprocess(grey, input_shape=(1, 8, 8), preprocessing=GREY)  # 3 images are 3, not one RGB image
    np.testing.assert_allclose(out, norm(grey.astype(np.float32)[:, None] / 255, GREY), atol=1e-6)


def test_a_3d_array_readable_both_ways_is_refused() -> None:
    for shape, channels, spec in (((2, 8, 3), 1, GREY), ((8, 8, 1), 1, GREY), ((3, 8, 3), 3, RGB),
                                  ((1, 8, 4), 3, RGB)):
        with pytest.raises(ValueError, match=rf"shape \({shape[0]}, 8, {shape[2]}\) may be one image or a batch.*"
                                             r"\(B, C, H, W\)"):
            preprocess(np.zeros(shape, dtype=np.uint8), input_shape=(channels, 8, 8), preprocessing=spec)
    rgb = np.random.default_rng(7).integers(0, 256, size=(3, 8, 8), dtype=np.uint8)  # an RGB network: one image
    np.testing.assert_allclose(preprocess(rgb, input_shape=(3, 8, 8), preprocessing=RGB),
                               norm(rgb[None].astype(np.float32) / 255, RGB), atol=1e-6)


def test_grey_to_rgb_repeats_and_rgb_to_grey_uses_luminance() -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, size=(2, 8, 8), dtype=np.uint8)
    out = preprocess(grey, input_shape=(3, 8, 8), preprocessing=RGB)
    g = grey.astype(np.float32)[:, None] / 255
    np.testing.assert_allclose(out, norm(np.repeat(g, 3, axis=1), RGB), atol=1e-6)
    rgb = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    out = preprocess(rgb, input_shape=(1, 8, 8), preprocessing=GREY)
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    np.testing.assert_allclose(out, norm(luma[:, None].astype(np.float32), GREY), atol=1e-5)
    rgba = np.concatenate([rgb, np.zeros((2, 8, 8, 1), dtype=np.uint8)], axis=-1)  # alpha is dropped
    np.testing.assert_allclose(preprocess(rgba, input_shape=(1, 8, 8), preprocessing=GREY), out, atol=1e-6)


@pytest.mark.parametrize("size", [(32, 32), (5, 11), (8, 8), (64, 16)])
def test_other_sizes_are_resized_bilinearly_like_torch(size) -> None:
    raw = np.random.default_rng(4).integers(0, 256, size=(2, 3, *size), dtype=np.uint8)
    out = preprocess(raw, input_shape=(3, 8, 8), preprocessing=RGB)
    ref = F.interpolate(torch.from_numpy(raw.astype(np.float32) / 255), size=(8, 8), mode="bilinear",
                        align_corners=False)
    np.testing.assert_allclose(out, norm(ref.numpy(), RGB), rtol=0, atol=1e-5)


def test_without_a_preprocessing_entry_only_scale_and_layout() -> None:
    raw = np.random.default_rng(5).integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    out = preprocess(raw, input_shape=(1, 8, 8))
    np.testing.assert_allclose(out, raw.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="no preprocessing entry to resize"):
        preprocess(np.zeros((3, 16, 16), dtype=np.uint8), input_shape=(1, 8, 8))


def test_bad_inputs_and_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="booleans"):
        preprocess(np.zeros((2, 8, 8), dtype=bool), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"C in \[1, 3, 4\].*\(2, 2, 8, 8\)"):
        preprocess(np.zeros((2, 2, 8, 8), dtype=np.uint8), input_shape=(3, 8, 8), preprocessing=RGB)
    with pytest.raises(ValueError, match="describes"):
        preprocess(np.zeros((2, 8, 8), dtype=np.uint8), input_shape=(1, 16, 16), preprocessing=GREY)
    with pytest.raises(ValueError, match="std"):
        Preprocessing(input_size=(8, 8), channels=1, mean=[0.5], std=[0.0])
    with pytest.raises(ValueError, match="3 means"):
        Preprocessing(input_size=(8, 8), channels=3, mean=[0.5], std=[1.0])
    assert Preprocessing.from_dict(RGB.to_dict()) == RGB
    with pytest.raises(ValueError, match="lacks"):
        Preprocessing.from_dict({"input_size": [8, 8]})
