"""The method benchmark at smoke scale on synthetic Fashion-MNIST-shaped data: the result file
follows issue 6's schema, every method goes through the same calibration, and a rerun resumes
from the per-method cache instead of training again."""
from __future__ import annotations

import dataclasses
import json
import os
import types
from typing import Any, Callable
from pathlib import Path

import pytest
import torch

from s2dnas.config import DEMO_CONFIG, load_config
from s2dnas.dynamic import ExitPolicy
from s2dnas.dynamic.calibrate import StageLogits, calibrate, evaluate_dynamic
from s2dnas.errors import ConfigError, RunDirError
from tests.cli._synthetic import write_band_dataset

pytest.importorskip("matplotlib")
methods = pytest.importorskip("benchmarks.methods")
timing = pytest.importorskip("benchmarks.timing")

SUBSET = ["static_base", "static_x0.5", "sdn_frozen", "sdn_joint", "cascade_x0.5", "s2dnas_handpicked",
          "s2dnas_random", "ablation_no_concat"]
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    (root / "data").mkdir()
    data = write_band_dataset(root / "data", n_train=500, n_test=120)
    result = root / "methods.json"
    kw = dict(model="resnet20", scale="smoke", out=root / "cache", dataset="fashion-mnist", data_dir=str(data),
              val_size=100, methods=SUBSET, result_path=result, seeds=SEEDS)
    # as `make bench` does: train and evaluate first, then time every network rebuilt from the cache
    trained = methods.run_benchmark(**kw, speed=False)
    assert all(p["measured_speedup"] is None for r in trained["methods"].values() for p in r["points"])
    timed = methods.run_benchmark(**kw, speed=True)
    for name, r in timed["methods"].items():  # the rebuilt networks are the evaluated ones
        t = trained["methods"][name]
        for mine, theirs in zip(r.get("per_seed", {"0": r}).values(), t.get("per_seed", {"0": t}).values()):
            assert mine["stage_test_accuracy"] == theirs["stage_test_accuracy"], name
            assert mine["stage_macs"] == theirs["stage_macs"], name
    return timed, root


def test_result_file_follows_the_schema(smoke: tuple[dict, Path]) -> None:
    data, root = smoke
    assert json.loads((root / "methods.json").read_text()) == json.loads(json.dumps(data))
    assert data["dataset"] == "fashion-mnist" and data["base_model"] == "resnet20"
    assert set(data["machine"]) >= {"processor", "cpu_count", "torch", "threads"}
    assert data["base"]["macs"] == 31_021_952 and 0 <= data["base"]["test_accuracy"] <= 1
    assert list(data["methods"]) == SUBSET
    for name, r in data["methods"].items():
        # one val-chosen point per accuracy level, nothing read off a test curve
        assert [p["drop"] for p in r["points"]] == list(methods.level_drops()) and "test_curve" not in r, name
        assert sum(p["operating_point"] for p in r["points"]) == 1
        for p in r["points"]:
            assert set(p) >= {"test_accuracy", "macs", "measured_speedup", "measured_speedup_b1", "timed_macs_ratio",
                              "thresholds", "val_accuracy", "feasible", "target_val_accuracy"}
            assert 0 <= p["test_accuracy"] <= 1 and p["macs"] > 0 and p["measured_speedup"] > 0
            assert p["measured_speedup_b1"] > 0 and p["timed_macs_ratio"] > 0
        # reached on val <=> val accuracy >= the level, for each network (each seed); a seed-averaged
        # row's val accuracy is a mean, and its level counts as reached only when every seed reaches it
        per_seed = list(r.get("per_seed", {"0": r}).values())
        for e in per_seed:
            # the calibration's rule: correct >= level x n, up to float noise (0.1 - 0.04 = 0.06000000000000001)
            assert all(p["feasible"] == (p["val_accuracy"] >= p["target_val_accuracy"] - 1e-9) for p in e["points"]), name
            assert e["protocol"] == methods.protocol_identity(scale="smoke", spec=methods.MODELS["resnet20"])
        assert [p["feasible"] for p in r["points"]] == [all(e["points"][i]["feasible"] for e in per_seed)
                                                        for i in range(len(r["points"]))], name
        assert r["scale"] == "smoke"
        assert "build_seconds" in r


