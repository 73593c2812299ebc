"""The README's whole flow on a user's own image folder at its native size, through the CLI (issue 17):
train-base -> evaluate-base -> space -> run -> evaluate -> bench -> export -> runtime.

The data: 10 classes of 32x32 8-bit grey PNG stripe patterns (a few hundred images); the model: a
small user CNN given as ``package.module:factory``; a tiny search budget. Every step must take its
data set, val cut and preprocessing from the model (nothing is passed twice), and the result must be
well above chance (10%).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from s2dnas.cli.main import main
from tests.data._folders import write_folder

FACTORY = "user_flow_models:small_cnn"
USER_MODELS = '''"""A user's small CNN."""
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, width=16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def small_cnn(num_classes=10, in_channels=1):
    return SmallCNN(num_classes=num_classes, in_channels=in_channels)
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image folder, the user's model module on sys.path."""
    root = tmp_path_factory.mktemp("user_flow")
    write_folder(root / "digits", classes=10, per_class=30, test_per_class=8, size=32, kind="L")
    (root / "models").mkdir()
    (root / "models" / "user_flow_models.py").write_text(USER_MODELS)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root / "models"))
        mp.chdir(root)
        yield root


def test_readme_flow_on_a_user_image_folder(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = "imagefolder:digits"  # relative, as a user types it
    # 1. train-base: native 32x32, 1 channel, statistics of train, val 10% (30 of 300)
    assert main(["train-base", "--model", FACTORY, "--dataset", data, "--epochs", "6", "--lr", "0.05",
                 "--batch-size", "32", "--out", "base", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("epoch ") == 6  # one line per epoch without the bar
    meta = json.loads(Path("base/model.json").read_text())
    assert meta["data"]["preprocessing"]["input_size"] == [32, 32] and meta["data"]["preprocessing"]["channels"] == 1
    assert (meta["data"]["val_size"], meta["data"]["augment"]) == (30, "crop")
    assert meta["test_accuracy"] > 0.6, meta["test_accuracy"]

    # 2. evaluate-base: data set and preprocessing from the weights (no --dataset)
    assert main(["evaluate-base", "--weights", "base", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["input_shape"] == [1, 32, 32] and result["num_examples"] == 80
    assert result["accuracy"] == pytest.approx(meta["test_accuracy"])

    # 3. space: the input shape read from the image folder
    assert main(["space", "--model", FACTORY, "--dataset", data, "--stages", "2", "--ratio-grid", "4"]) == 0
    assert "input 1x32x32 | 10 classes" in capsys.readouterr().out

    # 4. run: a tiny search on the base; val cut and preprocessing from the base
    sets = {"model.name": FACTORY, "model.weights": "base/model.safetensors", "data.dataset": data,
            "space.num_stages": "2", "space.ratio_grid": "4", "search.strategy": "random", "search.budget": "2",
            "search.candidate_epochs": "1", "search.candidate_limit_train": "64", "final_epochs": "2",
            "train.limit_train": "null", "train.lr": "0.05", "data.batch_size": "32",
            "calibration.tolerance": "0.05", "device": "cpu"}
    argv = ["run", "--out", "run", "--no-progress"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    capsys.readouterr()
    spec = json.loads(Path("run/model/model.json").read_text())
    assert spec["data"]["val_size"] == 30 and spec["data"]["preprocessing"] == meta["data"]["preprocessing"]

    # 5. evaluate: test, then val (the run's cut, taken from the model)
    assert main(["evaluate", "run/model", "--device", "cpu"]) == 0
    report = json.loads(Path("run/model/evaluation_test.json").read_text())
    assert report["num_examples"] == 80 and report["accuracy"] > 0.5, report["accuracy"]
    assert main(["evaluate", "run/model", "--split", "val", "--device", "cpu"]) == 0
    assert json.loads(Path("run/model/evaluation_val.json").read_text())["num_examples"] == 30
    capsys.readouterr()
    assert main(["evaluate", "run/model", "--split", "val", "--val-size", "12", "--device", "cpu"]) == 2
    assert "Expected the val split" in capsys.readouterr().err  # another cut would hold training images

    # 6. bench, as the README writes it: data set and base from the model directory
    assert main(["bench", "run/model", "--num-images", "16", "--batch-sizes", "8", "--repeats", "1"]) == 0
    # the run's relative model.weights, resolved from where the run started (here: env)
    assert f"base user_flow_models:small_cnn ({env / 'base' / 'model.safetensors'})" in capsys.readouterr().out

    # 7. export and 8. the numpy runtime on raw uint8 images, as a user has them
    pytest.importorskip("onnxruntime")
    assert main(["export", "run/model", "--out", "onnx"]) == 0
    from PIL import Image
    from s2dnas_runtime import OnnxDynamicNet

    files = sorted(Path("digits/val").glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(f)) for f in files])  # (80, 32, 32) uint8
    labels = np.array([int(f.parent.name[1:]) for f in files])
    net = OnnxDynamicNet("onnx")
    logits, exits = net(net.preprocess(images))
    runtime_acc = float((logits.argmax(1) == labels).mean())
    assert runtime_acc == pytest.approx(report["accuracy"], abs=1.5 / 80)
