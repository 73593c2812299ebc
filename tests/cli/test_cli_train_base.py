"""``s2dnas train-base`` / ``evaluate-base`` / ``demo`` end to end on synthetic Fashion-MNIST files.

Every run goes through ``s2dnas.cli.main.main`` in this process. Before each training run the
torch seed is reset, as a fresh ``s2dnas`` process would start (see ``_fresh_process``).
"""
from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from s2dnas.cli import demo
from s2dnas.cli.main import main
from s2dnas.cost import count_macs, count_params
from s2dnas.data import fashion_mnist
from s2dnas.train import base as train_base_module
from s2dnas.train.checkpoint import load_checkpoint, save_weights
from s2dnas.zoo import create_model, weights as zoo_weights
from tests.cli._synthetic import write_band_dataset

N_TRAIN, N_TEST = 256, 64
TRAIN_ARGS = ["--model", "resnet20", "--limit-train", "128", "--batch-size", "32", "--val-size", "64",
              "--no-progress", "--device", "cpu"]


class Planted:
    """Unpickling this would create the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _fresh_process() -> None:
    # Known gap (reported): cli/train_base.py builds the model before any seeding, so its initial
    # weights come from torch's per-process random seed. Until it seeds from --seed, the tests
    # seed torch here, standing in for that missing step (see test_model_init_follows_seed).
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fmnist")
    write_band_dataset(directory, n_train=N_TRAIN, n_test=N_TEST, compress=True)
    return directory


@pytest.fixture(autouse=True)
def _env(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("S2DNAS_DATA", str(data_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    yield


def _train(out: Path, *extra: str, epochs: int = 2) -> int:
    _fresh_process()
    return main(["train-base", *TRAIN_ARGS, "--epochs", str(epochs), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def run_a(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-epoch run."""
    out = tmp_path_factory.mktemp("runs") / "a"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2DNAS_DATA", str(data_dir))
        assert _train(out) == 0
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("s2dnas: error: ") and "Traceback" not in err, err
    return err


# --- train-base ------------------------------------------------------------------------------

def test_smoke_run_writes_its_files(run_a: Path) -> None:
    for name in ("checkpoint.pt", "model.safetensors", "model.json", "metrics.json"):
        assert (run_a / name).is_file(), name
    state = load_checkpoint(run_a / "checkpoint.pt")  # weights-only load
    assert state["epoch"] == 2 and state["model_name"] == "resnet20" and len(state["history"]) == 2
    metrics = json.loads((run_a / "metrics.json").read_text())
    assert metrics["dataset"] == "fashion-mnist" and 0 <= metrics["test_accuracy"] <= 1
    meta = json.loads((run_a / "model.json").read_text())
    assert (meta["model"], meta["num_classes"], meta["in_channels"]) == ("resnet20", 10, 1)