def test_every_method_is_calibrated_and_counted_the_same_way(smoke: tuple[dict, Path]) -> None:
    data, root = smoke
    m, base_macs = data["methods"], data["base"]["macs"]
    # the static base as a one-stage network: exactly the base's MACs and test accuracy
    assert m["static_base"]["points"][0]["macs"] == base_macs
    assert m["static_base"]["points"][0]["test_accuracy"] == data["base"]["test_accuracy"]
    assert m["static_x0.5"]["points"][0]["macs"] == 7_783_872  # ResNet-20 at half width, 28x28
    # the cascade's stages are the half-width model and the base, nothing shared
    assert m["cascade_x0.5"]["stage_macs"] == [7_783_872, base_macs]
    # SDN exits on the base: the trunk segments add up to the base plus the three linear heads
    assert len(m["sdn_frozen"]["stage_macs"]) == 4 and sum(m["sdn_frozen"]["stage_macs"]) > base_macs
    # the frozen trunk leaves the last exit equal to the base model
    assert m["sdn_frozen"]["stage_test_accuracy"][-1] == data["base"]["test_accuracy"]
    for name, row in m.items():
        for r in row.get("per_seed", {"0": row}).values():  # a searched row: each seed's own network
            op = next(p for p in r["points"] if p["operating_point"])
            assert op["macs_ratio"] == pytest.approx(base_macs / op["macs"])
            # operating point MACs lie between the first stage alone and every stage
            assert r["stage_macs"][0] <= op["macs"] <= sum(r["stage_macs"]) + 1e-6, name
    # the searched row: one run per seed (its own directory and seed), mean and spread of their points
    rnd = m["s2dnas_random"]
    assert rnd["seeds"] == list(SEEDS) and rnd["search_seconds"] > 0
    assert (root / "cache" / "s2dnas_random" / "result.json").is_file()
    assert (root / "cache" / "s2dnas_random-seed1" / "result.json").is_file()
    per = [rnd["per_seed"][str(k)] for k in SEEDS]
    assert [e["seed"] for e in per] == list(SEEDS) and all("architecture" in e for e in per)
    for i, p in enumerate(rnd["points"]):
        accs = [e["points"][i]["test_accuracy"] for e in per]
        assert p["test_accuracy"] == pytest.approx(sum(accs) / 2)
        assert p["test_accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
        assert p["feasible"] == all(e["points"][i]["feasible"] for e in per)
    # joint SDN training moved the trunk away from the base; frozen training did not
    from s2dnas.train.checkpoint import load_weights
    from s2dnas.zoo import create_model

    base = create_model("resnet20", num_classes=10, in_channels=1, pretrained=True).state_dict()
    joint, _ = load_weights(root / "cache" / "sdn_joint" / "final.safetensors")
    frozen, _ = load_weights(root / "cache" / "sdn_frozen" / "final.safetensors")
    assert not torch.equal(joint["stages.0.conv1.weight"], base["conv1.weight"])
    assert torch.equal(frozen["stages.0.conv1.weight"], base["conv1.weight"])
    # without concat, stage 1 is the same and the later stages read nothing: fewer MACs each
    hand, alone = m["s2dnas_handpicked"]["stage_macs"], m["ablation_no_concat"]["stage_macs"]
    assert alone[0] == hand[0] and all(a < h for a, h in zip(alone[1:], hand[1:]))
    assert set(m["ablation_no_concat"]["architecture"]["concat"]) == {3}  # 3 resolution groups: "never"


def test_rerun_reads_the_cache_and_writes_table_and_plot(smoke: tuple[dict, Path]) -> None:
    data, root = smoke
    again = methods.run_benchmark(model="resnet20", scale="smoke", out=root / "cache", dataset="fashion-mnist",
                                  data_dir=str(root / "data"), val_size=100, methods=SUBSET,
                                  result_path=root / "again.json", speed=False, seeds=SEEDS)
    assert again["methods"] == json.loads(json.dumps(data["methods"]))  # nothing retrained or re-measured
    with pytest.raises(RunDirError, match=r"static_base holds a result of another protocol or recipe \(changed: "
                                          r"budget, .*final_epochs, .*scale.*\); delete .*static_base to redo it, "
                                          r"or pass another --out"):
        methods.run_benchmark(model="resnet20", scale="small", out=root / "cache", dataset="fashion-mnist",
                              data_dir=str(root / "data"), val_size=100, methods=["static_base"],
                              result_path=root / "wrong.json", speed=False)
    assert not (root / "wrong.json").exists()
    text = methods.table(again)
    first = text.split("\n\n")[1].splitlines()  # the operating-point table: header, rule, one row per method
    assert [row.split(" | ")[0][2:] for row in first[2:]] == SUBSET and "our measurements" in text.lower()
    assert all(f"| {name} |" in text.split("\n\n")[3] for name in SUBSET)  # the per-level table
    assert "± " in first[2 + SUBSET.index("s2dnas_random")]  # the searched row: mean ± spread
    methods.plot(again, root / "plot.png")
    assert (root / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_searched_rows_record_how_much_of_their_budget_the_search_scored(
        smoke: tuple[dict, Path], tmp_path: Path) -> None:
    """Each seed of a searched row records the distinct candidates its journal holds, the budget it
    was asked for and whether the space ran out; a cache written before these were recorded gets
    them from its run's own files, the same values."""
    import shutil

    from s2dnas.search.journal import Journal

    data, root = smoke
    rnd = data["methods"]["s2dnas_random"]
    journals = [Journal(root / "cache" / d / "search" / "journal.jsonl").num_samples
                for d in ("s2dnas_random", "s2dnas_random-seed1")]
    assert rnd["search_candidates"] == journals == [methods.SCALES["smoke"].budget] * 2
    assert rnd["search_budget"] == methods.SCALES["smoke"].budget and rnd["search_space_exhausted"] == [False, False]
    old = tmp_path / "cache"
    shutil.copytree(root / "cache", old)
    for d in ("s2dnas_random", "s2dnas_random-seed1"):
        entry = json.loads((old / d / "result.json").read_text())
        for key in ("search_candidates", "search_budget", "search_space_exhausted"):
            del entry[key]
        (old / d / "result.json").write_text(json.dumps(entry))
    again = methods.run_benchmark(model="resnet20", scale="smoke", out=old, dataset="fashion-mnist",
                                  data_dir=str(root / "data"), val_size=100, methods=["s2dnas_random"],
                                  result_path=tmp_path / "again.json", speed=False, seeds=SEEDS)
    row = again["methods"]["s2dnas_random"]
    assert (row["search_candidates"], row["search_budget"], row["search_space_exhausted"]) == \
        (rnd["search_candidates"], rnd["search_budget"], rnd["search_space_exhausted"])


def test_a_search_count_is_read_from_the_run_files_and_absent_without_them(tmp_path: Path) -> None:
    """An old cached searched entry gets the count of its run directory: its search record's
    candidates and exhaustion, its config's budget; nothing when either file is gone (a pruned
    cache still loads); a row that is not searched is left as cached."""
    cache = tmp_path / "result.json"
    cache.write_text(json.dumps({"seed": 1}))
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "result.json").write_text(json.dumps({"num_candidates": 7, "space_exhausted": True}))
    assert methods._cached("s2dnas_rl", cache) == {"seed": 1}  # no config.yaml
    (tmp_path / "config.yaml").write_text("search: {strategy: rl, budget: 9}\n")
    assert methods._cached("s2dnas_rl", cache) == {"seed": 1, "search_candidates": 7, "search_budget": 9,
                                                   "search_space_exhausted": True}
    assert methods._cached("s2dnas_handpicked", cache) == {"seed": 1}
    (tmp_path / "search" / "result.json").unlink()
    assert methods._cached("s2dnas_rl", cache) == {"seed": 1}


def test_the_table_names_the_seeds_whose_search_stopped_before_its_budget() -> None:
    """A seed whose search scored fewer candidates than its budget is named under the table with
    its count and why; seeds that scored their budget are not."""
    entries = {k: _seed_entry(k, "trained by this run", build=60.0, trained=30.0) for k in (0, 1, 2)}
    for k, (n, exhausted) in enumerate(((200, False), (166, False), (120, True))):
        entries[k].update(search_candidates=n, search_budget=200, search_space_exhausted=exhausted)
    row = methods.aggregate_seeds(entries, base_macs=100)
    assert row["search_candidates"] == [200, 166, 120] and row["search_space_exhausted"] == [False, False, True]
    data = {"base_model": "resnet20", "dataset": "fashion-mnist", "seeds": [0, 1, 2], "scale": {"name": "smoke"},
            "target_val_accuracy": 0.9, "base": {"val_accuracy": 0.901, "test_accuracy": 0.9, "macs": 100},
            "machine": {"processor": "x", "cpu_count": 2, "threads": 1, "torch": "2"},
            "methods": {"s2dnas_rl": row}}
    note = [line for line in methods.table(data).splitlines() if line.startswith("Searches that stopped")]
    assert len(note) == 1 and note[0].endswith(
        "`s2dnas_rl` seed 1: 166 of 200 candidates (the controller kept proposing scored ones), "
        "seed 2: 120 of 200 candidates (the space has no more).")
    assert "seed 0" not in note[0]
    # an imported run's one search, short of its budget, is named the same way
    data["methods"]["s2dnas_imported"] = {**entries[1], "search_candidates": 90, "search_budget": 100}
    note = [line for line in methods.table(data).splitlines() if line.startswith("Searches that stopped")]
    assert note[0].endswith("; `s2dnas_imported` its search: 90 of 100 candidates (the controller kept proposing "
                            "scored ones).")
    for k in (1, 2):
        entries[k].update(search_candidates=200, search_space_exhausted=False)
    data["methods"] = {"s2dnas_rl": methods.aggregate_seeds(entries, base_macs=100)}
    assert "Searches that stopped" not in methods.table(data)


def test_handpicked_rows_use_the_configured_space_like_the_searched_rows() -> None:
    """The hand-picked and ablation rows build their space with every configured option (the channel
    multiple included), as run_pipeline does for the searched rows."""
    from types import SimpleNamespace

    from s2dnas.config import load_config
    from s2dnas.zoo import create_model

    ctx = SimpleNamespace(base=create_model("resnet20", num_classes=10, in_channels=1),
                          splits=SimpleNamespace(input_shape=(1, 28, 28)), spec=SimpleNamespace(name="resnet20"))
    configured = load_config(None).space
    assert configured.channel_multiple > 1  # otherwise this test shows nothing
    space = methods._space(ctx)
    assert space.channel_multiple == configured.channel_multiple
    assert methods._space(ctx, num_stages=2).num_stages == 2


def _logits(correct_first: torch.Tensor, confident_first: torch.Tensor, labels: torch.Tensor) -> StageLogits:
    """Two stages, 2 classes: stage 0 answers right where ``correct_first`` and with a confidence
    that is high where ``confident_first``; stage 1 is always right."""
    n = len(labels)
    first_answer = torch.where(correct_first, labels, 1 - labels)
    margin = torch.where(confident_first, 4.0, 0.2) + torch.linspace(0, 0.1, n)  # distinct confidences
    first = torch.zeros(n, 2)
    first[torch.arange(n), first_answer] = margin
    last = torch.zeros(n, 2)
    last[torch.arange(n), labels] = 4.0
    return StageLogits(logits=torch.stack([first, last]), labels=labels)


def test_points_are_chosen_on_val_and_test_is_only_read_after() -> None:
    """Issue 14: per accuracy level the thresholds come from val alone; two different test sets get
    the same thresholds, val accuracies and feasibility, and only their test numbers differ."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (200,), generator=g)
    val = _logits(torch.rand(200, generator=g) < 0.8, torch.rand(200, generator=g) < 0.6, labels)
    tests = [_logits(torch.rand(200, generator=g) < q, torch.rand(200, generator=g) < 0.6, labels) for q in (0.5, 0.95)]
    kw = dict(stage_macs=[10, 90], base_val=1.0, base_macs=100, drops=(0.001, 0.05, 0.2),
              calibration=load_config(None).calibration)
    a, b = (methods.choose_points(val, t, **kw) for t in tests)
    chosen = ("drop", "thresholds", "val_accuracy", "val_macs", "feasible", "target_val_accuracy")
    assert [{k: p[k] for k in chosen} for p in a] == [{k: p[k] for k in chosen} for p in b]
    assert [p["test_accuracy"] for p in a] != [p["test_accuracy"] for p in b]  # the test sets do differ
    assert load_config(None).calibration.tolerance == 0.001  # the operating point below is that level
    assert [p["operating_point"] for p in a] == [True, False, False]
    # a looser level never costs more on val (the same optimiser, a weaker constraint)
    assert a[0]["val_macs"] >= a[1]["val_macs"] >= a[2]["val_macs"]


def test_a_level_not_reached_on_val_is_not_reached_even_when_test_would_cross_it() -> None:
    labels = torch.arange(100) % 2
    every = torch.ones(100, dtype=torch.bool)
    # on val the last stage is wrong on 10 inputs that stage 0 also gets wrong: at most 90% whatever the thresholds
    val = _logits(torch.arange(100) >= 10, every, labels)
    val.logits[1, :10] = val.logits[1, :10].flip(1)
    test = _logits(every, every, labels)  # on test every setting is 100% correct
    pts = methods.choose_points(val, test, stage_macs=[10, 90], base_val=0.95, base_macs=100, drops=(0.001, 0.1),
                                calibration=load_config(None).calibration)
    assert [p["feasible"] for p in pts] == [False, True]
    assert pts[0]["test_accuracy"] == 1.0  # test would have crossed the level
    data = {"base": {"macs": 100, "test_accuracy": 0.95, "val_accuracy": 0.95},
            "methods": {"s2dnas_rl": {"points": pts}, "static_x0.5": {"points": [
                {**pts[1], "drop": 0.001, "feasible": True, "macs": 50}]}}}
    iso = methods.iso_accuracy(data)
    assert iso["s2dnas_rl"]["0.001"] == {"feasible": False, "test_accuracy": 1.0, "macs": None}
    assert iso["s2dnas_rl"]["0.100"]["macs"] == pts[1]["macs"] / 100
    targets = methods.check_targets(data)
    assert targets == [{"method": "s2dnas_rl", "key": "level",
                        "target": "reach base val - 0.1 pt on val, test >= base test - 0.1 pt",
                        "value": f"not reached on val (val {100 * pts[0]['val_accuracy']:.2f}%)", "met": False}]


def test_evaluate_network_gives_the_same_choices_when_the_test_labels_are_permuted() -> None:
    """Issue 14's leakage check at the benchmark's level: the whole evaluation of one network
    (every level's thresholds, val numbers, feasibility) is unchanged by permuting the test labels."""
    from types import SimpleNamespace

    from s2dnas.data.datasets import TensorImageDataset
    from tests._models import make_labels, make_space, sharpen

    space = make_space(num_stages=3)
    msnet = sharpen(space.build(space.default_architecture()))
    g = torch.Generator().manual_seed(0)
    xv, xt = torch.randn(160, 1, 8, 8, generator=g), torch.randn(160, 1, 8, 8, generator=g)
    yv, yt = make_labels(msnet, xv, seed=1), make_labels(msnet, xt, seed=2)
    shuffled = yt[torch.randperm(160, generator=g)]
    assert (shuffled != yt).any()
    base_macs = space.base_macs()

    def run(test_labels: torch.Tensor) -> dict:
        splits = SimpleNamespace(val=TensorImageDataset(xv, yv), test=TensorImageDataset(xt, test_labels))
        ctx = SimpleNamespace(splits=splits, scale=SimpleNamespace(eval_batch_size=64), device=torch.device("cpu"),
                              base_val=0.72, base_macs=base_macs, target=0.72 - 0.001)
        return methods.evaluate_network(ctx, msnet)

    a, b = run(yt), run(shuffled)
    chosen = ("drop", "thresholds", "val_accuracy", "val_macs", "feasible", "operating_point")
    assert [{k: p[k] for k in chosen} for p in a["points"]] == [{k: p[k] for k in chosen} for p in b["points"]]
    assert a["stage_val_accuracy"] == b["stage_val_accuracy"] and a["feasible"] == b["feasible"]
    assert a["stage_test_accuracy"] != b["stage_test_accuracy"]  # the test labels did change
    assert len({tuple(p["thresholds"]) for p in a["points"]}) > 1  # the levels chose different settings


def test_targets_compare_ours_with_the_best_alternative_that_reaches_the_level() -> None:
    def point(macs: float, sp: float, sp1: float, feasible: bool = True) -> dict:
        return {"drop": 0.001, "feasible": feasible, "macs": macs, "test_accuracy": 0.9, "val_accuracy": 0.9,
                "measured_speedup": sp, "measured_speedup_b1": sp1}

    data = {"base": {"macs": 100, "test_accuracy": 0.91, "val_accuracy": 0.91}, "methods": {
        "s2dnas_rl": {"points": [point(10, 5.0, 3.0)]},
        "sdn_joint": {"points": [point(20, 2.0, 1.6)]},
        "cascade_x0.25": {"points": [point(15, 9.0, 9.0, feasible=False)]},  # not reached on val: ignored
        "static_x0.5": {"points": [point(25, 2.4, 1.2)]}}}
    rows = {r["target"]: (r["value"], r["met"]) for r in methods.check_targets(data)}
    assert rows["<= 15% of the base's MACs"][1] is True
    assert rows["<= half the MACs of the best alternative"] == ("10.0% vs sdn_joint 20.0%", True)
    assert rows[">= 2x the best alternative's speed-up at batch 256"] == ("5.00x vs static_x0.5 2.40x", True)
    assert rows[">= 2x the best alternative's speed-up at batch 1"] == ("3.00x vs sdn_joint 1.60x", False)
    # issue 14's level: reached on val, and the val-chosen point's test accuracy >= base test - 0.1 pt
    level = "reach base val - 0.1 pt on val, test >= base test - 0.1 pt"
    assert rows[level] == ("reached on val; test 90.00% vs 90.90%", False)  # 0.9 < 0.91 - 0.001
    data["methods"]["s2dnas_rl"]["points"][0]["test_accuracy"] = 0.909
    assert {r["target"]: r["met"] for r in methods.check_targets(data)}[level] is True  # exactly on the floor
    # the drop is the one the result file recorded (else calibration.tolerance): none of these points is at 1 pt
    assert methods.check_targets({**data, "operating_drop": 0.01}) == []


def test_unknown_methods_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Unknown method\(s\) cascade; expected some of static_base, "):
        methods.run_benchmark(model="resnet20", scale="smoke", out=tmp_path / "c", methods=["cascade"])
    assert not (tmp_path / "c").exists()


def test_points_use_the_configured_confidence_measure_and_its_policy_on_test() -> None:
    """choose_points calibrates with ``calibration.confidence`` and evaluates test with the chosen
    policy (measure included), not with bare thresholds read as max-softmax."""
    import dataclasses

    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 2, (300,), generator=g)
    val = _logits(torch.rand(300, generator=g) < 0.8, torch.rand(300, generator=g) < 0.6, labels)
    test = _logits(torch.rand(300, generator=g) < 0.7, torch.rand(300, generator=g) < 0.6, labels)
    val.logits[0] = val.logits[0] * torch.linspace(0.5, 2.0, 300)[:, None]  # spread the confidences
    cal = dataclasses.replace(load_config(None).calibration, confidence="entropy")
    pts = methods.choose_points(val, test, stage_macs=[10, 90], base_val=0.9, base_macs=100, drops=(0.05,),
                                calibration=cal)
    chosen = calibrate(val, stage_macs=[10, 90], target_accuracy=0.9 - 0.05, confidence="entropy")
    assert pts[0]["confidence"] == "entropy" and pts[0]["thresholds"] == list(chosen.thresholds)
    on_test = evaluate_dynamic(test, ExitPolicy(thresholds=chosen.thresholds, confidence="entropy"),
                               stage_macs=[10, 90])
    as_softmax = evaluate_dynamic(test, chosen.thresholds, stage_macs=[10, 90])
    assert (pts[0]["test_accuracy"], pts[0]["macs"]) == (on_test["accuracy"], on_test["expected_macs"])
    assert on_test["exit_fractions"] != as_softmax["exit_fractions"]  # the measure does matter here
    assert not pts[0]["operating_point"]  # the operating point is calibration.tolerance's level only


def test_a_cache_of_another_protocol_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A result.json written without (or with another) protocol identity is refused, naming the
    folder to delete, before the base is even loaded."""
    stale = tmp_path / "c" / "s2dnas_random-seed1"
    stale.mkdir(parents=True)
    (stale / "result.json").write_text(json.dumps({"scale": "smoke", "points": [{"val_accuracy": 0.9}]}))
    kw = dict(model="resnet20", scale="smoke", out=tmp_path / "c", methods=["s2dnas_random"], seeds=(0, 1),
              data_dir=str(tmp_path / "no-data"))
    with pytest.raises(RunDirError, match=r"s2dnas_random-seed1 holds a result of another protocol or recipe "
                                          r"\(no protocol recorded: written by an older version\); delete "):
        methods.run_benchmark(**kw)
    identity = methods.protocol_identity(scale="smoke", spec=methods.MODELS["resnet20"])
    (stale / "result.json").write_text(json.dumps({"protocol": {**identity, "version": 1}}))
    with pytest.raises(RunDirError, match=r"\(changed: version\)"):
        methods.run_benchmark(**kw)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["s2dnas_random-seed1"]  # nothing else ran


def test_a_one_shot_cache_of_another_super_network_is_refused(tmp_path: Path) -> None:
    """A one-shot row scored with one super-network is not reused under another ``--supernet``
    (or none), but is under the same one; other rows never depend on it."""
    identity = methods.protocol_identity(scale="smoke", spec=methods.MODELS["resnet20"])
    row = tmp_path / "c" / "s2dnas_oneshot"
    row.mkdir(parents=True)
    (row / "result.json").write_text(json.dumps({"protocol": identity, "supernet": {"source": "runs/sn/a"}}))
    sn = tmp_path / "sn"
    sn.mkdir()
    kw = dict(model="resnet20", scale="smoke", out=tmp_path / "c", methods=["s2dnas_oneshot"], seeds=(0,),
              data_dir=str(tmp_path / "no-data"))
    with pytest.raises(RunDirError, match=r"s2dnas_oneshot holds a result scored with another super-network "
                                          r"\(runs/sn/a, not --supernet .*sn\); delete "):
        methods.run_benchmark(**kw, supernet=str(sn))
    with pytest.raises(RunDirError, match=r"super-network runs/sn/a, not one trained by this run "
                                          r"\(pass --supernet runs/sn/a\)"):
        methods.run_benchmark(**kw)
    assert methods._supernet_mismatch("s2dnas_oneshot", {"supernet": {"source": str(sn)}}, str(sn)) is None
    assert methods._supernet_mismatch("s2dnas_random", {}, str(sn)) is None


def test_a_one_shot_cache_is_tied_to_the_super_network_not_to_the_spelling_of_its_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``runs/sn``, ``runs/sn/``, ``./runs/sn`` and the absolute path name one super-network; one
    retrained in place (another config hash, epochs or training time) is another."""
    monkeypatch.chdir(tmp_path)
    sn = tmp_path / "runs" / "sn"
    sn.mkdir(parents=True)
    meta = {"config_hash": "abc123", "epoch": 3, "epochs": 3, "train_seconds": 12.5}
    (sn / "supernet.json").write_text(json.dumps(meta))
    entry = {"supernet": {"source": "runs/sn", "config_hash": "abc123", "epochs": 3, "train_seconds": 12.5}}
    for spelling in ("runs/sn", "runs/sn/", "./runs/sn", str(sn), f"{sn}/"):
        assert methods._supernet_mismatch("s2dnas_oneshot", entry, spelling) is None, spelling
    assert "another super-network" in methods._supernet_mismatch("s2dnas_oneshot", entry, "runs")
    identity = methods.protocol_identity(scale="smoke", spec=methods.MODELS["resnet20"])
    row = tmp_path / "c" / "s2dnas_oneshot"
    row.mkdir(parents=True)
    (row / "result.json").write_text(json.dumps({"protocol": identity, **entry}))
    kw = dict(model="resnet20", scale="smoke", out=tmp_path / "c", methods=["s2dnas_oneshot"], seeds=(0,),
              data_dir=str(tmp_path / "no-data"))
    for changed, message in (({"config_hash": "def456"}, "config_hash abc123 -> def456"),
                             ({"epoch": 5, "epochs": 5}, "epochs 3 -> 5"),
                             ({"train_seconds": 13.0}, "train_seconds 12.5 -> 13.0")):  # same recipe, trained again
        (sn / "supernet.json").write_text(json.dumps({**meta, **changed}))
        with pytest.raises(RunDirError, match=r"s2dnas_oneshot holds a result scored with an earlier super-network "
                                              rf"at {sn}/, retrained since \(changed: {message}\); delete "):
            methods.run_benchmark(**kw, supernet=f"{sn}/")


class _Stop(Exception):
    pass


def test_static_models_are_tied_to_their_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thin model's folder records epochs, images and distillation before training starts: a
    folder trained before that (weights, no recipe) or a resumed checkpoint of another recipe
    (e.g. without the teacher) is refused, the same recipe resumes."""
    calls = []

    def killed(model, splits, *, resume, teacher, **kw):  # training killed after its first checkpoint
        calls.append((resume, teacher is not None))
        (kw["out_dir"] / "checkpoint.pt").write_bytes(b"epoch 1")
        raise _Stop

    monkeypatch.setattr(methods, "train_base", killed)
    from types import SimpleNamespace

    kw = dict(splits=SimpleNamespace(num_classes=10, in_channels=1), epochs=3, limit_train=None,
              device=torch.device("cpu"))
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"weights of an old recipe")
    with pytest.raises(RunDirError, match=r"old holds a model of an unrecorded recipe .*; delete .*old to redo it"):
        methods._train_from_scratch("benchmarks.models:resnet20_w50", out=old, teacher=torch.nn.Identity(), **kw)
    out = tmp_path / "thin"
    with pytest.raises(_Stop):
        methods._train_from_scratch("benchmarks.models:resnet20_w50", out=out, teacher=None, **kw)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["train"]["epochs"] == 3 and recipe["distillation"] is None
    with pytest.raises(RunDirError, match=r"thin holds a model of another recipe \(changed: distillation\)"):
        methods._train_from_scratch("benchmarks.models:resnet20_w50", out=out, teacher=torch.nn.Identity(), **kw)
    with pytest.raises(RunDirError, match=r"changed: train"):
        methods._train_from_scratch("benchmarks.models:resnet20_w50", out=out, teacher=None, **{**kw, "epochs": 6})
    with pytest.raises(_Stop):
        methods._train_from_scratch("benchmarks.models:resnet20_w50", out=out, teacher=None, **kw)
    assert calls == [(False, False), (True, False)]  # the same recipe resumed its checkpoint


def test_a_committed_base_is_used_only_for_its_recipe_and_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A non-shipped base committed under BASES starts the benchmark's base/ folder (no training)
    when its recipe and train/val cut are this run's; another recipe or cut, or a base/ folder
    that already holds training of its own, trains (or resumes) here as before."""
    trained, loaded = [], []

    def train(model, splits, *, out_dir, resume, **kw):
        trained.append((out_dir.name, resume))
        raise _Stop

    monkeypatch.setattr(methods, "train_base", train)
    monkeypatch.setattr(methods, "load_base_model",
                        lambda *, weights, **kw: (loaded.append(Path(weights)) or torch.nn.Identity(), None, None))
    monkeypatch.setattr(methods, "BASES", tmp_path / "bases")
    spec = methods.ModelSpec("benchmarks.models:resnet20_w25", {}, base_epochs=3, shipped=False)
    monkeypatch.setitem(methods.MODELS, "tiny", spec)
    cut = {"dataset": "fashion-mnist", "val_size": 5000, "data_seed": 0}
    splits = types.SimpleNamespace(name="fashion-mnist", num_classes=10, in_channels=1, data_spec=lambda: {**cut, "preprocessing": {"mean": [0.2860405]}})
    scale = methods.SCALES["full"]
    recipe = methods._recipe(spec.name, methods.BaseTrainConfig(epochs=3, limit_train=scale.thin_limit_train),
                             distilled=False)
    committed = tmp_path / "bases" / "tiny-fashion-mnist"
    committed.mkdir(parents=True)
    (committed / "model.safetensors").write_bytes(b"the committed weights")
    # its normalisation's mean differs in the last digits (float sums vary with the thread count): still this cut
    (committed / "metrics.json").write_text(json.dumps({"data": {**cut, "preprocessing": {"mean": [0.2860406]}},
                                                        "train_seconds": 60.0}))
    (committed / "recipe.json").write_text(json.dumps(recipe))
    (committed / "model.json").write_text(json.dumps({"model": spec.name}))

    def prepare(out: Path) -> tuple[Any, ...]:
        return methods._prepare_base("tiny", splits, out, torch.device("cpu"), scale)

    _, weights, seconds = prepare(tmp_path / "a")
    assert trained == [] and loaded == [tmp_path / "a" / "base"] and seconds == 60.0
    assert weights == str(tmp_path / "a" / "base" / "model.safetensors")
    assert {f: (tmp_path / "a" / "base" / f).read_bytes() for f in methods.BASE_FILES} == \
        {f: (committed / f).read_bytes() for f in methods.BASE_FILES}

    own = tmp_path / "b" / "base"  # a base trained here, killed after an epoch: resumed, not replaced
    own.mkdir(parents=True)
    (own / "recipe.json").write_text(json.dumps(recipe))
    (own / "checkpoint.pt").write_bytes(b"epoch 1")
    with pytest.raises(_Stop):
        prepare(tmp_path / "b")
    assert trained == [("base", True)] and not (own / "model.safetensors").exists()

    for name, text in (("recipe.json", json.dumps({**recipe, "train": {**recipe["train"], "epochs": 4}})),
                       ("metrics.json", json.dumps({"data": {**cut, "val_size": 1000}}))):
        good = (committed / name).read_text()
        (committed / name).write_text(text)
        out = tmp_path / f"other-{name}"
        with pytest.raises(_Stop):
            prepare(out)
        assert trained[-1] == ("base", False) and not (out / "base" / "model.safetensors").exists()
        assert f"the committed base {committed} is of another recipe or train/val cut" in caplog.text
        (committed / name).write_text(good)


def test_the_committed_supernet_is_the_default_at_scale_full_for_the_committed_base_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`benchmarks.methods --scale full` gives the one-shot rows the super-network committed beside
    the committed base, unless --out holds another base, --supernet names one, or --supernet none."""
    monkeypatch.setattr(methods, "BASES", tmp_path / "bases")
    monkeypatch.setitem(methods.MODELS, "tiny", methods.ModelSpec("benchmarks.models:resnet20_w25", {},
                                                                   base_epochs=3, shipped=False))
    given: list[str | None] = []

    def record(**kw: Any) -> None:
        given.append(kw["supernet"])
        raise _Stop

    monkeypatch.setattr(methods, "run_benchmark", record)

    def supernet(*argv: str, out: Path = tmp_path / "bench") -> str | None:
        with pytest.raises(_Stop):
            methods.main(["--model", "tiny", "--out", str(out), *argv])
        return given[-1]

    home = tmp_path / "bases" / "tiny-fashion-mnist"
    assert supernet("--scale", "full") is None  # none committed
    (home / "supernet").mkdir(parents=True)
    (home / "supernet" / "supernet.json").write_text("{}")
    (home / "model.safetensors").write_bytes(b"the committed weights")
    # no base yet (the committed one is copied); spelt relative to the working directory, as the README's
    # commands pass it and the rows record it (merge_results compares that spelling)
    committed = supernet("--scale", "full")
    assert committed is not None and not os.path.isabs(committed)
    assert Path(committed).resolve() == (home / "supernet").resolve()
    assert supernet("--scale", "small") is None
    assert supernet("--scale", "full", "--supernet", "none") is None
    assert supernet("--scale", "full", "--supernet", "runs/sn") == "runs/sn"
    bench = tmp_path / "bench" / "base"
    bench.mkdir(parents=True)
    (bench / "model.safetensors").write_bytes(b"the committed weights")  # a copy of it
    assert supernet("--scale", "full") == committed
    (bench / "model.safetensors").write_bytes(b"weights trained here")
    assert supernet("--scale", "full") is None


def test_long_static_rows_train_for_the_base_and_final_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """static_x*_long trains the same thin model for the base's epochs plus the final training's, in
    its own folder; cascade_x*_long is built on that model (the same folder), the short rows keep
    the base's epochs; the long rows are alternatives to ours in the targets."""
    trained = []

    def fake(name, splits, out, *, epochs, limit_train, device, teacher):
        trained.append((name, out.name, epochs, teacher is not None))
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), 1.0

    monkeypatch.setattr(methods, "_train_from_scratch", fake)
    spec, sc = methods.MODELS["resnet20"], methods.SCALES["full"]
    ctx = types.SimpleNamespace(spec=spec, scale=sc, out=tmp_path, splits=types.SimpleNamespace(input_shape=(1, 2, 2)),
                                device=torch.device("cpu"), base=torch.nn.Flatten(), teacher_store=None)
    for name in ("static_x0.5", "static_x0.5_long", "cascade_x0.25_long", "cascade_x0.5"):
        methods.METHODS[name](ctx)
    assert trained == [("benchmarks.models:resnet20_w50", "static_x0.5", 10, True),
                       ("benchmarks.models:resnet20_w50", "static_x0.5_long", 26, True),
                       ("benchmarks.models:resnet20_w25", "static_x0.25_long", 26, True),
                       ("benchmarks.models:resnet20_w50", "static_x0.5", 10, True)]
    assert {"static_x0.5_long", "cascade_x0.25_long"} <= set(methods.ALTERNATIVES)
    assert not {"s2dnas_handpicked", "s2dnas_random"} & set(methods.ALTERNATIVES)


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    cases = {("--methods", "cascade"): "error: Unknown method(s) cascade; expected some of static_base, ",
             ("--seeds", "0,0"): "error: Expected --seeds as distinct comma-separated integers >= 0",
             ("--seeds", "-1"): "error: Expected --seeds as distinct comma-separated integers >= 0",
             ("--supernet", "nowhere"): "error: Expected --supernet to be a directory",
             ("--thread-options", "0,1"): "error: Expected --thread-options as distinct comma-separated integers >= 1",
             ("--run", "s2dnas_gpu"): "error: Expected --run as NAME=RUN_DIR (e.g. s2dnas_gpu=runs/gpu), but got ",
             ("--run", "gpu=runs/gpu"): "error: Expected the name of --run gpu=runs/gpu to start with s2dnas_ ",
             ("--run", "s2dnas_rl=runs/gpu"): "error: Expected the name of --run s2dnas_rl=runs/gpu to start with ",
             ("--run", "s2dnas_gpu=nowhere"): "error: Expected --run s2dnas_gpu=nowhere to be a finished `s2dnas "
                                              "run` directory, but nowhere has no results.json, config.yaml, "
                                              "model/model.json; finish the run or pass "}
    for argv, message in cases.items():
        with pytest.raises(SystemExit) as exit_:
            methods.main(list(argv))
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(message), argv
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def _seed_entry(seed: int, source: str, *, build: float, trained: float) -> dict:
    point = {"drop": 0.001, "target_val_accuracy": 0.9, "operating_point": True, "test_accuracy": 0.9,
             "val_accuracy": 0.9, "macs": 50.0, "feasible": True, "thresholds": [0.5], "macs_ratio": 2.0}
    return {"scale": "smoke", "seed": seed, "points": [point], "build_seconds": build, "search_seconds": 1.0,
            "supernet": {"source": source, "train_seconds": trained},
            "supernet_train_seconds": trained, "supernet_loaded": source != "trained by this run"}


