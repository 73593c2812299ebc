"""Bad inputs through the CLI (issue 7, items 1 and 2; the table is docs/errors.md).

Every case runs ``s2dnas.cli.main.main`` in this process on tiny synthetic data and a tiny CNN
(a ``module:factory`` written to a temporary folder), and checks what a user sees: exit code 2,
exactly one line ``s2dnas: error: ...`` naming what was expected, no traceback, and every file
that existed before the command byte-identical afterwards. Hostile files (pickles whose
unpickling would create a file) must be refused without creating it.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from s2dnas.cli.main import main
from s2dnas.data import fashion_mnist
from s2dnas.dynamic import DynamicNet, build_model_spec
from s2dnas.errors import UnknownModelError
from s2dnas.space import Space
from s2dnas.train.checkpoint import save_weights

from _synthetic import write_band_dataset

MODELS = "s2dnas_badinput_models"  # module written to a temporary folder on sys.path
TINY = f"{MODELS}:tiny"
N_TRAIN, N_TEST, VAL = 96, 32, "32"
FAST = ["--val-size", VAL, "--batch-size", "16", "--no-progress", "--device", "cpu"]

MODELS_SOURCE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """Two 3x3 convs with batch norm, global pooling and a linear head."""

    def __init__(self, num_classes=10, in_channels=1, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class Branchy(Tiny):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        if x.sum() > 0:
            x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny(num_classes=10, in_channels=1):
    return Tiny(num_classes, in_channels)


def wide(num_classes=10, in_channels=1):
    return Tiny(num_classes, in_channels, width=16)


def branchy(num_classes=10, in_channels=1):
    return Branchy(num_classes, in_channels)
'''


class Planted:
    """Unpickling this would create the file ``path`` (``open(path, "w")``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


# --- helpers ---------------------------------------------------------------------------------

def _tree_digest(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (a missing root maps to nothing)."""
    digest = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            digest[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digest


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str,
           unchanged: tuple[Path, ...] = ()) -> str:
    """Run ``s2dnas argv``; assert exit 2, one ``s2dnas: error:`` line holding ``fragments``, no
    traceback, and the files under ``unchanged`` byte-identical (none added or removed). Returns the line."""
    before = _tree_digest(*unchanged)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("s2dnas: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert _tree_digest(*unchanged) == before, "a file that existed before the command was changed"
    return lines[0]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("models")
    (directory / f"{MODELS}.py").write_text(textwrap.dedent(MODELS_SOURCE))
    (directory / "broken_models.py").write_text("raise RuntimeError('cannot build the zoo on this machine')\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(directory))
        yield directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST-shaped IDX files: class k is a bright band at height 2k, plus noise."""
    return write_band_dataset(tmp_path_factory.mktemp("fmnist"), n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture(autouse=True)
def _env(models_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Synthetic data only: $S2DNAS_DATA set, no Debian folder, no download."""
    import torchvision.datasets
    from torchvision.datasets import utils as tv_utils

    def no_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network in tests")

    monkeypatch.setenv("S2DNAS_DATA", str(data_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", no_network)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def base_run(models_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``s2dnas train-base`` of the tiny CNN, 1 epoch: checkpoint.pt, model.safetensors, metrics.json."""
    out = tmp_path_factory.mktemp("base") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2DNAS_DATA", str(data_dir))
        assert main(["train-base", "--model", TINY, "--epochs", "1", *FAST, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def arch_file(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    assert main(["space", "--model", TINY, "--arch-out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def train_run(base_run: Path, arch_file: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``s2dnas train`` of the tiny CNN's default architecture, 1 epoch (holds a multi-stage checkpoint.pt)."""
    out = tmp_path_factory.mktemp("train") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2DNAS_DATA", str(data_dir))
        assert main(["train", "--arch", str(arch_file), "--model", TINY, "--base-weights",
                     str(base_run / "model.safetensors"), "--epochs", "1", *FAST, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def model_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved dynamic model (3 stages of the tiny CNN, thresholds 0.5, 0.5) as ``s2dnas evaluate`` reads it."""
    from s2dnas.zoo import create_model

    torch.manual_seed(0)
    space = Space(create_model(TINY, num_classes=10, in_channels=1).eval(), input_shape=(1, 28, 28),
                  num_stages=3, model_name=TINY)
    net = DynamicNet(space.build(space.default_architecture()), [0.5, 0.5])
    directory = tmp_path_factory.mktemp("dynamic") / "model"
    net.save(directory, model_spec=build_model_spec(space, num_classes=10))
    return directory


def _train_args(arch: Path, weights: Path, out: Path, *extra: str, model: str = TINY) -> list[str]:
    return ["train", "--arch", str(arch), "--model", model, "--base-weights", str(weights), "--epochs", "1", *FAST,
            "--out", str(out), *extra]


# --- data ------------------------------------------------------------------------------------

def test_truncated_dataset_file(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _copy(data_dir, tmp_path / "data")
    path = broken / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    _fails(capsys, ["train-base", "--model", TINY, "--data-dir", str(broken), *FAST, "--out", str(tmp_path / "o")],
           "t10k-images-idx3-ubyte is truncated or corrupt", "expected", "replace the file", unchanged=(broken,))


def test_a_run_stopped_before_its_first_step_starts_again_without_resume(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A run that stops on the model (or the data) before its first step writes no config.yaml, so the
    corrected command is not told that the folder "already holds a run" (it used to be)."""
    out = tmp_path / "o"
    argv = ["run", "--set", f"model.name={TINY}", "--no-progress", "--device", "cpu", "--out", str(out)]
    _fails(capsys, argv, "Expected pretrained=False")
    assert not (out / "config.yaml").exists()
    _fails(capsys, [*argv, "--set", "seed=1"], "Expected pretrained=False")  # the same problem, not "pass --resume"
    assert not (out / "config.yaml").exists()


def test_val_size_zero_is_an_empty_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["train-base", "--model", TINY, "--val-size", "0", "--no-progress", "--out", str(tmp_path / "o")],
           "Expected a validation split to train a base model on, but val is empty", "--val-size >= 1")
    _fails(capsys, ["train-base", "--model", TINY, "--val-size", "96", "--no-progress", "--out", str(tmp_path / "o")],
           "Expected 0 < val_size < 96", "--val-size between 1 and 95")


def _image_folder(root: Path, *, classes: tuple[str, ...] = ("cat", "dog"), empty: tuple[str, ...] = (),
                  test_classes: tuple[str, ...] | None = None) -> Path:
    from PIL import Image

    for split, names in (("train", classes), ("val", classes if test_classes is None else test_classes)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / split / name).mkdir()
            if name in empty and split == "train":
                continue
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 90, 10)).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize("layout", ["empty class folder", "empty test folder"])
def test_empty_image_folder_split(layout: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if layout == "empty class folder":
        root = _image_folder(tmp_path / "imgs", empty=("dog",))
        fragment = "train"
    else:
        root = _image_folder(tmp_path / "imgs", test_classes=())
        fragment = "val"
    _fails(capsys, ["train-base", "--model", TINY, "--dataset", f"imagefolder:{root}", "--val-size", "1",
                    "--no-progress", "--out", str(tmp_path / "o")],
           "Expected class folders of images in", str(root / fragment), "<root>/train/<class>/<image>",
           unchanged=(root,))


def test_class_count_mismatch_between_base_model_and_data(arch_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from s2dnas.zoo import create_model

    weights = tmp_path / "five" / "model.safetensors"
    weights.parent.mkdir()
    save_weights(weights, create_model(TINY, num_classes=5, in_channels=1).state_dict(),
                 {"model": TINY, "num_classes": 5, "in_channels": 1})
    _fails(capsys, _train_args(arch_file, weights, tmp_path / "o"), "5 classes", "10 classes",
           unchanged=(weights.parent, arch_file))


# --- models and architectures ----------------------------------------------------------------

def test_unknown_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["space", "--model", "resnet21"], "Unknown model 'resnet21'", "expected one of", "resnet20",
           "'package.module:factory'")


@pytest.mark.parametrize("ref, fragment", [
    ("no_such_package.models:build", "ModuleNotFoundError"),
    ("broken_models:build", "RuntimeError: cannot build the zoo on this machine"),
])
def test_factory_that_does_not_import(ref: str, fragment: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["train-base", "--model", ref, *FAST, "--out", str(tmp_path / "o")],
           f"Cannot import module '{ref.split(':')[0]}'", fragment, "expected an importable module", "PYTHONPATH")


def test_factory_without_the_named_function(capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["space", "--model", f"{MODELS}:resnet9000"], "has no attribute 'resnet9000'",
           "expected", "returns an nn.Module")


def test_untraceable_model_through_space(capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["space", "--model", f"{MODELS}:branchy"], "Cannot trace Branchy with torch.fx",
           "must not branch or loop on tensor values")


def test_untraceable_model_through_train(arch_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from s2dnas.zoo import create_model

    weights = tmp_path / "branchy.safetensors"
    save_weights(weights, create_model(f"{MODELS}:branchy", in_channels=1).state_dict(),
                 {"model": f"{MODELS}:branchy", "num_classes": 10, "in_channels": 1})
    _fails(capsys, _train_args(arch_file, weights, tmp_path / "o", model=f"{MODELS}:branchy"),
           "Cannot trace Branchy with torch.fx",
           unchanged=(weights, arch_file))
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_malformed_architecture_json(base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text('{"num_stages": 3, "splits": [[2, 2, 4]')
    _fails(capsys, _train_args(arch, base_run / "model.safetensors", tmp_path / "o"),
           "Malformed architecture JSON", "fix the file or regenerate it", unchanged=(arch, base_run))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("made_for", ["resnet20", f"{MODELS}:wide"])
def test_architecture_made_for_another_model(made_for: str, base_run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    arch = tmp_path / "other.json"
    assert main(["space", "--model", made_for, "--arch-out", str(arch)]) == 0
    # resnet20 has 3 split groups, the tiny CNN 1; the wide tiny CNN has 1 too, but another signature.
    fragment = "split group(s)" if made_for == "resnet20" else "signature"
    _fails(capsys, _train_args(arch, base_run / "model.safetensors", tmp_path / "o"),
           "Expected an architecture", fragment, f"model '{made_for}'", f"s2dnas space --model {TINY}",
           unchanged=(arch, base_run))


# --- thresholds of a saved dynamic model -----------------------------------------------------

@pytest.mark.parametrize("thresholds, fragment", [
    ([0.5], "Expected 2 thresholds"),
    ([0.5, -0.1], "finite number >= 0"),
    ([float("nan"), 0.5], "finite number >= 0"),
])
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_bad_thresholds_of_a_saved_model(command: str, thresholds: list[float], fragment: str, model_dir: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _copy(model_dir, tmp_path / "model")
    data = json.loads((broken / "thresholds.json").read_text())
    data["thresholds"] = thresholds
    (broken / "thresholds.json").write_text(json.dumps(data))  # NaN is written as the JSON extension NaN
    argv = (["evaluate", str(broken), "--val-size", VAL, "--device", "cpu", "--out-dir", str(tmp_path / "r")]
            if command == "evaluate" else ["export", str(broken), "--out", str(tmp_path / "export")])
    _fails(capsys, argv, f"Invalid {broken / 'thresholds.json'}", fragment, unchanged=(broken,))
    assert not (tmp_path / "r").exists() and not (tmp_path / "export").exists()


# --- checkpoints -----------------------------------------------------------------------------

def test_truncated_multistage_checkpoint(train_run: Path, arch_file: Path, base_run: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = _copy(train_run, tmp_path / "run")
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    _fails(capsys, _train_args(arch_file, base_run / "model.safetensors", out, "--resume"),
           "truncated or corrupt", "restore a good copy", unchanged=(out, base_run))


def test_train_base_checkpoint_given_to_train_resume(train_run: Path, arch_file: Path, base_run: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint of another kind of run (train-base's, in a train run directory)."""
    out = _copy(train_run, tmp_path / "run")
    shutil.copy(base_run / "checkpoint.pt", out / "checkpoint.pt")
    _fails(capsys, _train_args(arch_file, base_run / "model.safetensors", out, "--resume"),
           str(out / "checkpoint.pt"), unchanged=(out, base_run))


def test_base_weights_of_another_model_than_named(arch_file: Path, base_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--base-weights of the tiny CNN while the model name is the default (resnet20)."""
    argv = [a for a in _train_args(arch_file, base_run / "model.safetensors", tmp_path / "o") if a not in ("--model", TINY)]
    _fails(capsys, argv, f"Expected the model to be '{TINY}'", "but got 'resnet20'", f"pass --model {TINY}",
           unchanged=(base_run, arch_file))


def test_existing_train_run_needs_resume_or_force(train_run: Path, arch_file: Path, base_run: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, _train_args(arch_file, base_run / "model.safetensors", train_run),
           "already holds a run", "pass --resume to continue it or --force to start over", unchanged=(train_run,))


# --- configuration and output directories ------------------------------------------------------

def test_train_base_config_values_all_in_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["train-base", "--model", TINY, "--epochs", "0", "--lr", "-1", "--batch-size", "0",
                    "--out", str(tmp_path / "o")],
           "Invalid base training config", "epochs must be >= 1, got 0", "batch_size must be >= 1, got 0",
           "lr must be >= 0, got -1.0")
    assert not (tmp_path / "o").exists()


def test_config_file_with_wrong_types_and_ranges(arch_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  epochs: many\n  lr: -0.1\nspace:\n  num_stages: 0\n")
    _fails(capsys, ["train", "--arch", str(arch_file), "--config", str(config), "--out", str(tmp_path / "o")],
           "Invalid configuration (3 problems)", "train.epochs must be an integer, got 'many'",
           "train.lr must be > 0", "space.num_stages must be >= 1", unchanged=(config, arch_file))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["train-base", "train", "space", "evaluate", "export"])
def test_unwritable_output(command: str, base_run: Path, arch_file: Path, model_dir: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    # A path under a regular file cannot be created, even by root (a chmod would not stop root).
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    out = blocker / "sub"
    argv, fragment = {
        "train-base": (["train-base", "--model", TINY, *FAST, "--out", str(out)], "choose another --out"),
        "train": (_train_args(arch_file, base_run / "model.safetensors", out), "choose another --out"),
        "space": (["space", "--model", TINY, "--arch-out", str(out / "a.json")], "choose another --arch-out"),
        "evaluate": (["evaluate", str(model_dir), "--val-size", VAL, "--limit", "8", "--device", "cpu",
                      "--out-dir", str(out)], "pass a writable --out-dir"),
        "export": (["export", str(model_dir), "--out", str(out), "--no-check"], "choose another --out"),
    }[command]
    _fails(capsys, argv, str(blocker), fragment, unchanged=(blocker, model_dir, base_run))


# --- hostile files (item 2) ------------------------------------------------------------------

def test_hostile_multistage_checkpoint_runs_nothing(train_run: Path, arch_file: Path, base_run: Path,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _copy(train_run, tmp_path / "run")
    victim = tmp_path / "pwned.txt"
    (out / "checkpoint.pt").write_bytes(pickle.dumps({"model": Planted(victim)}, protocol=2))
    _fails(capsys, _train_args(arch_file, base_run / "model.safetensors", out, "--resume"),
           "Refusing to load", "not a weights-only checkpoint (Unsupported global", "would run pickled code",
           unchanged=(out, base_run))
    assert not victim.exists()
    # The threat is real: plain pickle would have created the file.
    pickle.loads((out / "checkpoint.pt").read_bytes())["model"].close()
    assert victim.exists()


def test_hostile_dynamic_weights_run_nothing(model_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """weights.safetensors replaced by a pickle, with model.json's checksum updated to match it."""
    broken = _copy(model_dir, tmp_path / "model")
    victim = tmp_path / "pwned.txt"
    payload = pickle.dumps({"stages.0.conv1.weight": Planted(victim)})
    (broken / "weights.safetensors").write_bytes(payload)
    spec = json.loads((broken / "model.json").read_text())
    spec["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (broken / "model.json").write_text(json.dumps(spec))
    for command in (["evaluate", str(broken), "--val-size", VAL, "--device", "cpu"],
                    ["export", str(broken), "--out", str(tmp_path / "export")]):
        _fails(capsys, command, "weights.safetensors is truncated or not a safetensors file", "re-save the model",
               unchanged=(broken,))
        assert not victim.exists()


def test_hostile_cifar_batch_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2))
    victim = tmp_path / "pwned.txt"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Planted(victim), b"labels": []}, protocol=2))
    _fails(capsys, ["train-base", "--model", TINY, "--dataset", "cifar10", "--data-dir", str(folder.parent),
                    "--val-size", "2", "--no-progress", "--out", str(tmp_path / "o")],
           "Refusing to load CIFAR file", "data_batch_3", unchanged=(folder,))
    assert not victim.exists()


# --- --debug ---------------------------------------------------------------------------------

def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """With --debug the error propagates (Python prints the traceback) instead of the one-line message."""
    with pytest.raises(UnknownModelError, match="Unknown model 'resnet21'") as info:
        main(["--debug", "space", "--model", "resnet21"])
    assert info.traceback  # a real traceback, reaching into the zoo
    assert any("zoo" in str(entry.path) for entry in info.traceback)
    assert "s2dnas: error" not in capsys.readouterr().err
