"""``s2dnas run`` with ``calibration.cost: latency``: the final calibration minimises measured ms,
the policy records them, and results.json reports the latency next to the MACs."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import s2dnas
from s2dnas.cli.main import main
from tests.cli._synthetic import write_pattern_dataset

VAL_SIZE = 100
FACTORY = "tests._models:toy_cnn"  # the shared toy model, as a user's package.module:factory


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("latency_run")
    (root / "data").mkdir()
    write_pattern_dataset(root / "data", n_train=400, n_test=120)
    with pytest.MonkeyPatch.context() as mp:  # torch's threads: the conftest's one-thread fixture
        mp.setenv("S2DNAS_DATA", str(root / "data"))
        mp.setenv("S2DNAS_CACHE_DIR", str(root / "cache"))
        yield root


def test_run_with_latency_cost(env: Path) -> None:
    base = env / "base"
    assert main(["train-base", "--model", FACTORY, "--epochs", "1", "--limit-train", "256", "--val-size",
                 str(VAL_SIZE), "--out", str(base), "--no-progress"]) == 0
    out = env / "run"
    sets = {"model.weights": str(base / "model.safetensors"), "model.name": FACTORY, "search.budget": "2",
            "search.strategy": "random", "search.candidate_limit_train": "64", "train.limit_train": "128",
            "final_epochs": "1", "data.val_size": str(VAL_SIZE), "device": "cpu", "calibration.cost": "latency"}
    args = ["run", "--out", str(out), "--no-progress"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    lat, cal = results["latency"], results["calibration"]
    assert cal["cost_unit"] == "ms" and cal["stage_cost"] == lat["stage_ms"]
    assert len(lat["stage_ms"]) == len(results["stage_macs"]) and all(t > 0 for t in lat["stage_ms"])
    assert results["base"]["latency_ms"] == lat["base_ms"] > 0 and lat["batch_size"] == 1
    # expected ms on val = sum over stages of (inputs reaching it) x its ms, from the exit fractions
    reach, left = [], 1.0
    for f in cal["exit_fractions"]:
        reach.append(left)
        left -= f
    assert lat["val_expected_ms"] == pytest.approx(sum(r * t for r, t in zip(reach, lat["stage_ms"])))
    assert cal["expected_macs"] == results["val"]["expected_macs"] > 0  # MACs still reported
    # the saved model's policy records the cost it minimised; its MACs are the executed ones
    dyn = s2dnas.load(out / "model")
    assert dyn.policy.cost_unit == "ms" and list(dyn.policy.stage_cost) == pytest.approx(lat["stage_ms"])
    assert dyn.stage_macs == results["stage_macs"]
    # the stage timings were cached: a second hook reads them back without timing
    cache_files = list((env / "cache" / "latency").glob("latency-*.json"))
    assert len(cache_files) == 1
    assert len(json.loads(cache_files[0].read_text())["entries"]) >= len(lat["stage_ms"]) + 1  # stages + base
