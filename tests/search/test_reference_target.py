"""``search.target_from: reference``: candidates scored at the run's target moved by what the scorer
gives the space's most expensive architecture; the final calibration keeps the run's target."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from s2dnas import runner
from s2dnas.config import CalibrationTarget, config_hash, load_config, reference_target
from s2dnas.data import build_splits
from s2dnas.errors import ConfigError
from s2dnas.train.base import BaseTrainConfig, train_base
from s2dnas.train.sandwich import most_expensive
from tests._models import toy_cnn
from tests.cli._synthetic import write_pattern_dataset

VAL_SIZE = 60


@pytest.mark.parametrize("reference, base, expected", [
    (0.85, 0.94, 0.84),  # a scorer 9 points under the base: the target 9 points lower
    (0.94, 0.94, 0.93),  # a scorer at the base's level: the run's target
    (0.96, 0.94, 0.95),  # above it: higher
    (0.05, 0.99, 0.0),  # never outside [0, 1]
    (1.0, 0.5, 1.0),
])
def test_the_target_sits_as_far_under_the_reference_as_the_runs_under_the_base(reference, base, expected) -> None:
    moved = reference_target(CalibrationTarget(target_accuracy=0.93), reference_accuracy=reference,
                             base_val_accuracy=base)
    assert moved.target_accuracy == pytest.approx(expected) and moved.macs_budget is None


def test_moving_a_budget_is_refused_in_the_api_too() -> None:
    # the config refuses the combination; a caller that builds the target itself gets a ConfigError too
    with pytest.raises(ConfigError, match="accuracy target to move"):
        reference_target(CalibrationTarget(macs_budget=1000.0), reference_accuracy=0.9, base_val_accuracy=0.94)


@pytest.mark.parametrize("budget", ["calibration.macs_budget=0.3", "calibration.latency_budget=0.5"])
def test_a_budget_has_no_target_to_move(budget: str) -> None:
    overrides = ["search.target_from=reference", "search.reward=accuracy_in_budget", budget]
    if "latency" in budget:
        overrides.append("calibration.cost=latency")
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert f"search.target_from=reference moves an accuracy target, but {budget.split('=')[0]} is set" in str(info.value)


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ConfigError, match="search.target_from"):
        load_config(overrides=["search.target_from=base"])


def _cfg(data: Path, base: Path, target_from: str):
    return load_config(None, [("data.dataset", "fashion-mnist"), ("data.data_dir", str(data)),
                              ("data.val_size", VAL_SIZE), ("model.name", "tests._models:toy_cnn"),
                              ("model.weights", str(base)), ("search.strategy", "random"), ("search.budget", 2),
                              ("search.candidate_limit_train", 64), ("train.limit_train", 128), ("final_epochs", 1),
                              ("search.target_from", target_from), ("device", "cpu")])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reference")
    data = root / "data"
    data.mkdir()
    write_pattern_dataset(data, n_train=300, n_test=100)
    splits = build_splits("fashion-mnist", data_dir=str(data), val_size=VAL_SIZE, seed=0)
    torch.manual_seed(0)
    train_base(toy_cnn(), splits, config=BaseTrainConfig(epochs=3), out_dir=root / "base",
               model_name="tests._models:toy_cnn", device=torch.device("cpu"), progress=False)
    return data, root / "base" / "model.safetensors"


def _journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "search" / "journal.jsonl").read_text().splitlines() if line.strip()]


def test_candidates_are_scored_at_the_moved_target_and_the_network_at_the_runs(
        tmp_path: Path, trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    data, base = trained
    out = tmp_path / "run"
    out.mkdir()
    cfg = _cfg(data, base, "reference")
    results = runner.run_pipeline(cfg, out=out, progress=False)
    reference = json.loads((out / "search" / "reference.json").read_text())
    run_target = results["base"]["val_accuracy"] - cfg.calibration.tolerance
    assert results["target_val_accuracy"] == pytest.approx(run_target)  # the final calibration's: the run's
    assert reference["architecture"]["splits"] == [list(s) for s in most_expensive(runner.load_run_base(
        cfg, torch.device("cpu")).space).splits]
    moved = reference_target(CalibrationTarget(target_accuracy=run_target), reference_accuracy=reference["accuracy"],
                             base_val_accuracy=results["base"]["val_accuracy"]).target_accuracy
    assert abs(moved - run_target) > 1e-3  # the scorer's reference is not the base: the target did move
    assert reference["search_target"]["target_accuracy"] == pytest.approx(moved)
    assert results["search_target"]["target_accuracy"] == pytest.approx(moved)
    scored = [r for r in _journal(out) if "metrics" in r]
    assert len(scored) == 2 and all(r["metrics"]["target_accuracy"] == pytest.approx(moved) for r in scored)
    assert "search.target_from: reference" in (out / "report.md").read_text()

    # a resume reads the reference back instead of scoring it again, and scores its next candidate at it
    (out / "results.json").unlink()
    (out / "search" / "result.json").unlink()
    journal = (out / "search" / "journal.jsonl").read_text().splitlines(keepends=True)
    (out / "search" / "journal.jsonl").write_text("".join(journal[:1]))

    def unexpected(space):
        raise AssertionError("the reference was scored again")

    monkeypatch.setattr(runner, "most_expensive", unexpected)
    again = runner.run_pipeline(cfg, out=out, resume=True, progress=False)
    assert again["search_target"] == results["search_target"]
    rescored = [r for r in _journal(out) if "metrics" in r]
    assert len(rescored) == 2 and rescored[1]["metrics"]["target_accuracy"] == pytest.approx(moved)


def test_by_default_candidates_are_scored_at_the_runs_target(tmp_path: Path, trained: tuple[Path, Path]) -> None:
    data, base = trained
    out = tmp_path / "run"
    out.mkdir()
    results = runner.run_pipeline(_cfg(data, base, "run"), out=out, progress=False)
    assert not (out / "search" / "reference.json").exists() and results["search_reference"] is None
    scored = [r for r in _journal(out) if "metrics" in r]
    assert scored and all(r["metrics"]["target_accuracy"] == pytest.approx(results["target_val_accuracy"])
                          for r in scored)


@pytest.mark.parametrize("run", ["demo", "demo_inherited", "demo_budget15_full"])
def test_runs_made_before_the_option_keep_their_config_hash(run: str) -> None:
    """A run made before ``search.target_from`` existed resumes: its config, loaded now, hashes to
    what its files recorded; choosing ``reference`` is another configuration."""
    folder = Path(__file__).parents[2] / "benchmarks" / "results" / run
    cfg = load_config(str(folder / "config.yaml"))
    assert config_hash(cfg) == json.loads((folder / "results.json").read_text())["config_hash"]
    assert config_hash(replace(cfg, search=replace(cfg.search, target_from="reference"))) != config_hash(cfg)
