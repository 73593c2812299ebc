"""``s2dnas bench`` finds the run's base weights (a relative ``model.weights``) from any directory."""
from __future__ import annotations

import pytest
import torch

from s2dnas.cli.bench import run_base_weights
from s2dnas.cli.main import main
from s2dnas.dynamic import DynamicNet
from s2dnas.dynamic.io import build_model_spec
from s2dnas.space import Space
from s2dnas.zoo import create_model


@pytest.fixture
def run_dir(tmp_path):
    """``launch/runs/r``: a run started in ``launch`` with ``--out runs/r`` and a relative model.weights."""
    run = tmp_path / "launch" / "runs" / "r"
    torch.manual_seed(0)
    base = create_model("resnet20", num_classes=10, in_channels=1).eval()
    space = Space(base, input_shape=(1, 8, 8), num_stages=2, model_name="resnet20")
    spec = build_model_spec(space, num_classes=10, model="resnet20", mean=[0.5], std=[0.5])
    DynamicNet(space.build(space.default_architecture()).eval(), [0.9], model_spec=spec).save(run / "model")
    (run / "config.yaml").write_text("out: runs/r\nmodel: {name: resnet20, weights: base/model.safetensors}\n")
    return run


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Another working directory, holding a decoy at the same relative path."""
    cwd = tmp_path / "elsewhere"
    (cwd / "base").mkdir(parents=True)
    (cwd / "base" / "model.safetensors").write_bytes(b"decoy")
    monkeypatch.chdir(cwd)
    return cwd


def test_relative_weights_are_found_from_the_run_start_directory(run_dir, elsewhere):
    real = run_dir.parents[1] / "base" / "model.safetensors"
    real.parent.mkdir()
    real.write_bytes(b"weights")
    assert run_base_weights(run_dir / "model") == str(real)  # not the decoy in the current directory


def test_bench_reports_gone_weights_in_one_line(run_dir, elsewhere, capsys):
    code = main(["bench", str(run_dir / "model"), "--num-images", "2", "--batch-sizes", "1", "--repeats", "1",
                 "--no-onnx"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    gone = run_dir.parents[1] / "base" / "model.safetensors"
    assert f"model.weights: base/model.safetensors) at {gone}" in err and "--base-weights" in err


def test_a_run_whose_start_cannot_be_told_falls_back_to_the_current_directory(run_dir, elsewhere):
    moved = run_dir.parent / "moved"  # out no longer ends the run directory's path
    run_dir.rename(moved)
    assert run_base_weights(moved / "model") == str(elsewhere / "base" / "model.safetensors")


@pytest.mark.parametrize("value", ["0", "a", "1,-2", ","])
def test_bench_refuses_bad_thread_options_in_one_line(run_dir, value, capsys):
    code = main(["bench", str(run_dir / "model"), "--thread-options", value, "--no-onnx"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "Expected --thread-options like 1,2" in err and repr(value) in err
