"""End-to-end smoke test of ``s2dnas run`` (issue 5, "Done when"): synthetic Fashion-MNIST IDX files, a
tiny user-factory base model trained by ``s2dnas train-base``, then the whole pipeline with 3 search
candidates and 1 epoch of final training, for each search strategy; plus the run-directory guard and
``--resume`` of a finished run."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import s2dnas
from _synthetic import write_pattern_dataset
from s2dnas._device import cpu_model
from s2dnas.cli.main import main
from s2dnas.config import load_config
from s2dnas.data import build_splits, make_loader
from s2dnas.runner import load_run_base
from s2dnas.search import Journal
from s2dnas.search.random import RandomController
from s2dnas.train.checkpoint import load_weights, save_weights

N_TRAIN, N_TEST, VAL_SIZE = 400, 120, 100
FACTORY = "tests._models:toy_cnn"  # a user model given as package.module:factory (stored with the weights)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Data files ($S2DNAS_DATA)."""
    root = tmp_path_factory.mktemp("cli_run")
    (root / "data").mkdir()
    write_pattern_dataset(root / "data", n_train=N_TRAIN, n_test=N_TEST)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2DNAS_DATA", str(root / "data"))
        yield root


@pytest.fixture(scope="module")
def base(env: Path) -> Path:
    out = env / "base"
    assert main(["train-base", "--model", FACTORY, "--epochs", "1", "--limit-train", "256", "--val-size",
                 str(VAL_SIZE), "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"] == FACTORY  # the factory name travels with the weights
    return out / "model.safetensors"


def run_args(out: Path, base: Path, *extra: str) -> list[str]:
    sets = {"model.weights": str(base), "model.name": FACTORY, "search.budget": "3",
            "search.candidate_limit_train": "128", "train.limit_train": "256", "final_epochs": "1",
            "data.val_size": str(VAL_SIZE), "device": "cpu"}
    args = ["run", "--out", str(out), "--no-progress"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


RUN_FILES = ["config.yaml", "base.json", "search/journal.jsonl", "search/result.json", "final/checkpoint.pt",
             "model/model.json", "export/manifest.json", "results.json", "report.md", "reward_curve.png",
             "accuracy_vs_macs.png", "exit_histogram.png"]
SUPERNET = ["--set", "supernet.epochs=1", "--set", "supernet.limit_train=128", "--set", "supernet.num_sampled=1"]
STRATEGIES = {"rl": [], "random": ["--set", "search.strategy=random"],
              "oneshot": ["--set", "search.strategy=oneshot", *SUPERNET],
              # random search over the super-network's scores: the control for the one-shot controller
              "oneshot-random": ["--set", "search.strategy=oneshot", "--set", "search.controller=random", *SUPERNET]}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_run_end_to_end(env: Path, base: Path, strategy: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = env / f"run-{strategy}"
    assert main(run_args(out, base, *STRATEGIES[strategy])) == 0
    assert "test accuracy" in capsys.readouterr().out
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    # the times say where they were measured, and the final training's epochs are all in its time
    assert results["machine"]["cpu"] == cpu_model() and results["machine"]["torch"] == torch.__version__
    assert results["machine"]["device"] == "cpu" and results["machine"]["world_size"] == 1
    assert f"; last process on {cpu_model()}, " in (out / "report.md").read_text()
    timings = results["timings"]
    assert 0 < timings["final_training_epoch_seconds"] <= timings["final_training_seconds"]
    assert 0 < timings["search_candidate_seconds"] <= timings["search_seconds"]
    if strategy.startswith("oneshot"):  # trained as the run's first step; the final network starts from it
        meta = json.loads((out / "supernet" / "supernet.json").read_text())
        assert meta["epoch"] == meta["epochs"] == 1 and meta["config"]["limit_train"] == 128
        assert results["final_init"] == "supernet"
        assert results["supernet"]["source"] == "trained by this run"
        assert results["supernet"]["config_hash"] == meta["config_hash"]
    else:
        assert not (out / "supernet").exists()
        assert results["final_init"] == "inherited" and results["supernet"] is None

    # the search: 3 distinct candidates, the best one chosen
    records = Journal(out / "search" / "journal.jsonl").records()
    assert len(records) == 3
    assert len({json.dumps(r["sample"], sort_keys=True) for r in records}) == 3
    if strategy.endswith("random"):  # the uniform controller's first distinct samples at the run's seed, in order
        space = load_run_base(load_config(out / "config.yaml"), torch.device("cpu")).space
        uniform = RandomController(space.decisions, seed=0, unique=True)
        assert [r["sample"] for r in records] == [uniform.ask() for _ in records]
    chosen = json.loads((out / "search" / "result.json").read_text())
    best = max(records, key=lambda r: r["reward"])
    assert chosen["architecture"] == best["architecture"] and chosen["reward"] == best["reward"]

    # every candidate was scored at the run's real target, the one the final network is calibrated to
    assert results["target_val_accuracy"] == pytest.approx(results["base"]["val_accuracy"] - 0.001)
    assert all(r["metrics"]["target_accuracy"] == results["target_val_accuracy"] for r in records)
    assert results["calibration"]["target_accuracy"] == results["target_val_accuracy"]

    # thresholds from val, numbers from test
    assert results["architecture"] == best["architecture"]
    assert results["calibration"]["num_examples"] == VAL_SIZE
    assert results["test"]["num_examples"] == N_TEST
    assert results["test"]["thresholds"] == results["calibration"]["thresholds"]
    assert results["base"]["model"] == FACTORY
    assert 0 < results["test"]["macs_ratio"] <= 1
    assert "| dynamic (ours) |" in (out / "report.md").read_text()

    # the saved model reproduces the test numbers
    dyn = s2dnas.load(out / "model")
    assert list(dyn.thresholds) == pytest.approx(results["calibration"]["thresholds"])
    splits = build_splits("fashion-mnist", data_dir=env / "data", val_size=VAL_SIZE, seed=0)
    correct, exits = 0, torch.zeros(dyn.num_stages)
    for x, y in make_loader(splits.test, batch_size=64):
        output = dyn(x)
        correct += int((output.logits.argmax(1) == y).sum())
        exits += torch.bincount(output.exit_stage, minlength=dyn.num_stages)
    assert correct == results["test"]["num_correct"]
    assert (exits / N_TEST).tolist() == pytest.approx(results["test"]["exit_fractions"])

    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest  # written by the export step (ONNX + TorchScript stages)


def test_existing_run_dir_needs_resume_or_force(env: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = env / "run-guard"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 0\n")
    capsys.readouterr()
    assert main(run_args(out, base)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("s2dnas: error:") and "--resume" in err and "--force" in err
    assert (out / "config.yaml").read_text() == "seed: 0\n"  # nothing touched
    assert main(run_args(env / "run-none", base, "--resume")) == 2
    assert "Nothing to resume" in capsys.readouterr().err


def test_resume_of_a_finished_run_skips_everything(env: Path, base: Path) -> None:
    out = env / "run-rl"
    if not (out / "results.json").exists():
        assert main(run_args(out, base)) == 0
    watched = ["config.yaml", "base.json", "search/journal.jsonl", "search/controller.pt", "search/result.json",
               "final/checkpoint.pt", "model/weights.safetensors", "export/manifest.json", "results.json",
               "report.md"]
    before = {name: ((out / name).stat().st_mtime_ns, (out / name).read_bytes()) for name in watched}
    assert main(run_args(out, base, "--resume")) == 0
    after = {name: ((out / name).stat().st_mtime_ns, (out / name).read_bytes()) for name in watched}
    assert after == before  # nothing recomputed, nothing rewritten

    # a killed report is written again from results.json
    (out / "report.md").unlink()
    assert main(run_args(out, base, "--resume")) == 0
    assert (out / "report.md").read_bytes() == before["report.md"][1]


def test_resume_with_another_config_is_refused(env: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 item 6 / issue 12 item 6: a changed setting is refused (exit 2, one line), nothing rewritten."""
    out = env / "run-rl"
    if not (out / "results.json").exists():
        assert main(run_args(out, base)) == 0
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    capsys.readouterr()
    assert main(run_args(out, base, "--resume", "--set", "search.budget=5", "--set", "train.lr=0.5")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "search.budget: 3 -> 5" in err and "train.lr: 0.02 -> 0.5" in err and "--force" in err
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    # fields listed in RESUME_MAY_DIFFER (here the data folder) may change
    assert main(run_args(out, base, "--resume", "--set", f"data.data_dir={env / 'data'}")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config_hash"] == Journal(out / "search" / "journal.jsonl").records()[0]["config_hash"]


def test_force_starts_the_search_over(env: Path, base: Path) -> None:
    out = env / "run-force"
    assert main(run_args(out, base, "--set", "search.strategy=random")) == 0
    first = Journal(out / "search" / "journal.jsonl").records()
    assert main(run_args(out, base, "--force", "--set", "search.strategy=random", "--set", "search.budget=2",
                         "--set", "search.seed=7")) == 0
    records = Journal(out / "search" / "journal.jsonl").records()
    assert len(first) == 3 and len(records) == 2  # a new journal, not the old one extended or reused
    results = json.loads((out / "results.json").read_text())
    assert results["architecture"] == max(records, key=lambda r: r["reward"])["architecture"]


def test_supernet_command_resume_and_a_changed_config(env: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``s2dnas supernet`` writes the weights + metadata; --resume under another config is refused in one
    line (exit 2) and nothing is overwritten; ``s2dnas run`` then scores from it without training one."""
    out = env / "supernet"
    sets = ["--set", f"model.weights={base}", "--set", f"model.name={FACTORY}", "--set", f"data.val_size={VAL_SIZE}",
            "--set", "device=cpu", "--set", "supernet.limit_train=64", "--set", "supernet.num_sampled=0"]
    assert main(["supernet", "--out", str(out), "--no-progress", *sets, "--set", "supernet.epochs=2"]) == 0
    printed = capsys.readouterr().out
    assert "supernet epoch 1/2" in printed and "supernet epoch 2/2" in printed  # one line per epoch
    meta = json.loads((out / "supernet.json").read_text())
    assert meta["epoch"] == 2 and meta["config"]["epochs"] == 2 and meta["machine"]["torch"] == torch.__version__
    assert meta["train_seconds"] > 0 and meta["context"]["data"]["val_size"] == VAL_SIZE
    files = {p: p.read_bytes() for p in out.iterdir()}

    assert main(["supernet", "--out", str(out), "--no-progress", *sets, "--set", "supernet.epochs=2", "--resume"]) == 0
    assert "supernet epoch" not in capsys.readouterr().out  # finished: nothing trained again
    for extra in (["--set", "supernet.epochs=3", "--resume"], ["--set", "supernet.epochs=2"]):
        assert main(["supernet", "--out", str(out), "--no-progress", *sets, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("s2dnas: error:") and "Traceback" not in err
        assert ("another configuration" in err) if "--resume" in extra else ("--resume" in err and "--force" in err)
    assert {p: p.read_bytes() for p in out.iterdir()} == files  # nothing overwritten

    # a run that loads it: no training of its own; the final network starts from the inherited weights
    run = env / "run-loaded"
    assert main(run_args(run, base, "--set", "search.strategy=oneshot", "--set", f"search.supernet={out}",
                         "--set", "final_init=inherited")) == 0
    results = json.loads((run / "results.json").read_text())
    assert not (run / "supernet").exists()
    assert results["supernet"]["source"] == str(out) and results["supernet"]["config_hash"] == meta["config_hash"]
    assert results["final_init"] == "inherited" and "supernet_seconds" in results["timings"]
    assert len(Journal(run / "search" / "journal.jsonl").records()) == 3

    # the same model with other weights (a base retrained): refused in one line before the search starts
    other = env / "other-base" / "model.safetensors"
    tensors, meta_base = load_weights(base)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first] + 0.01
    other.parent.mkdir()
    save_weights(other, tensors, meta_base)
    refused = env / "run-other-base"
    assert main(run_args(refused, other, "--set", "search.strategy=oneshot", "--set", f"search.supernet={out}")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "trained from other base weights" in err and str(base) in err and "s2dnas supernet --out NEW_DIR" in err
    assert not (refused / "search").exists() and not (refused / "model").exists()
    kept = base.read_bytes()  # the base retrained in place (same path): its digest refuses a resume
    try:
        base.write_bytes(other.read_bytes())
        assert main(["supernet", "--out", str(out), "--no-progress", *sets, "--set", "supernet.epochs=2",
                     "--resume"]) == 2
    finally:
        base.write_bytes(kept)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was trained from other base weights than this run's" in err
    assert {p: p.read_bytes() for p in out.iterdir()} == files


def test_shipped_supernet_with_a_users_base_is_refused(env: Path, base: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``search.supernet: shipped`` was trained over the shipped base weights: a run on another base is
    refused before anything is written to its directory (beyond what a refused run leaves: nothing new)."""
    out = env / "run-shipped"
    assert main(run_args(out, base, "--set", "search.strategy=oneshot", "--set", "search.supernet=shipped")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "search.supernet: shipped" in err and str(base) in err and "s2dnas supernet --out DIR" in err
    assert not (out / "search").exists() and not (out / "model").exists()


@pytest.mark.parametrize("key, value, says", [
    ("search.target", "reference", "search.target was removed: candidates are scored at the run's calibration target"),
    ("search.supernet_epochs", "1", "search.supernet_epochs was removed"),
])
def test_removed_keys_are_refused_with_what_to_use(env: Path, base: Path, key: str, value: str, says: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = env / "run-removed"
    assert main(run_args(out, base, "--set", f"{key}={value}")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
    assert not out.exists()


def test_set_takes_several_values_after_one_flag_on_every_command() -> None:
    """config/demo.yaml documents ``--set search.budget=40 train.lr=0.05``; `run` took one value per flag."""
    import argparse

    from s2dnas.cli.main import build_parser
    from s2dnas.cli.run import load_run_config

    parser = build_parser()
    args = parser.parse_args(["run", "--set", "search.budget=40", "train.lr=0.05", "--set", "train.epochs=3"])
    assert args.set == ["search.budget=40", "train.lr=0.05", "train.epochs=3"]
    cfg = load_run_config(args)
    assert (cfg.search.budget, cfg.train.lr, cfg.train.epochs) == (40, 0.05, 3)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    with_set = {name for name, p in subparsers.choices.items() if "--set" in p._option_string_actions}
    assert {"run", "supernet", "train", "space"} <= with_set
    for name in with_set:  # one definition: several values per flag, into args.set, on every command
        action = subparsers.choices[name]._option_string_actions["--set"]
        assert (type(action).__name__, action.nargs, action.dest) == ("_ExtendAction", "+", "set"), name
