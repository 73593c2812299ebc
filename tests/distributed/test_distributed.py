"""Multi-process training and search on torch.distributed (gloo, 2 CPU processes on 127.0.0.1).

Three launches, each a few seconds of work after ~10 s of start-up on a busy machine:
``torchrun ... -m s2dnas train-base`` (the real CLI), ``torchrun`` with a user error, and one
``torch.multiprocessing`` job that drives train_base, train_multistage and the distributed search
through the library. The single-process paths are covered by tests/train and tests/search.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import _dist_workers as workers
from _launch import HERE, TIMEOUT, child_env, free_port, torchrun
from s2dnas import distributed
from s2dnas.distributed.training import _sharded_loader
from s2dnas.cli.main import main
from s2dnas.data import fashion_mnist
from s2dnas.errors import ConfigError, RunDirError
from s2dnas.search.rl import RLController
from s2dnas.search.strategy import SearchStrategy
from s2dnas.train.checkpoint import load_checkpoint
from tests._models import ToyCNN

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not (torch_dist.is_available() and torch_dist.is_gloo_available()),
                       reason="torch.distributed with gloo is not available"),
]

TRAIN_ARGS = ["--model", "tests._models:toy_cnn", "--epochs", "2", "--batch-size", "16", "--lr", "0.1",
              "--val-size", "64", "--no-progress", "--device", "cpu"]


def _spawn(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(rank, 2, port, *args)`` in 2 spawned processes; a child's exception fails the test."""
    context = mp.start_processes(fn, args=(2, free_port(), *args), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"spawned processes timed out after {TIMEOUT} s")


# ------------------------------------------------------------------ single-process behaviour

def test_helpers_are_no_ops_in_a_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.init_distributed()
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    assert not distributed.is_distributed() and distributed.is_main()
    distributed.barrier()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    assert distributed.run_on_main(lambda: 5) == 5
    distributed.broadcast_module(ToyCNN(num_classes=2))
    assert distributed.device_for(info, "cpu") == torch.device("cpu")
    assert distributed.claim_report()
    model = ToyCNN(num_classes=2)
    assert distributed.wrap_ddp(model, torch.device("cpu")) is model and distributed.unwrap(model) is model
    distributed.average_buffers(model)
    distributed.cleanup()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_distributed().world_size == 1


def test_bad_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        distributed.init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match="RANK in \\[0, 2\\)"):
        distributed.init_distributed()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "-3")
    with pytest.raises(ConfigError, match="S2DNAS_DIST_TIMEOUT_MINUTES to be a positive number"):
        distributed.init_distributed()


def test_device_for_follows_the_local_rank() -> None:
    gloo = distributed.DistInfo(rank=1, world_size=2, local_rank=1, backend="gloo")
    nccl = dataclasses.replace(gloo, backend="nccl")
    assert distributed.device_for(gloo, "cpu") == torch.device("cpu")
    assert distributed.device_for(nccl, "cuda") == torch.device("cuda", 1)
    assert distributed.device_for(nccl, "cuda:0") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="S2DNAS_DIST_BACKEND=gloo"):
        distributed.device_for(nccl, "cpu")


