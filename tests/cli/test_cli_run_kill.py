"""``s2dnas run`` killed with SIGKILL in the middle of its search, then resumed (issue 5 item 6, issue 7
items 3 and 4): nothing evaluated is lost or scored twice, and the run ends exactly as an
uninterrupted one with the same seed (same candidates, bit-identical rewards, same final numbers)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _synthetic import write_pattern_dataset
from s2dnas.cli.main import main
from s2dnas.search import Journal, sample_key

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

FACTORY = "tests._models:toy_cnn"
ROOT = Path(__file__).resolve().parents[2]  # the repository, where the subprocesses import tests._models
BUDGET, VAL_SIZE = 5, 100
TIMEOUT = 120  # seconds, for any one subprocess (the whole test takes ~30 s on a busy 2-core machine)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Data, a trained base; the environment of the subprocesses."""
    root = tmp_path_factory.mktemp("cli_kill")
    (root / "data").mkdir()
    write_pattern_dataset(root / "data", n_train=400, n_test=120, seed=1)
    child_env = {**os.environ, "S2DNAS_DATA": str(root / "data"), "OMP_NUM_THREADS": "1",
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2DNAS_DATA", str(root / "data"))
        assert main(["train-base", "--model", FACTORY, "--epochs", "1", "--limit-train", "256", "--val-size",
                     str(VAL_SIZE), "--out", str(root / "base"), "--no-progress"]) == 0
        yield root, child_env


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
    """results.json without wall-clock times and the machine (the threads of the process)."""
    drop = {"timings", "export_dir", "machine"}
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
    scored_before = Journal(journal).records()
    killed_work = sum(r["seconds"] for r in scored_before)
    # resumed in this process (a second interpreter start costs ~10 s on a busy machine)
    assert main(run_args(root, killed, "--resume")) == 0
    check_same_run(killed, straight)
    # the search's time counts the killed process's candidates too, not only this process's clock
    resumed_work = sum(r["seconds"] for r in Journal(journal).records()[len(scored_before):])
    timings = json.loads((killed / "results.json").read_text())["timings"]
    assert killed_work > 0 and timings["search_candidate_seconds"] == pytest.approx(killed_work + resumed_work)


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
