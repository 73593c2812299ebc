"""``s2dnas space`` and ``s2dnas train`` through the CLI, on synthetic Fashion-MNIST IDX files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from s2dnas.cli.main import main
from s2dnas.config import load_config
from s2dnas.space import Architecture
from s2dnas.train.checkpoint import save_weights
from s2dnas.zoo import create_model

from _synthetic import write_band_dataset

N_TRAIN, N_TEST = 300, 60


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST-shaped files: class k is a bright band at height 2k, plus noise."""
    return write_band_dataset(tmp_path_factory.mktemp("fashion"), n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-20 for 1-channel 10-class inputs, saved as train-base would (untrained is enough here)."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    path = tmp_path_factory.mktemp("base") / "model.safetensors"
    save_weights(path, model.state_dict(), {"model": "resnet20", "num_classes": 10, "in_channels": 1})
    return path


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "default_arch.json"
    assert main(["space", "--model", "resnet20", "--dataset", "fashion-mnist", "--arch-out", str(path)]) == 0
    return path


@pytest.mark.parametrize("command", ["train", "space"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--set" in out and "--stages" in out
    if command == "train":
        assert "--arch" in out and "--base-weights" in out and "--resume" in out


def test_space_prints_decisions_size_and_stage_macs(capsys: pytest.CaptureFixture[str], seed: int) -> None:
    assert main(["space", "--model", "resnet20", "--dataset", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    # channel multiple 8: the 16- and 32-channel groups are cut in 4 steps, which give 3 distinct
    # splits into 3 stages; the 64-channel group's 8 steps give all 21 compositions of 8
    assert "space size: 3,024 distinct networks" in out  # 3 * 3 * 21 splits * 4 ** 2 concats
    assert re.search(r"split\.g1\s+3 choices", out) and re.search(r"split\.g3\s+21 choices", out)
    assert "groups: 3" in out
    assert re.search(r"concat\.s2\s+4 choices\s+0, 1, 2, 3", out)
    stage_lines = re.findall(r"^\s+stage (\d):\s+([\d,]+) MACs\s+([\d.]+)% of base$", out, flags=re.M)
    assert [s for s, _, _ in stage_lines] == ["1", "2", "3"]
    assert "base model: 31,021,952 MACs" in out
    assert float(stage_lines[0][2]) == pytest.approx(6.3, abs=0.1)  # METHOD.md's 1/4 split: 6.3% / 12.5% / 50%


def test_space_reads_an_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shape and class count of an image folder come from its image headers (issue 17, item 3)."""
    from tests.data._folders import write_folder

    assert main(["space", "--dataset", "imagefolder:/nowhere"]) == 2
    err = capsys.readouterr().err
    assert "Expected a training folder /nowhere/train" in err and len(err.strip().splitlines()) == 1
    write_folder(tmp_path, classes=4, per_class=2, test_per_class=1, size=64, kind="RGB")
    assert main(["space", "--dataset", f"imagefolder:{tmp_path}", "--stages", "2", "--ratio-grid", "4"]) == 0
    assert "input 3x64x64 | 4 classes" in capsys.readouterr().out
    assert main(["space", "--dataset", "imagefolder:/nowhere", "--input-shape", "1,28,28"]) == 0


def test_space_on_a_folder_of_mixed_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --input-shape the error names space's flag; with it the class count is still the folder's."""
    import numpy as np

    from tests.data._folders import save, write_folder

    write_folder(tmp_path, classes=4, per_class=2, test_per_class=1, size=32)
    save(tmp_path / "train" / "c0" / "big.png", np.zeros((64, 64)), "L")
    dataset = f"imagefolder:{tmp_path}"
    assert main(["space", "--dataset", dataset, "--stages", "2", "--ratio-grid", "4"]) == 2
    err = capsys.readouterr().err
    assert "share one size" in err and "pass --input-shape C,H,W" in err and "--input-size" not in err
    assert main(["space", "--dataset", dataset, "--stages", "2", "--ratio-grid", "4", "--input-shape", "1,28,28"]) == 0
    assert "input 1x28x28 | 4 classes" in capsys.readouterr().out


def test_train_end_to_end(data_dir: Path, base_weights: Path, arch_file: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    monkeypatch.setenv("S2DNAS_DATA", str(data_dir))
    out = tmp_path / "run"
    args = ["train", "--arch", str(arch_file), "--base-weights", str(base_weights), "--dataset", "fashion-mnist",
            "--val-size", "50", "--limit-train", "64", "--epochs", "1", "--out", str(out), "--no-progress",
            "--device", "cpu", "--set", "train.batch_size=32", "data.eval_batch_size=128"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["stage_val_accuracy"]) == 3
    for name in ("checkpoint.pt", "multistage.safetensors", "multistage.json", "metrics.json", "config.yaml"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "multistage.json").read_text())
    assert Architecture.from_dict(meta["architecture"]) == Architecture.load(arch_file)
    assert len(meta["stage_macs"]) == 3 and sum(meta["stage_macs"]) <= meta["base_macs"]
    assert load_file(str(out / "multistage.safetensors"))
    cfg = load_config(out / "config.yaml")  # the resolved config, flags and --set included
    assert (cfg.train.epochs, cfg.train.limit_train, cfg.train.batch_size, cfg.data.val_size) == (1, 64, 32, 50)
    assert cfg.model.weights == str(base_weights)
    # The run directory is not reused silently.
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # A finished run resumes to the same result without training again.
    assert main([*args, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["stage_val_accuracy"] == summary["stage_val_accuracy"]


def test_train_refuses_an_architecture_for_another_stage_count(arch_file: Path, base_weights: Path,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    arch = Architecture(num_stages=2, ratio_grid=8, splits=((4, 4),) * 3, concat=(0,))
    path = tmp_path / "two_stage.json"
    arch.save(path)
    out = tmp_path / "run"
    code = main(["train", "--arch", str(path), "--base-weights", str(base_weights), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "2 stages" in err and "--stages 2" in err
    assert not out.exists()  # nothing made on disk


def test_train_reports_every_bad_config_value_at_once(arch_file: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--arch", str(arch_file), "--out", str(tmp_path / "run"),
                 "--set", "train.lr=-1", "search.budget=0", "train.temperature=hot"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    for field in ("train.lr", "search.budget", "train.temperature"):
        assert field in err