def test_rows_that_load_a_supernet_report_its_training_time_separately() -> None:
    """A one-shot row that loaded a super-network trained elsewhere keeps its training seconds
    beside the build time (not in it); one super-network for every seed is flagged, since the
    spread then leaves out its variance."""
    shared = methods.aggregate_seeds({k: _seed_entry(k, "runs/sn", build=60.0 * (k + 1), trained=600.0)
                                      for k in (0, 1)}, base_macs=100)
    assert shared["build_seconds"] == 90.0 and shared["supernet_train_seconds"] == 600.0
    assert shared["supernet_loaded"] and shared["one_supernet_for_all_seeds"]
    own = methods.aggregate_seeds({k: _seed_entry(k, "trained by this run", build=60.0, trained=30.0)
                                   for k in (0, 1)}, base_macs=100)
    assert not own["supernet_loaded"] and not own["one_supernet_for_all_seeds"]
    sibling = methods.aggregate_seeds({k: _seed_entry(k, f"cache/s2dnas_oneshot-seed{k}/supernet", build=60.0,
                                                      trained=30.0) for k in (0, 1)}, base_macs=100)
    assert sibling["supernet_loaded"] and not sibling["one_supernet_for_all_seeds"]  # one per seed
    data = {"base_model": "resnet20", "dataset": "fashion-mnist", "seeds": [0, 1], "scale": {"name": "smoke"},
            "target_val_accuracy": 0.9, "base": {"val_accuracy": 0.901, "test_accuracy": 0.9, "macs": 100},
            "machine": {"processor": "x", "cpu_count": 2, "threads": 1, "torch": "2"},
            "methods": {"s2dnas_oneshot": shared, "s2dnas_oneshot_inherited": own}}
    rows = {line.split(" | ")[0][2:]: line for line in methods.table(data).splitlines() if line.startswith("| s2dnas")}
    assert rows["s2dnas_oneshot"].endswith("| 1.5 min + 10.0 min super-network (one super-network for all seeds) |")
    assert rows["s2dnas_oneshot_inherited"].endswith("| 1.0 min |")


