"""``s2dnas evaluate`` on a tiny saved model and synthetic Fashion-MNIST IDX files."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from s2dnas.cli.main import main
from s2dnas.dynamic import DynamicNet, StageLogits, build_model_spec, calibrate
from tests._models import make_labels, make_space, sharpen

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_idx(directory: Path, *, n_train: int, n_test: int, size: int = 28, seed: int = 0) -> Path:
    """The four Fashion-MNIST IDX files (images: magic 0x00000803 + dims; labels: 0x00000801 + N)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x00000803, n, size, size) + images.tobytes())
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x00000801, n) + labels.tobytes())
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    space = make_space(num_stages=3, input_shape=(1, 28, 28))
    msnet = sharpen(space.build(space.default_architecture()))
    x = torch.randn(48, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sl = StageLogits(logits=torch.stack(msnet(x)), labels=make_labels(msnet, x))
    cal = calibrate(sl, stage_macs=msnet.analytic_macs, macs_budget=float(sum(msnet.analytic_macs)) * 0.6, grid=8)
    net = DynamicNet(msnet, cal.policy, stage_macs=msnet.analytic_macs)
    directory = tmp_path_factory.mktemp("cli") / "model"
    net.save(directory, model_spec=build_model_spec(space, num_classes=10, base_accuracy=0.5))
    return directory


def test_evaluate_smoke(model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("S2DNAS_DATA", str(write_idx(tmp_path / "fmnist", n_train=80, n_test=40)))
    out_dir = tmp_path / "report"
    code = main(["evaluate", str(model_dir), "--dataset", "fashion-mnist", "--val-size", "20", "--limit", "32",
                 "--batch-size", "16", "--device", "cpu", "--out-dir", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "accuracy:" in captured.out and "exits: stage 1" in captured.out and "% of the base model" in captured.out
    for name in ("accuracy_vs_macs.png", "exit_histogram.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG_MAGIC
    report = json.loads((out_dir / "evaluation_test.json").read_text())
    assert report["num_examples"] == 32 and report["split"] == "test"
    assert sum(report["exit_counts"]) == 32 and len(report["curve"]) >= 1
    assert report["total_macs"] == round(report["expected_macs"] * 32)
    # --split val, plots into DIR by default
    code = main(["evaluate", str(model_dir), "--val-size", "20", "--split", "val", "--device", "cpu"])
    assert code == 0
    assert (model_dir / "evaluation_val.json").is_file() and (model_dir / "exit_histogram.png").is_file()


def test_evaluate_missing_dir_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    code = main(["evaluate", str(tmp_path / "missing"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("s2dnas: error:") and "does not exist" in err


def test_evaluate_dataset_must_match_the_model(model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("S2DNAS_DATA", str(write_idx(tmp_path / "small", n_train=40, n_test=20, size=16)))
    code = main(["evaluate", str(model_dir), "--val-size", "10", "--device", "cpu", "--out-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "inputs of shape (1, 28, 28)" in err and err.count("\n") == 1


def test_evaluate_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--help"])
    assert info.value.code == 0 and "--split" in capsys.readouterr().out
