"""Crashes and determinism of ``s2dnas train-base`` and ``s2dnas space`` (issue 7, items 3 and 4).

The kill, Ctrl-C and determinism tests run the real command in fresh processes
(``python -m s2dnas``) on tiny synthetic Fashion-MNIST files and the tiny CNN of
test_cli_bad_inputs.py, one thread each. The NaN test runs in this process.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from s2dnas.cli.main import main
from s2dnas.data import fashion_mnist
from s2dnas.train.checkpoint import load_checkpoint
from _synthetic import write_band_dataset
from test_cli_bad_inputs import MODELS, MODELS_SOURCE, N_TEST, N_TRAIN, TINY

EPOCHS = 30  # long enough (about 2 s on one busy core) to kill the run in the middle
TIMEOUT = 180.0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/`` (the tiny CNN's module) and ``data/`` (Fashion-MNIST IDX files) for the child processes."""
    root = tmp_path_factory.mktemp("crash")
    (root / "models").mkdir()
    (root / "models" / f"{MODELS}.py").write_text(MODELS_SOURCE)
    (root / "data").mkdir()
    write_band_dataset(root / "data", n_train=N_TRAIN, n_test=N_TEST)
    return root


def _env(workspace: Path, *, hash_seed: str = "0") -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workspace / "home"),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": hash_seed,
            "S2DNAS_DATA": str(workspace / "data"), "PYTHONPATH": str(workspace / "models")}


def _train_base(out: Path, *extra: str, epochs: int = EPOCHS) -> list[str]:
    return [sys.executable, "-m", "s2dnas", "train-base", "--model", TINY, "--epochs", str(epochs),
            "--val-size", "32", "--batch-size", "16", "--seed", "3", "--no-progress", "--device", "cpu",
            "--out", str(out), *extra]


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return proc


def _start_and_wait_for_checkpoint(cmd: list[str], env: dict[str, str], ckpt: Path) -> subprocess.Popen[str]:
    """Start ``cmd`` and return once ``ckpt`` exists (the first epoch is done), failing if the run ends first."""
    # A shell without job control starts background jobs with SIGINT ignored, and Python then never
    # raises KeyboardInterrupt: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + TIMEOUT
    while not ckpt.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before writing {ckpt}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {ckpt} after {TIMEOUT} s")
        time.sleep(0.005)
    return proc


def _same_weights(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for key, tensor in ta.items():
        assert torch.equal(tensor, tb[key]), key


def _metrics(run: Path) -> dict:
    """metrics.json without its clocks (the run's, the epochs')."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("seconds_this_run")
    metrics.pop("train_seconds")
    metrics["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]]
    return metrics


@pytest.fixture(scope="module")
def reference_runs(workspace: Path) -> tuple[Path, Path]:
    """Two uninterrupted runs of the same command, each in a fresh process with its own hash seed."""
    runs = workspace / "ref-a", workspace / "ref-b"
    for out, hash_seed in zip(runs, ("1", "2")):
        _run(_train_base(out), _env(workspace, hash_seed=hash_seed))
    return runs


# --- item 4: determinism ---------------------------------------------------------------------

def test_train_base_twice_in_fresh_processes_is_identical(reference_runs: tuple[Path, Path]) -> None:
    a, b = reference_runs
    _same_weights(a / "model.safetensors", b / "model.safetensors")
    assert _metrics(a) == _metrics(b)
    assert json.loads((a / "model.json").read_text()).keys() == json.loads((b / "model.json").read_text()).keys()


def test_space_arch_out_twice_is_identical(workspace: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Once in a fresh process (its own hash seed), once in this one (after other tests): same JSON, same report."""
    argv = ["space", "--model", "resnet20", "--dataset", "fashion-mnist", "--arch-out"]
    fresh = tmp_path / "fresh.json"
    proc = _run([sys.executable, "-m", "s2dnas", *argv, str(fresh)], _env(workspace, hash_seed="7"))
    here = tmp_path / "here.json"
    assert main([*argv, str(here)]) == 0
    assert fresh.read_bytes() == here.read_bytes()
    assert proc.stdout.replace(str(fresh), "FILE") == capsys.readouterr().out.replace(str(here), "FILE")
    assert json.loads(here.read_text())["model"] == "resnet20"


# --- item 3: crashes -------------------------------------------------------------------------

def test_sigkill_at_a_random_point_then_resume_equals_uninterrupted(workspace: Path, tmp_path: Path,
                                                                    reference_runs: tuple[Path, Path]) -> None:
    """SIGKILL somewhere after the first checkpoint (mid-epoch, mid-write: anywhere), then --resume."""
    out, env = tmp_path / "killed", _env(workspace)
    ckpt = out / "checkpoint.pt"
    proc = _start_and_wait_for_checkpoint(_train_base(out), env, ckpt)
    # Time one epoch (the checkpoint is replaced by a new file every epoch), then kill at a random
    # moment within the first 60% of the epochs left, so the kill lands while training runs.
    first = ckpt.stat().st_ino
    t0 = time.monotonic()
    while ckpt.stat().st_ino == first and proc.poll() is None:
        time.sleep(0.002)
    epoch_seconds = time.monotonic() - t0
    seed = random.randrange(2**32)
    delay = random.Random(seed).uniform(0.0, 0.6 * (EPOCHS - 2) * epoch_seconds)
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    where = f"(kill after {delay:.3f} s, epoch ~{epoch_seconds:.3f} s, random seed {seed})"
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill {where}"
    # The kill leaves the last complete checkpoint: it loads (weights only) and the run is unfinished.
    state = load_checkpoint(ckpt)
    assert 2 <= state["epoch"] < EPOCHS and len(state["history"]) == state["epoch"], where
    assert not (out / "model.safetensors").exists()

    _run(_train_base(out, "--resume"), env)
    reference = reference_runs[0]
    _same_weights(out / "model.safetensors", reference / "model.safetensors")
    assert _metrics(out) == _metrics(reference), where


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    ckpt = out / "checkpoint.pt"
    proc = _start_and_wait_for_checkpoint(_train_base(out, epochs=1000), _env(workspace), ckpt)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1] == f"s2dnas: interrupted; resume with: s2dnas train-base ... --out {out} --resume", err
    assert "Traceback" not in err
    state = load_checkpoint(ckpt)  # loadable, weights only
    assert 1 <= state["epoch"] < 1000
    assert not list(out.glob(".*.tmp")), "an interrupted write must remove its temporary file"


def test_nan_loss_stops_train_base_and_keeps_the_last_good_checkpoint(
        workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two good epochs, then resumed with an absurd learning rate: the run stops at the first
    non-finite loss or weights, and every file of the good epochs stays as it was."""
    monkeypatch.setenv("S2DNAS_DATA", str(workspace / "data"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.syspath_prepend(str(workspace / "models"))
    out = tmp_path / "nan"
    args = ["train-base", "--model", TINY, "--seed", "0", "--val-size", "32", "--batch-size", "16", "--no-progress",
            "--device", "cpu", "--out", str(out)]
    assert main([*args, "--epochs", "2", "--lr", "0.05"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    code = main([*args, "--epochs", "4", "--lr", "1e6", "--resume"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    # Either a step's loss is NaN, or an epoch's last step made the weights NaN before its checkpoint.
    assert err.startswith(("s2dnas: error: Loss became nan at epoch 3", "s2dnas: error: Weights became NaN")), err
    assert "training stopped" in err and "last good checkpoint is kept" in err
    assert "lower the learning rate (--lr)" in err and "--resume" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # checkpoint, weights, metrics untouched
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
