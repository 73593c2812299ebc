"""A user's own image folder through the CLI (issue 17): stored data spec, val cut, hints, sanity checks."""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from s2dnas.cli.main import main
from s2dnas.data import build_splits
from s2dnas.train.base import BaseTrainConfig, train_base
from s2dnas.train.checkpoint import save_weights
from s2dnas.train.evaluate import load_base_model
from s2dnas.zoo import create_model
from tests.data._folders import write_folder

TINY = "user_data_models:tiny"
MODELS = '''
from torch import nn


def tiny(num_classes=10, in_channels=1):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


@pytest.fixture(autouse=True)
def _models(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    folder = tmp_path_factory.getbasetemp() / "user_data_models"
    folder.mkdir(exist_ok=True)
    (folder / "user_data_models.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(folder))
    yield


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("s2dnas: error: ") and "Traceback" not in err, err
    return err


def _digest(root: Path) -> str:
    return hashlib.sha256("".join(f"{p.relative_to(root)}:{p.read_bytes().hex() if p.is_file() else ''}"
                                  for p in sorted(root.rglob("*"))).encode()).hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base trained by train-base on a 64x64 RGB folder with --val-size 6 --data-seed 3."""
    root = tmp_path_factory.mktemp("user_data")
    write_folder(root / "rgb", classes=3, per_class=12, test_per_class=2, size=64, kind="RGB")
    folder = tmp_path_factory.getbasetemp() / "user_data_models"
    folder.mkdir(exist_ok=True)
    (folder / "user_data_models.py").write_text(MODELS)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        assert main(["train-base", "--model", TINY, "--dataset", f"imagefolder:{root / 'rgb'}", "--epochs", "1",
                     "--val-size", "6", "--data-seed", "3", "--augment", "none", "--out", str(root / "base"),
                     "--no-progress", "--device", "cpu"]) == 0
    return root / "base"


def test_train_base_stores_the_data_spec(base: Path) -> None:
    data = json.loads((base / "model.json").read_text())["data"]
    assert (data["val_size"], data["data_seed"], data["augment"]) == (6, 3, "none")
    assert data["preprocessing"]["input_size"] == [64, 64] and data["preprocessing"]["channels"] == 3
    assert data["dataset"] == f"imagefolder:{base.parent / 'rgb'}"


def test_evaluate_base_takes_data_and_val_cut_from_the_weights(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate-base", "--weights", str(base), "--split", "val", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 6
    # test needs no val: an impossible --val-size does not matter
    assert main(["evaluate-base", "--weights", str(base), "--val-size", "5000", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 6
    # another val cut than the model's is refused in one line
    assert main(["evaluate-base", "--weights", str(base), "--split", "val", "--val-size", "7", "--device", "cpu"]) == 2
    err = _error(capsys)
    assert "Expected the val split" in err and "--val-size 6" in err and "--val-size 7" in err
    assert main(["evaluate-base", "--weights", str(base), "--split", "val", "--data-seed", "0", "--device", "cpu"]) == 2
    assert "--data-seed 3" in _error(capsys)


@pytest.mark.parametrize("where", ["train/c0/runs", "."])
def test_out_inside_the_data_folder_is_refused(tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "imgs", classes=2, per_class=4, test_per_class=1, size=32)
    before = _digest(root)
    assert main(["train-base", "--model", TINY, "--dataset", f"imagefolder:{root}", "--out", str(root / where / "o"),
                 "--no-progress", "--device", "cpu"]) == 2
    assert "is inside the data folder" in _error(capsys)
    assert _digest(root) == before  # nothing written into the data set


def test_one_class_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "imgs", classes=1, per_class=4, test_per_class=1, size=32)
    assert main(["train-base", "--model", TINY, "--dataset", f"imagefolder:{root}", "--out", str(tmp_path / "o"),
                 "--no-progress", "--device", "cpu"]) == 2
    assert "at least 2 class folders" in _error(capsys)


def test_chance_level_base_is_warned_and_epochs_print_without_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = write_folder(tmp_path / "imgs", classes=2, per_class=10, test_per_class=2, size=32)
    with caplog.at_level(logging.WARNING):
        assert main(["train-base", "--model", TINY, "--dataset", f"imagefolder:{root}", "--epochs", "2", "--lr", "0",
                     "--val-size", "10", "--out", str(tmp_path / "o"), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()[:2]] == ["epoch 1/2", "epoch 2/2"]
    assert any("at chance level (50.0%: always the most frequent of 2 classes)" in r.getMessage()
               for r in caplog.records)


def test_train_base_creates_its_output_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs", classes=2, per_class=5, test_per_class=1, size=32)
    splits = build_splits(f"imagefolder:{tmp_path / 'imgs'}", val_size=2)
    model = create_model(TINY, num_classes=2, in_channels=1)
    out = tmp_path / "not" / "yet"
    train_base(model, splits, config=BaseTrainConfig(epochs=1, batch_size=4), out_dir=out, model_name=TINY,
               device=torch.device("cpu"), progress=False)
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()


def test_no_warning_when_only_the_path_form_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    write_folder(tmp_path / "imgs", classes=2, per_class=5, test_per_class=1, size=32)
    monkeypatch.chdir(tmp_path)
    splits = build_splits(f"imagefolder:{tmp_path}/imgs/", val_size=2)
    model = create_model(TINY, num_classes=2, in_channels=1)
    save_weights(tmp_path / "w.safetensors", model.state_dict(),
                 {"model": TINY, "dataset": "imagefolder:./imgs", "num_classes": 2, "in_channels": 1})
    with caplog.at_level(logging.WARNING):
        load_base_model(splits=splits, weights=tmp_path / "w.safetensors")
    assert not [r for r in caplog.records if "evaluating on" in r.getMessage()]
    save_weights(tmp_path / "w.safetensors", model.state_dict(),
                 {"model": TINY, "dataset": "imagefolder:./other", "num_classes": 2, "in_channels": 1})
    with caplog.at_level(logging.WARNING):
        load_base_model(splits=splits, weights=tmp_path / "w.safetensors")
    assert [r for r in caplog.records if "evaluating on" in r.getMessage()]


def test_evaluate_and_bench_on_the_wrong_directory_say_what_to_pass(base: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(base)]) == 2
    assert f"s2dnas evaluate-base --weights {base}" in _error(capsys)
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.json").write_text("{}")
    for command in ("evaluate", "bench"):
        assert main([command, str(run)]) == 2
        err = _error(capsys)
        assert f"{run} is a run directory" in err and f"pass {run / 'model'}" in err