def test_averaged_points_keep_how_each_seed_was_timed() -> None:
    """Speed-ups average over seeds, but the variant each seed's network ran in (layout, mode,
    threads) cannot: the averaged point lists it per seed, in seed order."""
    entries = {k: _seed_entry(k, "trained by this run", build=60.0, trained=30.0) for k in (0, 2)}
    for k, (mode, threads) in zip((0, 2), (("eager", 1), ("frozen", 2))):
        entries[k]["points"][0].update(measured_speedup=1.0 + k, mode=mode, threads=threads, layout="nchw",
                                       mode_b1="frozen", threads_b1=1)
    point = methods.aggregate_seeds(entries, base_macs=100)["points"][0]
    assert point["measured_speedup"] == 2.0
    assert point["mode"] == ["eager", "frozen"] and point["threads"] == [1, 2] and point["layout"] == ["nchw", "nchw"]
    assert point["mode_b1"] == ["frozen", "frozen"] and "base_mode" not in point  # never timed: not invented


# -- imported runs (--run NAME=RUN_DIR) -------------------------------------------------------------

IMPORT_VAL_SIZE = 100


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny finished ``s2dnas run`` (RL search of 2 briefly trained candidates, 1 epoch of final
    training on 64 images: not the smoke scale's 256) from the shipped ResNet-20, on the synthetic
    data with the val size the import test's benchmark uses; (root with ``data/``, run directory)."""
    from s2dnas.runner import run_pipeline

    root = tmp_path_factory.mktemp("imported")
    (root / "data").mkdir()
    write_band_dataset(root / "data", n_train=500, n_test=120)
    run = root / "run"
    run.mkdir()
    cfg = load_config(None, [("data.dataset", "fashion-mnist"), ("data.data_dir", str(root / "data")),
                             ("data.val_size", IMPORT_VAL_SIZE), ("data.eval_batch_size", 128),
                             ("model.name", "resnet20"), ("search.strategy", "rl"), ("search.budget", 2),
                             ("search.candidate_epochs", 1), ("search.candidate_limit_train", 64),
                             ("final_epochs", 1), ("train.limit_train", 64), ("device", "cpu")])
    run_pipeline(cfg, out=run, progress=False)
    return root, run


def test_an_imported_run_is_calibrated_on_val_like_every_row(finished_run: tuple[Path, Path]) -> None:
    """A finished run's network becomes a row after the methods': thresholds calibrated by the
    benchmark on val for every level (exactly what calibrating that network on val gives), its
    provenance and final-training budget recorded, nothing cached, counted as ours (RL search)."""
    from s2dnas.data import build_splits, make_loader
    from s2dnas.dynamic import load
    from s2dnas.dynamic.calibrate import collect_logits

    root, run = finished_run
    data = methods.run_benchmark(model="resnet20", scale="smoke", out=root / "cache", dataset="fashion-mnist",
                                 data_dir=str(root / "data"), val_size=IMPORT_VAL_SIZE, methods=["static_base"],
                                 runs={"s2dnas_imported": run}, speed=False, result_path=root / "methods.json")
    assert list(data["methods"]) == ["static_base", "s2dnas_imported"] and data["runs"] == {"s2dnas_imported": str(run)}
    row = data["methods"]["s2dnas_imported"]
    results = json.loads((run / "results.json").read_text())
    assert row["imported_from"] == str(run) and row["config_hash"] == results["config_hash"]
    assert row["architecture"] == results["architecture"] and row["strategy"] == "rl"
    assert (row["final_epochs"], row["limit_train"], row["final_budget_differs"]) == (1, 64, True)  # smoke: 256
    from s2dnas.search.journal import Journal  # its search's count, as a searched row's

    assert row["search_candidates"] == Journal(run / "search" / "journal.jsonl").num_samples == row["search_budget"] == 2
    assert row["search_space_exhausted"] is False
    t = results["timings"]
    assert row["build_seconds"] == pytest.approx(t["search_seconds"] + t["final_training_seconds"])
    # the same network, calibrated here on the same val split for each level: the row's choices
    net = load(run / "model").msnet
    splits = build_splits("fashion-mnist", data_dir=str(root / "data"), val_size=IMPORT_VAL_SIZE, seed=0)
    val = collect_logits(net, make_loader(splits.val, batch_size=128), device=torch.device("cpu"))
    confidence = load_config(None).calibration.confidence
    assert [p["drop"] for p in row["points"]] == list(methods.level_drops())
    for p in row["points"]:
        cal = calibrate(val, stage_macs=list(net.stage_macs()), confidence=confidence,
                        target_accuracy=max(data["base"]["val_accuracy"] - p["drop"], 0.0))
        assert (p["thresholds"], p["val_accuracy"], p["feasible"]) == (list(cal.thresholds), cal.accuracy,
                                                                       cal.feasible), p["drop"]
    assert row["stage_val_accuracy"] == val.stage_accuracy()
    # the run's own thresholds play no part: a copy with other ones gives the same row
    import shutil

    copy = root / "copy"
    shutil.copytree(run, copy)
    policy = json.loads((copy / "model" / "thresholds.json").read_text())
    policy["thresholds"] = [0.123] * len(policy["thresholds"])
    (copy / "model" / "thresholds.json").write_text(json.dumps(policy))
    again = methods.run_benchmark(model="resnet20", scale="smoke", out=root / "cache", dataset="fashion-mnist",
                                  data_dir=str(root / "data"), val_size=IMPORT_VAL_SIZE, methods=["static_base"],
                                  runs={"s2dnas_imported": copy}, speed=False, result_path=root / "copy.json")
    assert again["methods"]["s2dnas_imported"]["points"] == row["points"]
    assert all(p["thresholds"] != policy["thresholds"] for p in row["points"])
    assert not (root / "cache" / "s2dnas_imported").exists()  # nothing trained, nothing cached
    assert {t["method"] for t in data["targets"]} == {"s2dnas_imported"}  # an RL search: ours
    text = methods.table(data)
    assert "| s2dnas_imported |" in text and "min (imported, other final-training budget) |" in text
    assert f"`s2dnas_imported` from `{run}` (strategy rl" in text
    assert "final training 1 epoch on 64 images each, not this scale's 1 epoch on 256 images each" in text


def test_an_imported_run_is_timed_like_every_row(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    """In the speed phase the imported network is timed against the base as every row is; its
    timings go to the result file only (no cache), the static base's cache is written as before."""
    root, run = finished_run
    data = methods.run_benchmark(model="resnet20", scale="smoke", out=tmp_path / "cache", dataset="fashion-mnist",
                                 data_dir=str(root / "data"), val_size=IMPORT_VAL_SIZE, methods=["static_base"],
                                 runs={"s2dnas_imported": run}, speed=True, thread_options=(1,),
                                 result_path=tmp_path / "methods.json")
    for p in data["methods"]["s2dnas_imported"]["points"]:
        assert p["measured_speedup"] > 0 and p["measured_speedup_b1"] > 0 and p["threads"] == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["static_base"]
    assert "--run s2dnas_imported=" in data["command"]


def test_a_timing_pass_keeps_the_timings_its_caches_hold(finished_run: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each network's timings go into its cache with what they depend on; a later pass keeps them
    (a killed pass resumes) and times only what has none: imported rows always; another thread
    setting, or ``retime``, times the network again. Each timing records the pass it belongs to."""
    root, run = finished_run
    kw = dict(model="resnet20", scale="smoke", out=tmp_path / "cache", dataset="fashion-mnist",
              data_dir=str(root / "data"), val_size=IMPORT_VAL_SIZE, methods=["static_base"], speed=True,
              result_path=tmp_path / "methods.json")
    first = methods.run_benchmark(**kw, thread_options=(1,))["methods"]["static_base"]["points"]
    cache = json.loads((tmp_path / "cache" / "static_base" / "result.json").read_text())
    assert cache["points"] == json.loads(json.dumps(first)) and cache["timing"]["identity"]["thread_options"] == [1]
    assert cache["timing"]["identity"]["machine"]["cpu_count"] == os.cpu_count()
    timed: list[int] = []
    measure = methods.measure_speed

    def counting(meter: object, net: object, entry: dict) -> None:
        timed.append(len(entry["stage_macs"]))  # the base: 1 stage; the imported run: 3
        measure(meter, net, entry)

    monkeypatch.setattr(methods, "measure_speed", counting)
    again = methods.run_benchmark(**kw, thread_options=(1,), runs={"s2dnas_imported": run})["methods"]
    assert timed == [3] and again["static_base"]["points"] == first
    assert again["static_base"]["timing"] == cache["timing"]  # kept, with the pass it was timed in
    assert again["s2dnas_imported"]["timing"]["pass"] >= cache["timing"]["pass"]
    assert all(p["measured_speedup_b1"] > 0 for p in again["s2dnas_imported"]["points"])
    methods.run_benchmark(**kw, thread_options=(1, 2))
    assert timed == [3, 1]
    cache = json.loads((tmp_path / "cache" / "static_base" / "result.json").read_text())
    assert cache["timing"]["identity"]["thread_options"] == [1, 2]
    methods.run_benchmark(**kw, thread_options=(1, 2))
    assert timed == [3, 1]
    methods.run_benchmark(**kw, thread_options=(1, 2), retime=True)
    assert timed == [3, 1, 1]


def test_the_table_names_every_timing_pass_its_speed_ups_come_from() -> None:
    point = {"drop": 0.001, "feasible": True, "macs": 10, "macs_ratio": 10.0, "test_accuracy": 0.9,
             "val_accuracy": 0.9, "measured_speedup": 2.0, "measured_speedup_b1": 1.5, "operating_point": True}
    timed = lambda started: {"timing": {"identity": {}, "pass": started, "timed_at": started}}  # noqa: E731
    data = {"base_model": "resnet20", "dataset": "fashion-mnist", "target_val_accuracy": 0.9, "seeds": [0, 1],
            "base": {"val_accuracy": 0.9, "test_accuracy": 0.9, "macs": 100}, "scale": {"name": "full"},
            "machine": {"processor": "x86_64", "cpu_count": 2, "threads": 2, "torch": "2"},
            "methods": {"static_base": {"points": [point], **timed("2026-12-02T06:17:00")},
                        "s2dnas_rl": {"points": [point], "seeds": [0, 1],
                                      "per_seed": {"0": timed("2026-12-02T06:17:00"),
                                                   "1": timed("2026-12-03T09:00:00")}}}}
    assert timing.timing_passes(data) == ["2026-12-02T06:17:00", "2026-12-03T09:00:00"]
    assert "Timed in 2 passes (started 2026-12-02T06:17:00, 2026-12-03T09:00:00): " in methods.table(data)
    data["methods"]["s2dnas_rl"]["per_seed"]["1"] = timed("2026-12-02T06:17:00")
    assert "Timed in one pass (started 2026-12-02T06:17:00)." in methods.table(data)
    del data["methods"]["static_base"]["timing"], data["methods"]["s2dnas_rl"]["per_seed"]
    assert "Timed in" not in methods.table(data)  # timed before passes were recorded: nothing said


def test_a_run_on_another_data_split_is_refused(finished_run: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark's default val cut (10% of the 500 training images) is not the run's (100)."""
    root, run = finished_run
    argv = ["--scale", "smoke", "--data-dir", str(root / "data"), "--methods", "static_base", "--no-speed",
            "--out", str(tmp_path / "cache"), "--result", str(tmp_path / "methods.json"),
            "--run", f"s2dnas_imported={run}"]
    with pytest.raises(SystemExit) as exit_:
        methods.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: Expected --run s2dnas_imported={run} to be a run on the benchmark's data split, "
                          f"but it was made with val_size {IMPORT_VAL_SIZE} (benchmark: 50); rerun it with "
                          f"data.dataset=fashion-mnist data.val_size=50 data.seed=0, or drop --run s2dnas_imported")
    assert not (tmp_path / "methods.json").exists()


def test_an_imported_run_of_another_base_or_data_is_refused(tmp_path: Path) -> None:
    """check_run compares the run's recorded data spec and base (name, weights, MACs) with the benchmark's."""
    from types import SimpleNamespace

    mine = {"dataset": "fashion-mnist", "val_size": 100, "data_seed": 0, "augment": "none", "num_classes": 10,
            "preprocessing": {"input_size": [28, 28], "mean": [0.2860405743122101]}}
    ctx = SimpleNamespace(splits=SimpleNamespace(data_spec=lambda: dict(mine)), base_weights=None, base_macs=1000,
                          spec=SimpleNamespace(name="resnet20"))

    def run(config: dict | None = None, results: dict | None = None) -> "methods.ImportedRun":
        return methods.ImportedRun(name="s2dnas_x", path=tmp_path / "r",
                                   config={"model": {"name": "resnet20", "weights": None}, **(config or {})},
                                   results={"base_model": "resnet20", "base": {"macs": 1000}, **(results or {})})

    same = {"data": {**mine, "augment": "flip"}}  # the augmentation is training's, not the split's
    methods.check_run(ctx, run(), same)
    # the mean computed on another machine (found on a real run: last digits of a float32 sum) ...
    methods.check_run(ctx, run(), {"data": {**mine, "preprocessing": {"input_size": [28, 28],
                                                                      "mean": [0.28604060411453247]}}})
    with pytest.raises(RunDirError, match=r"made with preprocessing .*0\.2861.* \(benchmark: "):  # ... not another
        methods.check_run(ctx, run(), {"data": {**mine, "preprocessing": {"input_size": [28, 28], "mean": [0.2861]}}})
    with pytest.raises(RunDirError, match=r"made with data_seed 1 \(benchmark: 0\); rerun it with .*data.seed=0"):
        methods.check_run(ctx, run(), {"data": {**mine, "data_seed": 1}})
    with pytest.raises(RunDirError, match=r"made with dataset cifar10 \(benchmark: fashion-mnist\); val_size 50 "):
        methods.check_run(ctx, run(), {"data": {**mine, "dataset": "cifar10", "val_size": 50}})
    # a model saved without its data spec: the run's config.yaml
    with pytest.raises(RunDirError, match=r"made with val_size None \(benchmark: 100\); "):
        methods.check_run(ctx, run({"data": {"dataset": "fashion-mnist", "val_size": None, "seed": 0}}), {})
    base = r"Expected --run s2dnas_x=.* to start from the benchmark's base model, but its base differs: "
    with pytest.raises(RunDirError, match=base + r"model vgg \(benchmark: resnet20\); rerun it with "
                                                 r"model.name=resnet20 model.weights=null, or drop --run s2dnas_x"):
        methods.check_run(ctx, run(results={"base_model": "vgg"}), same)
    weights = tmp_path / "base.safetensors"
    weights.write_bytes(b"weights")
    with pytest.raises(RunDirError, match=base + r"weights .*base.safetensors \(benchmark: shipped\); "):
        methods.check_run(ctx, run({"model": {"name": "resnet20", "weights": str(weights)}}), same)
    with pytest.raises(RunDirError, match=base + r"MACs 999 \(benchmark: 1000\); "):
        methods.check_run(ctx, run(results={"base": {"macs": 999}}), same)
    # a base trained by the benchmark: the run's copy of it (same bytes, another path) is the same base
    copy = tmp_path / "copy" / "model.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(b"weights")
    ctx.base_weights = str(weights)
    methods.check_run(ctx, run({"model": {"name": "resnet20", "weights": str(copy.parent)}}), same)
    copy.write_bytes(b"other weights")
    with pytest.raises(RunDirError, match=base + r"weights"):
        methods.check_run(ctx, run({"model": {"name": "resnet20", "weights": str(copy)}}), same)


def test_imported_rows_count_as_ours_only_when_they_searched_as_ours() -> None:
    """As only the RL and one-shot rows are ours (not the hand-picked or random-search controls), an
    imported run is ours when its strategy is rl or oneshot with the RL controller."""
    point = {"drop": 0.001, "feasible": True, "macs": 10, "test_accuracy": 0.9, "val_accuracy": 0.9}
    row = lambda **kw: {"points": [dict(point)], **kw}  # noqa: E731
    m = {"s2dnas_random": row(), "s2dnas_gpu": row(imported_from="runs/gpu", strategy="oneshot"),
         "s2dnas_rand_gpu": row(imported_from="runs/r", strategy="random"), "s2dnas_rl": row(),
         "s2dnas_handpicked": row(), "s2dnas_oneshot_random_budget": row(),
         "s2dnas_rand_sn": row(imported_from="runs/s", strategy="oneshot", controller="random"),
         "s2dnas_lstm": row(imported_from="runs/l", strategy="rl", controller="lstm")}
    assert methods.ours(m) == ["s2dnas_rl", "s2dnas_gpu", "s2dnas_lstm"]
    data = {"base": {"macs": 100, "test_accuracy": 0.9, "val_accuracy": 0.9}, "methods": m}
    assert {t["method"] for t in methods.check_targets(data)} == {"s2dnas_rl", "s2dnas_gpu", "s2dnas_lstm"}


def test_the_targets_summary_puts_every_family_s_ours_rows_in_one_table() -> None:
    def point(macs: float, sp: float, feasible: bool = True) -> dict:
        return {"drop": 0.001, "feasible": feasible, "macs": macs, "test_accuracy": 0.91, "val_accuracy": 0.91,
                "measured_speedup": sp, "measured_speedup_b1": None}

    def family(name: str, ours: dict) -> dict:
        return {"base_model": name, "base": {"macs": 100, "test_accuracy": 0.91, "val_accuracy": 0.912},
                "methods": {**ours, "cascade_x0.25": {"points": [point(20, 2.0)]}}}

    resnet = family("resnet20", {"s2dnas_rl": {"seeds": [0, 1, 2], "points": [point(9, 5.0)]},
                                 "s2dnas_demo": {"imported_from": "runs/demo", "strategy": "oneshot",
                                                 "points": [point(30, 1.0, feasible=False)]}})
    vgg = family("vgg", {"s2dnas_oneshot": {"seeds": [0], "points": [point(12, 3.0)]}})
    lines = methods.targets_summary([resnet, vgg]).splitlines()
    assert lines[0] == ("| base | ours | seeds | test >= base - 0.1 pt | <= 15% of the MACs | <= half the best "
                        "alternative's MACs | >= 2x its speed-up, b256 | >= 2x its speed-up, b1 |")
    assert lines[2] == ("| resnet20 | s2dnas_rl | 0, 1, 2 | **met**: reached on val; test 91.00% vs 90.90% | "
                        "**met**: 9.0% (test 91.00%, base 91.00%) | **met**: 9.0% vs cascade_x0.25 20.0% | "
                        "**met**: 5.00x vs cascade_x0.25 2.00x | not measured |")
    assert lines[3] == ("| resnet20 | s2dnas_demo | imported | not met: not reached on val (val 91.00%) | - | - | - "
                        "| - |")  # a level not reached meets nothing, and the rest is not claimed
    assert lines[4].startswith("| vgg | s2dnas_oneshot | 0 | **met**: ") and "not met: 12.0% vs cascade_x0.25 20.0%" \
        in lines[4] and "not met: 3.00x vs cascade_x0.25 2.00x" in lines[4]
    assert len(lines) == 5
    with pytest.raises(ValueError, match="different operating points"):
        methods.targets_summary([resnet, {**vgg, "operating_drop": 0.01}])
    # nothing disappears: an ours-row without a point at the level, a file without ours-rows
    vgg["methods"]["s2dnas_oneshot"]["points"][0]["drop"] = 0.02
    lines = methods.targets_summary([vgg, family("mnv2", {})]).splitlines()
    assert lines[2:] == ["| vgg | s2dnas_oneshot | 0 | no point at this level | - | - | - | - |",
                         "| mnv2 | no ours-row in this file | - | - | - | - | - | - |"]


def _capture_runs(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, types.SimpleNamespace], Any]:
    """``config_of(name, ctx)``: the config searched row ``name`` runs ``s2dnas run`` with for
    ``ctx`` (its run stopped there)."""
    configs = {}

    def capture(cfg, **kw):
        configs[Path(kw["out"]).name] = cfg
        raise _Stop

    def config_of(name: str, ctx: types.SimpleNamespace) -> Any:
        with pytest.raises(_Stop):
            methods.METHODS[name](ctx)
        return configs[methods.run_dir(ctx, name).name]

    monkeypatch.setattr(methods, "run_pipeline", capture)
    return config_of


def _search_context(out: Path, *, seed: int, model: str) -> types.SimpleNamespace:
    """What a searched row reads of its context, at scale full with ``--supernet out/sn``."""
    return types.SimpleNamespace(scale=methods.SCALES["full"], out=out, seed=seed, supernet=str(out / "sn"),
                                 dataset="fashion-mnist", data_dir=None, val_size=None, base_weights=None,
                                 spec=methods.MODELS[model], device="cpu", teacher_store=None)


def test_the_budget_mode_one_shot_row_searches_as_the_demo_does(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Same run as s2dnas_oneshot (super-network, seed, budgets) except the demo's MACs budget and
    reward; without --supernet it scores with the super-network its finished sibling trained."""
    config_of = _capture_runs(monkeypatch)
    ctx = _search_context(tmp_path, seed=2, model="resnet20")
    plain, budget = config_of("s2dnas_oneshot", ctx), config_of("s2dnas_oneshot_budget", ctx)
    demo = load_config(DEMO_CONFIG)
    assert demo.calibration.macs_budget is not None  # the demo searches within a budget
    assert budget.calibration.macs_budget == demo.calibration.macs_budget
    assert budget.search.reward == demo.search.reward == "accuracy_in_budget"
    assert plain.calibration.macs_budget is None and plain.search.reward == "macs_saving"
    assert budget.seed == plain.seed == 2
    assert dataclasses.replace(budget, out=plain.out, calibration=plain.calibration,
                               search=dataclasses.replace(budget.search, reward=plain.search.reward)) == plain
    assert "s2dnas_oneshot_budget" in methods.SEARCHED and "s2dnas_oneshot_budget" in methods.OURS
    # no --supernet: its own super-network until the sibling of the same seed has finished, then the sibling's
    ctx.supernet = None
    assert config_of("s2dnas_oneshot_budget", ctx).search.supernet is None
    (tmp_path / "s2dnas_oneshot-seed2" / "supernet").mkdir(parents=True, exist_ok=True)
    (tmp_path / "s2dnas_oneshot-seed2" / "supernet" / "supernet.json").write_text("{}")
    (tmp_path / "s2dnas_oneshot-seed2" / "results.json").write_text("{}")
    assert config_of("s2dnas_oneshot_budget", ctx).search.supernet == str(tmp_path / "s2dnas_oneshot-seed2" / "supernet")


def test_the_random_budget_row_is_the_budget_row_with_random_search(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the one-shot controller: the budget-mode run with ``search.controller: random``
    and nothing else changed (super-network, seed, budgets, final training); a searched row per
    seed, neither ours nor an alternative."""
    config_of = _capture_runs(monkeypatch)
    ctx = _search_context(tmp_path, seed=1, model="vgg16_bn_w50")
    rl, rnd = config_of("s2dnas_oneshot_budget", ctx), config_of("s2dnas_oneshot_random_budget", ctx)
    assert rl.search.controller == "lstm" and rnd.search.controller == "random"
    assert dataclasses.replace(rnd, out=rl.out, search=dataclasses.replace(rnd.search, controller="lstm")) == rl
    name = "s2dnas_oneshot_random_budget"
    assert name in methods.SEARCHED and name not in methods.OURS and name not in methods.ALTERNATIVES
    # no --supernet: the super-network a finished sibling of its seed trained (the plain one-shot row's
    # first, else the budget row's), else its own
    ctx.supernet = None

    def searched_with() -> str | None:
        return config_of(name, ctx).search.supernet

    assert searched_with() is None
    budget, plain = tmp_path / "s2dnas_oneshot_budget-seed1", tmp_path / "s2dnas_oneshot-seed1"
    for sibling in (budget, plain):
        (sibling / "supernet").mkdir(parents=True, exist_ok=True)
        (sibling / "results.json").write_text("{}")
    assert searched_with() is None  # both finished, but each loaded its super-network: none of their own
    (budget / "supernet" / "supernet.json").write_text("{}")
    assert searched_with() == str(budget / "supernet")
    (plain / "supernet" / "supernet.json").write_text("{}")
    assert searched_with() == str(plain / "supernet")


@pytest.mark.parametrize("plain", ["s2dnas_oneshot", "s2dnas_rl"])
def test_the_reftarget_rows_change_only_the_search_target(plain: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``*_reftarget`` is its plain row with ``search.target_from: reference`` and nothing else changed
    (super-network, seed, budgets, final training); a searched row per seed, and ours."""
    config_of = _capture_runs(monkeypatch)
    ctx = _search_context(tmp_path, seed=1, model="resnet20")
    name = f"{plain}_reftarget"
    a, b = config_of(plain, ctx), config_of(name, ctx)
    assert a.search.target_from == "run" and b.search.target_from == "reference"
    assert dataclasses.replace(b, out=a.out, search=dataclasses.replace(b.search, target_from="run")) == a
    assert name in methods.SEARCHED and name in methods.OURS and name not in methods.ALTERNATIVES


def test_a_budget_mode_cache_of_another_demo_budget_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = methods.protocol_identity(scale="smoke", spec=methods.MODELS["resnet20"])
    row = tmp_path / "c" / "s2dnas_oneshot_budget"
    row.mkdir(parents=True)
    now = methods._demo_budget()
    kw = dict(model="resnet20", scale="smoke", out=tmp_path / "c", methods=["s2dnas_oneshot_budget"], seeds=(0,),
              data_dir=str(tmp_path / "no-data"))
    for recorded in ({**now, "calibration.macs_budget": 0.25}, None):  # another budget; none recorded
        entry = {"protocol": identity, "supernet": {"source": "trained by this run"}}
        (row / "result.json").write_text(json.dumps(entry if recorded is None else {**entry, "search_target": recorded}))
        with pytest.raises(RunDirError, match=r"s2dnas_oneshot_budget holds a result searched with another budget "
                                              r"mode .*; delete "):
            methods.run_benchmark(**kw)
    assert methods._search_target_mismatch("s2dnas_oneshot_budget", {"search_target": now}) is None
    assert methods._search_target_mismatch("s2dnas_oneshot", {}) is None  # other rows have no budget mode


def test_a_resumed_runs_build_time_counts_the_work_before_its_restart() -> None:
    """A run resumed after its search finished records ~0 s of search and only the last process's
    training on its clock; the journal's candidates and the checkpointed epochs carry the rest."""
    resumed = {"supernet_seconds": 0.1, "search_seconds": 0.0003, "search_candidate_seconds": 1000.0,
               "final_training_seconds": 3200.0, "final_training_epoch_seconds": 4100.0, "total_seconds": 3220.0}
    assert methods.build_seconds(resumed) == pytest.approx(0.1 + 1000.0 + 4100.0)
    straight = {"search_seconds": 1010.0, "search_candidate_seconds": 1000.0, "final_training_seconds": 4150.0,
                "final_training_epoch_seconds": 4100.0}
    assert methods.build_seconds(straight) == pytest.approx(1010.0 + 4150.0)  # the clock, which covers more
    assert methods.build_seconds({"search_seconds": 5.0, "final_training_seconds": 9.0}) == 14.0  # before the keys
    # a super-network the run trained, then resumed after it: its epochs, not its loading
    assert methods.build_seconds({**resumed, "supernet_epoch_seconds": 600.0}) == pytest.approx(600.0 + 5100.0)
    assert methods.build_seconds({"total_seconds": 30.0}) == 30.0
    # a final training that read the base's logits from the benchmark's cache: as long as it would have taken alone
    assert methods.build_seconds({**straight, "final_training_teacher_read_back_seconds": 700.0}) == \
        pytest.approx(1010.0 + 4150.0 + 700.0)


def test_a_static_model_that_read_the_teachers_logits_back_counts_them_in_its_build_time(tmp_path: Path) -> None:
    """The second of two thin models of one seed reads every logit the first computed: its build time
    is what it would have taken alone, not its shorter clock."""
    from s2dnas.train.teacher import CachedTeacher, LogitStore
    from tests._models import ToyCNN, blob_splits

    class Slow(torch.nn.Module):  # a teacher of at least 200 ms a batch
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.inner = ToyCNN(num_classes=2).eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import time

            time.sleep(0.2)
            return self.inner(x)

    splits, slow, store = blob_splits(), Slow().eval(), LogitStore(tmp_path / "logits.sqlite")
    runs = []
    for name in ("first", "second"):  # a teacher object per training, as methods.teacher() makes them
        _, seconds = methods._train_from_scratch("tests._models:ToyCNN", splits, tmp_path / name, epochs=2,
                                                 limit_train=None, device=torch.device("cpu"),
                                                 teacher=CachedTeacher(slow, store))
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        runs.append((seconds, metrics["train_seconds"]))
    batches = 2 * -(-len(splits.train) // 128)
    assert store.hits == store.misses == batches
    (first, first_clock), (second, second_clock) = runs
    assert first_clock >= 0.2 * batches  # it ran them
    assert second_clock < 0.2 * batches <= second - second_clock  # its clock saw none of them; its build time does