def test_sharded_loader_keeps_the_steps_per_epoch_and_covers_the_data() -> None:
    from torch.utils.data import TensorDataset

    for n, batch, world, limit in [(100, 32, 2, None), (257, 64, 4, None), (300, 30, 3, 250), (10, 8, 4, 9)]:
        data = TensorDataset(torch.arange(n))
        shares = [[b[0].tolist() for b in _sharded_loader(
            data, batch_size=batch, seed=7, epoch=3, limit=limit, rank=r, world_size=world)] for r in range(world)]
        used = min(n, limit or n)
        assert all(len(s) == -(-used // batch) for s in shares)  # the single-process step count
        assert {i for s in shares for b in s for i in b} == set(range(used))
        again = [b[0].tolist() for b in _sharded_loader(
            data, batch_size=batch, seed=7, epoch=3, limit=limit, rank=0, world_size=world)]
        assert again == shares[0]  # a pure function of (seed, epoch): resume replays it
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        _sharded_loader(TensorDataset(torch.arange(8)), batch_size=5, seed=0, epoch=0, limit=None,
                                    rank=0, world_size=2)


def test_rl_controller_takes_several_pending_samples() -> None:
    _, space, _ = workers.toy_setup()
    controller = RLController(space.decisions, kind="factorized", seed=0)
    asked = [controller.ask() for _ in range(3)]
    assert len(controller.pending) == 3
    for sample, reward in zip(asked, (0.1, 0.5, 0.3)):
        controller.tell(sample, reward)
    assert controller.pending == [] and controller.num_updates == 3


def test_distributed_strategy_in_one_process_is_the_single_process_search(tmp_path: Path) -> None:
    _, space, _ = workers.toy_setup()
    ev = workers.FakeEvaluator(0)
    ours = workers.make_strategy(space, ev, tmp_path / "ours", 4).run()
    reference = SearchStrategy(space, ev, RLController(space.decisions, kind="factorized", seed=0), budget=4,
                               run_dir=tmp_path / "ref", progress=False).run()
    assert [r["sample"] for r in ours.records] == [r["sample"] for r in reference.records]


def test_cli_refuses_commands_that_do_not_run_distributed(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("s2dnas: error:") == 1 and "launch it without torchrun" in err
    monkeypatch.setenv("RANK", "1")  # the other ranks exit with the same code, silently
    assert main(["demo"]) == 2
    assert capsys.readouterr() == ("", "")


def test_cli_leaves_errors_from_rank_0_to_rank_0(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import s2dnas.cli.run as cli_run

    def refused(args: Any) -> int:
        raise RunDirError("Output directory x already holds a run")

    monkeypatch.setattr(cli_run, "run", refused)  # the parser binds it when main() builds it
    monkeypatch.setattr(distributed, "init_distributed", lambda **kw: distributed.DistInfo())
    monkeypatch.setattr(distributed, "claim_report", lambda: True)  # this rank would win the claim
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed, "from_main", lambda err: True)  # run_on_main handed it over
    assert main(["run"]) == 2
    assert capsys.readouterr() == ("", "")  # rank 0 prints it
    monkeypatch.setattr(distributed, "from_main", lambda err: False)  # this rank's own error
    assert main(["run"]) == 2
    assert capsys.readouterr().err == "s2dnas: error: Output directory x already holds a run\n"


# ------------------------------------------------------------------ torchrun: the real CLI

@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fmnist")
    workers.write_fashion_mnist(directory, n_train=320, n_test=64)
    return directory


def test_torchrun_train_base(tmp_path: Path, fmnist_dir: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str], seed: int) -> None:
    hashes, out = tmp_path / "hashes", tmp_path / "out"
    env = child_env(tmp_path, S2DNAS_DATA=str(fmnist_dir), S2DNAS_TEST_DUMP_WEIGHTS=str(hashes))
    done = torchrun(["train-base", *TRAIN_ARGS, "--out", str(out)], env=env, cwd=tmp_path, module="_dump_main")
    assert done.returncode == 0, done.stderr
    # rank 0 alone prints (one line per epoch, then the metrics), writes the files, once
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["epoch 1/2", "epoch 2/2"], done.stdout
    assert json.loads(lines[-1])["model"] == "tests._models:toy_cnn", done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json", "model.json",
                                                    "model.safetensors"]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    # both ranks hold the same weights, and they are the ones written
    digests = {p.name: p.read_text().strip() for p in hashes.iterdir()}
    assert sorted(digests) == ["train-base-rank0.sha256", "train-base-rank1.sha256"]
    assert len(set(digests.values())) == 1
    assert workers.state_digest(load_file(str(out / "model.safetensors"))) == digests["train-base-rank0.sha256"]
    # the same global batch in one process reaches the same accuracy on this easy task
    metrics = json.loads((out / "metrics.json").read_text())
    monkeypatch.setenv("S2DNAS_DATA", str(fmnist_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.syspath_prepend(str(HERE))
    assert main(["train-base", *TRAIN_ARGS, "--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert abs(metrics["val_accuracy"] - single["val_accuracy"]) <= 0.05, (metrics["history"], single["history"])
    assert metrics["val_accuracy"] >= 0.9
    assert len(metrics["history"]) == len(single["history"]) == 2


def test_torchrun_user_error_prints_one_line(tmp_path: Path, fmnist_dir: Path) -> None:
    # 15 is not a multiple of 2 processes: every rank raises the same ConfigError
    args = ["train-base", *TRAIN_ARGS, "--batch-size", "15", "--out", str(tmp_path / "out")]
    done = torchrun(args, env=child_env(tmp_path, S2DNAS_DATA=str(fmnist_dir)), cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.count("s2dnas: error:") == 1, done.stderr
    assert "multiple of the number of processes (2)" in done.stderr
    # torchrun's summary: the first worker to fail exited with 2 (torchrun then stops the other one)
    assert re.search(r"exitcode\s*:\s*2\b", done.stderr), done.stderr
    assert "Traceback" not in done.stderr.split("torch/distributed/elastic")[0]  # no worker traceback


# ------------------------------------------------------------------ library: train_base, train_multistage, search

@pytest.fixture(scope="module")
def library_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    out = tmp_path_factory.mktemp("library")
    _spawn(workers.library_worker, str(out))
    yield out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_collectives(library_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, reports = library_run
    for report in reports:
        assert report["objects"] == [{"rank": 0}, {"rank": 1}]
        assert report["broadcast"] == "from 0"
        assert report["sum"] == [3.0]
    assert sum(reports[0]["claims"]) == 1 and reports[0]["claims"] == reports[1]["claims"]
    torch.manual_seed(100)  # rank 0's model
    model = ToyCNN(num_classes=2)
    model.bn1.running_mean.add_(1.0)
    assert reports[0]["module"] == reports[1]["module"] == workers.state_digest(model.state_dict())
    # rank 0's error reaches rank 1, marked so that rank 0 alone reports it
    assert [r["relayed"] for r in reports] == [["rank 0 says no", False], ["rank 0 says no", True]]


def test_train_base_distributed_resume(library_run: tuple[Path, list[dict[str, Any]]], seed: int,
                                       tmp_path: Path) -> None:
    out, reports = library_run
    a, b = (r["base"] for r in reports)
    assert a == b  # same weights (incl. batch-norm statistics), same reduced metrics on both ranks
    assert [h["epoch"] for h in a["history"]] == [1, 2]
    assert load_checkpoint(out / "base" / "checkpoint.pt")["epoch"] == 2
    assert not [p.name for p in (out / "base").iterdir() if p.name.endswith(".tmp")]
    # single process, same recipe (1 epoch, then resumed to 2): same accuracy on this easy task
    from s2dnas.train.base import train_base

    _, _, splits = workers.toy_setup()
    kw: dict[str, Any] = {"out_dir": tmp_path, "model_name": "toy", "device": torch.device("cpu"), "progress": False}
    torch.manual_seed(0)
    train_base(ToyCNN(num_classes=2), splits, config=dataclasses.replace(workers.BASE_CONFIG, epochs=1), **kw)
    single = train_base(ToyCNN(num_classes=2), splits, config=workers.BASE_CONFIG, resume=True, **kw)
    assert abs(single["val_accuracy"] - a["val_accuracy"]) <= 0.05


def test_train_multistage_distributed_resume(library_run: tuple[Path, list[dict[str, Any]]], seed: int) -> None:
    out, reports = library_run
    a, b = (r["multistage"] for r in reports)
    assert a == b
    assert a["epochs"] == 2 and [h["epoch"] for h in a["history"]] == [1, 2]
    assert [p.name for p in (out / "ms").iterdir()] == ["checkpoint.pt"]
    from s2dnas.train.multistage import train_multistage

    base, space, splits = workers.toy_setup()
    single = train_multistage(space.build(), splits, config=workers.MS_CONFIG, teacher=base, progress=False)
    assert single["val_accuracy"] is not None
    assert all(abs(x - y) <= 0.05 for x, y in zip(single["val_accuracy"], a["val_accuracy"]))


def test_distributed_search_journal_and_resume(library_run: tuple[Path, list[dict[str, Any]]],
                                               tmp_path: Path) -> None:
    out, reports = library_run
    a, b = (r["search"] for r in reports)
    assert a == b  # every rank gets rank 0's result
    lines = (out / "resumed" / "journal.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 and a["num_records"] == 4
    # the first two lines are kept byte for byte by the resumed run
    assert (out / "journal-after-2.jsonl").read_text().splitlines() == lines[:2]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert len({json.dumps(r["sample"], sort_keys=True) for r in records}) == 4
    # one candidate per rank, journalled in rank order (a round may score fewer: repeats are not re-scored)
    assert [r["metrics"]["rank"] for r in records[:2]] == [0, 1]
    assert {r["metrics"]["rank"] for r in records} == {0, 1}
    # the journal format of the single-process search
    _, space, _ = workers.toy_setup()
    reference = SearchStrategy(space, workers.FakeEvaluator(0), RLController(space.decisions, kind="factorized",
                                                                             seed=0),
                               budget=1, run_dir=tmp_path, progress=False).run()
    assert [sorted(r) for r in records] == [sorted(reference.records[0])] * 4
    # a resumed run replays exactly what an uninterrupted one does
    straight = [json.loads(line) for line in (out / "straight" / "journal.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in straight] == [r["sample"] for r in records]
    assert a["best"] == a["straight_best"]
    # rank 0's stop (too many failed candidates) is raised on every rank; the failures are journalled
    assert a["error"] is not None and "2 candidates in a row failed" in a["error"]
    failing = (out / "failing" / "journal.jsonl").read_text().splitlines()
    assert len(failing) == 2 and all(json.loads(line)["metrics"]["invalid"] for line in failing)
