"""``s2dnas run`` killed with SIGKILL in the middle of its search, then resumed (issue 5 item 6, issue 7
items 3 and 4): nothing evaluated is lost or scored twice, and the run ends exactly as an
uninterrupted one with the same seed (same candidates, bit-identical rewards, same final numbers)."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from s2dnas.cli.main import main
from s2dnas.search import Journal, sample_key

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

FACTORY = "tests_toy_models_kill:toy_cnn"
BUDGET, VAL_SIZE = 5, 100
TIMEOUT = 120  # seconds, for any one subprocess (the whole test takes ~30 s on a busy 2-core machine)

TOY_MODELS = '''"""A tiny base model for the s2dnas kill/resume test."""
import torch
from torch import nn


class ToyCNN(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def toy_cnn(num_classes=10, in_channels=1):
    return ToyCNN(num_classes=num_classes, in_channels=in_channels)
'''


def write_fashion_mnist(directory: Path, *, n_train: int = 400, n_test: int = 120) -> None:
    """Fashion-MNIST-shaped IDX files, 4 easy classes (stripes of two orientations, checkerboard, grey)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:28, 0:28]
    patterns = [(yy // 2) % 2 * 200, (xx // 2) % 2 * 200, (yy // 2 + xx // 2) % 2 * 200, np.full((28, 28), 100)]
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % len(patterns)
        rng.shuffle(labels)
        images = np.clip(rng.integers(0, 50, size=(n, 28, 28)) + np.stack([patterns[k] for k in labels]), 0, 255)
        for kind, array, magic in (("images-idx3", images, 0x00000803), ("labels-idx1", labels, 0x00000801)):
            header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
            (directory / f"{prefix}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Data, the toy model module, a trained base; the environment of the subprocesses."""
    root = tmp_path_factory.mktemp("cli_kill")
    for sub in ("data", "models"):
        (root / sub).mkdir()
    write_fashion_mnist(root / "data")
    (root / "models" / "tests_toy_models_kill.py").write_text(TOY_MODELS)
    child_env = {**os.environ, "S2DNAS_DATA": str(root / "data"), "OMP_NUM_THREADS": "1",
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "models"), os.environ.get("PYTHONPATH")]))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2DNAS_DATA", str(root / "data"))
        mp.syspath_prepend(str(root / "models"))
        assert main(["train-base", "--model", FACTORY, "--epochs", "1", "--limit-train", "256", "--val-size",
                     str(VAL_SIZE), "--out", str(root / "base"), "--no-progress"]) == 0
        yield root, child_env
    torch.set_num_threads(threads)


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    sets = {"model.weights": str(root / "base" / "model.safetensors"), "model.name": FACTORY,
            "search.budget": str(BUDGET), "search.candidate_limit_train": "256", "train.limit_train": "256",
            "final_epochs": "1", "data.val_size": str(VAL_SIZE), "device": "cpu", "seed": "3"}
    args = ["run", "--out", str(out), "--no-progress"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "s2dnas", *args], env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


def kill_when(process: subprocess.Popen, journal: Path, at_least: int) -> int:
    """SIGKILL ``process`` as soon as ``journal`` has ``at_least`` lines; return its exit code."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while lines(journal) < at_least and process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the journal did not reach {at_least} lines within {TIMEOUT} s")
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        return process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:  # never leave a child behind
            process.kill()
            process.wait()


def search_trace(out: Path) -> list[tuple[str, float]]:
    return [(sample_key(r["sample"]), r["reward"]) for r in Journal(out / "search" / "journal.jsonl").records()]


def comparable(results: dict) -> dict:
    """results.json without wall-clock times."""
    drop = {"timings", "export_dir"}
    out = {k: v for k, v in results.items() if k not in drop}
    out["final_training"] = {k: v for k, v in results["final_training"].items() if k != "seconds"}
    return out


@pytest.fixture(scope="module")
def straight(env: tuple[Path, dict[str, str]]) -> Path:
    """The same run without interruption (in this process: the result must not depend on the process)."""
    root, _ = env
    out = root / "straight"
    assert main(run_args(root, out)) == 0
    return out


def check_same_run(killed: Path, straight: Path) -> None:
    trace = search_trace(killed)
    assert len(trace) == BUDGET
    assert len({key for key, _ in trace}) == BUDGET  # no sample scored twice
    assert trace == search_trace(straight)  # same candidates, same order, bit-identical rewards
    assert json.loads((killed / "search" / "result.json").read_text()) == \
        json.loads((straight / "search" / "result.json").read_text())
    assert comparable(json.loads((killed / "results.json").read_text())) == \
        comparable(json.loads((straight / "results.json").read_text()))


def test_sigkill_mid_search_then_resume_equals_uninterrupted(env: tuple[Path, dict[str, str]],
                                                             straight: Path) -> None:
    root, child_env = env
    killed = root / "killed"
    journal = killed / "search" / "journal.jsonl"
    log = root / "killed.log"
    code = kill_when(start(run_args(root, killed), child_env, log), journal, 2)
    assert code == -signal.SIGKILL, log.read_text()
    assert 2 <= lines(journal) < BUDGET
    assert not (killed / "results.json").exists()
    # resumed in this process (a second interpreter start costs ~10 s on a busy machine)
    assert main(run_args(root, killed, "--resume")) == 0
    check_same_run(killed, straight)


@pytest.mark.slow
def test_repeated_sigkill_with_resume_in_subprocesses(env: tuple[Path, dict[str, str]], straight: Path) -> None:
    root, child_env = env
    killed = root / "killed-twice"
    journal = killed / "search" / "journal.jsonl"
    log = root / "killed-twice.log"
    assert kill_when(start(run_args(root, killed), child_env, log), journal, 2) == -signal.SIGKILL, log.read_text()
    kill_when(start(run_args(root, killed, "--resume"), child_env, log), journal, 4)  # may land after the search
    process = start(run_args(root, killed, "--resume"), child_env, log)
    try:
        assert process.wait(timeout=TIMEOUT) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    check_same_run(killed, straight)