def test_interrupted_then_resumed_equals_uninterrupted(run_a: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Run B is the same ``--epochs 2`` command as run A, stopped by Ctrl-C right after epoch 1's
    checkpoint is written (what a user interrupting it would leave behind), then resumed.

    (A first run with ``--epochs 1`` would not do: the cosine schedule spans ``--epochs``, so an
    ``--epochs 1`` run decays the learning rate to zero in epoch 1 and is a different recipe.)
    """
    real_save = train_base_module.save_checkpoint
    saves: list[int] = []

    def save_then_interrupt(path: Path, state: dict) -> None:
        real_save(path, state)
        saves.append(state["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setattr(train_base_module, "save_checkpoint", save_then_interrupt)
    out = tmp_path / "b"
    assert _train(out) == 130
    err = capsys.readouterr().err
    assert "interrupted; resume with" in err and "--resume" in err
    assert saves == [1] and load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    first_epoch = load_checkpoint(out / "checkpoint.pt")["history"][0]["seconds"]
    assert not (out / "model.safetensors").exists()
    monkeypatch.setattr(train_base_module, "save_checkpoint", real_save)

    torch.manual_seed(12345)  # the resumed process's RNG state must not matter
    assert main(["train-base", *TRAIN_ARGS, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    resumed, uninterrupted = load_file(str(out / "model.safetensors")), load_file(str(run_a / "model.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    for key, tensor in uninterrupted.items():
        assert torch.equal(resumed[key], tensor), key
    history_b = json.loads((out / "metrics.json").read_text())["history"]
    history_a = json.loads((run_a / "metrics.json").read_text())["history"]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in history_b] == \
        [{k: v for k, v in h.items() if k != "seconds"} for h in history_a]
    # the interrupted process's epoch keeps its time: the training's work spans both processes
    metrics_b = json.loads((out / "metrics.json").read_text())
    assert history_b[0]["seconds"] == first_epoch > 0
    assert metrics_b["train_seconds"] == pytest.approx(first_epoch + history_b[1]["seconds"])


def test_model_init_follows_seed(run_a: Path, tmp_path: Path) -> None:
    """Same command and --seed, different process RNG state -> the same weights (issue 7, determinism)."""
    torch.manual_seed(999)
    assert main(["train-base", *TRAIN_ARGS, "--epochs", "2", "--out", str(tmp_path / "c")]) == 0
    other, reference = load_file(str(tmp_path / "c" / "model.safetensors")), load_file(str(run_a / "model.safetensors"))
    assert all(torch.equal(other[k], v) for k, v in reference.items())


def test_existing_out_needs_resume_or_force(run_a: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (run_a / "checkpoint.pt").read_bytes()
    assert _train(run_a) == 2
    assert "--resume" in _one_line_error(capsys)
    assert (run_a / "checkpoint.pt").read_bytes() == before


def test_resume_with_nothing_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path / "empty", "--resume") == 2
    assert "Nothing to resume" in _one_line_error(capsys)


def test_unwritable_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A path under a regular file cannot be created, even by root (chmod would not stop root).
    (tmp_path / "file.txt").write_text("not a folder")
    assert _train(tmp_path / "file.txt" / "sub") == 2
    assert "Cannot write to output directory" in _one_line_error(capsys)


def test_checkpoint_of_another_model(run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "other"
    out.mkdir()
    shutil.copy(run_a / "checkpoint.pt", out / "checkpoint.pt")
    _fresh_process()
    args = [a if a != "resnet20" else "resnet32" for a in TRAIN_ARGS]
    assert main(["train-base", *args, "--epochs", "2", "--out", str(out), "--resume"]) == 2
    err = _one_line_error(capsys)
    assert "'resnet20'" in err and "'resnet32'" in err


def test_truncated_checkpoint(run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trunc"
    out.mkdir()
    data = (run_a / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert _train(out, "--resume") == 2
    assert "truncated or corrupt" in _one_line_error(capsys)


def test_planted_pickle_checkpoint_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "planted"
    out.mkdir()
    victim = tmp_path / "pwned.txt"
    (out / "checkpoint.pt").write_bytes(pickle.dumps({"model": Planted(victim)}, protocol=2))
    assert _train(out, "--resume") == 2
    assert "Refusing to load" in _one_line_error(capsys)
    assert not victim.exists()


# --- evaluate-base and demo --------------------------------------------------------------------

def _resnet20_macs() -> tuple[int, int]:
    model = create_model("resnet20", num_classes=10, in_channels=1)
    return count_macs(model, torch.zeros(1, 1, 28, 28)), count_params(model)


def test_evaluate_base_on_trained_weights(run_a: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate-base", "--weights", str(run_a / "model.safetensors"), "--val-size", "64"]) == 0
    out = capsys.readouterr().out
    macs, params = _resnet20_macs()
    assert out.count("\n") == 1 and "resnet20" in out and "fashion-mnist test" in out
    assert "accuracy " in out and f"/{N_TEST})" in out and f"MACs {macs:,} per 1x28x28" in out
    assert f"params {params:,}" in out
    test_acc = json.loads((run_a / "metrics.json").read_text())["test_accuracy"]
    assert main(["evaluate-base", "--weights", str(run_a), "--val-size", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(test_acc) and result["macs"] == macs
    assert main(["evaluate-base", "--weights", str(run_a), "--val-size", "64", "--split", "val",
                 "--limit", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 10


def test_evaluate_base_class_count_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = create_model("resnet20", num_classes=5, in_channels=1)
    save_weights(tmp_path / "model.safetensors", model.state_dict(),
                 {"model": "resnet20", "num_classes": 5, "in_channels": 1})
    assert main(["evaluate-base", "--weights", str(tmp_path / "model.safetensors"), "--val-size", "64"]) == 2
    err = _one_line_error(capsys)
    assert "5 classes" in err and "10 classes" in err


def test_evaluate_base_wrong_model_for_weights(run_a: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate-base", "--weights", str(run_a), "--model", "resnet32", "--val-size", "64"]) == 2
    assert "'resnet20'" in _one_line_error(capsys)


@pytest.fixture
def shipped(run_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ship run A's weights as the pretrained entry resnet20_fashion_mnist (in a temporary folder)."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    shutil.copy(run_a / "model.safetensors", weights_dir / "resnet20_fashion_mnist.safetensors")
    metrics = json.loads((run_a / "metrics.json").read_text())
    macs, params = _resnet20_macs()
    (weights_dir / "resnet20_fashion_mnist.json").write_text(json.dumps({
        "model": "resnet20", "dataset": "fashion_mnist", "num_classes": 10, "in_channels": 1,
        "input_size": [28, 28], "num_params": params, "macs": macs, "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"], "recipe": metrics["recipe"],
    }))
    monkeypatch.setattr(zoo_weights, "WEIGHTS_DIR", weights_dir)
    monkeypatch.setattr(demo, "DEMO_VAL_SIZE", 64)  # the synthetic train set has 256 images
    return weights_dir


def test_demo_and_default_pretrained(shipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--device", "cpu", "--base-only"]) == 0
    out = capsys.readouterr().out
    macs, _ = _resnet20_macs()
    assert "resnet20_fashion_mnist" in out and "accuracy " in out and f"MACs {macs:,}" in out
    assert main(["evaluate-base", "--val-size", "64"]) == 0
    assert "resnet20 (resnet20_fashion_mnist) on fashion-mnist test: accuracy" in capsys.readouterr().out


def test_pretrained_on_other_data_is_a_data_error(shipped: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "imgs" / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (i * 90, 10, 10)).save(tmp_path / "imgs" / split / name / f"{i}.png")
    assert main(["evaluate-base", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--val-size", "1"]) == 2
    err = _one_line_error(capsys)
    assert "10 classes and 1 input channel" in err and "2 classes and 3 channel" in err


def test_demo_without_shipped_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(zoo_weights, "WEIGHTS_DIR", tmp_path / "none")
    monkeypatch.setattr(demo, "DEMO_VAL_SIZE", 64)
    assert main(["demo"]) == 2
    assert "none are shipped" in _one_line_error(capsys)


@pytest.mark.parametrize("command", ["train-base", "evaluate-base", "demo"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and command in capsys.readouterr().out
