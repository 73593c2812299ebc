"""``torchrun --nproc_per_node=2 -m s2dnas run`` (issue 8): the whole pipeline on 2 gloo CPU processes.

A tiny base model (trained here in one process) and 320 synthetic images; a search of 4 candidates
(2 rounds of one candidate per rank) and 1 epoch of data-parallel final training. One uninterrupted
distributed run is compared with a one-process run; another is stopped in the middle of its search,
refused without ``--resume`` (rank 0's user error ends both ranks), then resumed.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist

import _dist_workers as workers
from _launch import HERE, TIMEOUT, child_env, start_torchrun, stop, torchrun
from s2dnas.cli.main import main
from s2dnas.data import fashion_mnist
from s2dnas.search import Journal

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not (torch_dist.is_available() and torch_dist.is_gloo_available()),
                       reason="torch.distributed with gloo is not available"),
]

MODEL = "tests._models:toy_cnn"
BUDGET = 4


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Synthetic Fashion-MNIST files and a base model trained by ``s2dnas train-base`` in this process."""
    root = tmp_path_factory.mktemp("dist_run")
    (root / "data").mkdir()
    workers.write_fashion_mnist(root / "data", n_train=320, n_test=64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2DNAS_DATA", str(root / "data"))
        mp.setenv("HOME", str(root / "home"))
        mp.setattr(fashion_mnist, "DEBIAN_DIR", root / "no-debian")
        mp.syspath_prepend(str(HERE))
        assert main(["train-base", "--model", MODEL, "--epochs", "2", "--batch-size", "16", "--lr", "0.1",
                     "--val-size", "64", "--no-progress", "--device", "cpu", "--out", str(root / "base")]) == 0
        yield root


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    sets = {"model.weights": str(root / "base" / "model.safetensors"), "model.name": MODEL,
            # 30 brief epochs: a candidate takes ~1 s, not 0.03 s, so a stop after the first round lands
            # before the second ends (on a quiet machine the whole search used to finish first)
            "search.budget": str(BUDGET), "search.candidate_limit_train": "64", "search.candidate_epochs": "30",
            "train.limit_train": "128",
            "train.batch_size": "32", "final_epochs": "1", "data.val_size": "64", "device": "cpu"}
    args = ["run", "--out", str(out), "--no-progress"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


def env(root: Path) -> dict[str, str]:
    return child_env(root, S2DNAS_DATA=str(root / "data"))


@pytest.fixture(scope="module")
def straight(root: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One uninterrupted distributed run."""
    out = root / "straight"
    return out, torchrun(run_args(root, out), env=env(root), cwd=root)


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def samples(records: list[dict]) -> list[str]:
    return [json.dumps(r["sample"], sort_keys=True) for r in records]


def test_torchrun_run_writes_what_a_single_process_run_writes(
        root: Path, straight: tuple[Path, subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, done = straight
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("test accuracy"), done.stdout  # rank 0 alone prints
    assert "s2dnas: error" not in done.stderr
    records = Journal(out / "search" / "journal.jsonl").records()
    assert [r["index"] for r in records] == list(range(BUDGET))
    assert len(set(samples(records))) == BUDGET  # every candidate scored once
    assert not any(r["metrics"].get("invalid") for r in records)
    best = max(records, key=lambda r: r["reward"])
    result = json.loads((out / "search" / "result.json").read_text())
    assert (result["architecture"], result["reward"], result["num_candidates"]) == \
        (best["architecture"], best["reward"], BUDGET)
    assert json.loads((out / "results.json").read_text())["architecture"] == best["architecture"]

    # the same run in one process (2 candidates): the same files and journal format
    monkeypatch.setenv("S2DNAS_DATA", str(root / "data"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", root / "no-debian")
    monkeypatch.syspath_prepend(str(HERE))
    single = root / "single"
    assert main(run_args(root, single, "--set", "search.budget=2")) == 0
    capsys.readouterr()
    assert files(out) == files(single)  # nothing more (no rank-1 or temporary file), nothing less
    reference = Journal(single / "search" / "journal.jsonl").records()
    assert [sorted(r) for r in records] == [sorted(reference[0])] * BUDGET
    assert [sorted(r["metrics"]) for r in records] == [sorted(reference[0]["metrics"])] * BUDGET
    # the first candidate is the controller's first sample in both, scored on rank 0 as in one process
    assert records[0]["sample"] == reference[0]["sample"]
    assert records[0]["reward"] == pytest.approx(reference[0]["reward"], rel=1e-6, abs=1e-9)


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_torchrun_run_resumes_without_rescoring(root: Path,
                                                 straight: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out = root / "stopped"
    journal = out / "search" / "journal.jsonl"
    # 1. stopped (SIGTERM, as a scheduler would) once the first round is journalled
    proc = start_torchrun(run_args(root, out), env=env(root), cwd=root)
    deadline = time.monotonic() + TIMEOUT
    while lines(journal) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stop(proc)
    kept = journal.read_bytes()
    assert 2 <= kept.count(b"\n") < BUDGET and not (out / "results.json").exists(), kept

    # 2. without --resume: rank 0 refuses the directory; both ranks exit 2, the error shows once
    refused = torchrun(run_args(root, out), env=env(root), cwd=root)
    assert refused.returncode == 1  # torchrun's own code when a worker failed
    assert refused.stderr.count("s2dnas: error:") == 1, refused.stderr
    assert "already holds a run" in refused.stderr and "--resume" in refused.stderr
    assert len(re.findall(r"exitcode\s*:\s*2\b", refused.stderr)) >= 1, refused.stderr
    assert "Traceback" not in refused.stderr.split("torch/distributed/elastic")[0]  # no worker traceback
    assert journal.read_bytes() == kept

    # 3. --resume: the journalled candidates keep their lines; only the missing ones are scored
    done = torchrun(run_args(root, out, "--resume"), env=env(root), cwd=root)
    assert done.returncode == 0, done.stderr
    assert journal.read_bytes().startswith(kept)
    records = Journal(journal).records()
    assert [r["index"] for r in records] == list(range(BUDGET))
    assert len(set(samples(records))) == BUDGET
    # and it ends where the uninterrupted run ended: same candidates, same rewards, same choice
    reference = Journal(straight[0] / "search" / "journal.jsonl").records()
    assert samples(records) == samples(reference)
    assert [r["reward"] for r in records] == pytest.approx([r["reward"] for r in reference], rel=1e-6, abs=1e-9)
    chosen = [json.loads((d / "search" / "result.json").read_text())["architecture"] for d in (out, straight[0])]
    assert chosen[0] == chosen[1]
    assert (out / "report.md").is_file()


ONESHOT = ["--set", "search.strategy=oneshot", "--set", "supernet.epochs=1", "--set", "search.budget=2",
           "--set", "search.controller=factorized", "--set", "search.reward=tradeoff"]


def test_torchrun_oneshot_run_scores_with_rank_0s_super_network(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Rank 0 trains the super-network alone and sends it to rank 1; one round, one candidate per rank.
    out = root / "oneshot"
    done = torchrun(run_args(root, out, *ONESHOT), env=env(root), cwd=root)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("S2DNAS_DATA", str(root / "data"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", root / "no-debian")
    monkeypatch.syspath_prepend(str(HERE))
    single = root / "oneshot-single"
    assert main(run_args(root, single, *ONESHOT)) == 0
    capsys.readouterr()
    assert files(out) == files(single)
    weights = [(d / "supernet" / "supernet.safetensors").read_bytes() for d in (out, single)]
    assert weights[0] == weights[1]  # rank 0 trained it exactly as one process does
    # The factorized controller starts uniform and its first update leaves it so (zero advantage
    # against a baseline initialised with the first reward, zero entropy gradient at uniform): the
    # one-process run asks the same two samples. Rank 1's reward equals the one-process reward only
    # if it scored with rank 0's trained super-network (with its own untrained copy it differs).
    records = Journal(out / "search" / "journal.jsonl").records()
    reference = Journal(single / "search" / "journal.jsonl").records()
    assert samples(records) == samples(reference) and len(set(samples(records))) == 2
    assert [r["reward"] for r in records] == pytest.approx([r["reward"] for r in reference], rel=1e-6, abs=1e-9)
