"""The super-network evidence scripts (benchmarks/supernet_ranking.py, benchmarks/search_seeds.py) on a
toy CNN and synthetic data: they score with the run's evaluator, cache and resume, refuse another setup."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmarks.ranking import kendall_tau
from benchmarks.ranking_proxies import correct_at_best, resampled_taus, run_proxies
from benchmarks.search_seeds import main as seeds_main
from benchmarks.search_seeds import run_seeds
from benchmarks.supernet_ranking import main as ranking_main
from benchmarks.supernet_ranking import pick_architectures, run_ranking
from benchmarks.supernet_setup import SupernetSetup, summary_stats
from s2dnas.config import CalibrationTarget, SupernetConfig, load_config
from s2dnas.data import DataSplits, make_loader
from s2dnas.data.datasets import TensorImageDataset
from s2dnas.dynamic.calibrate import StageLogits
from s2dnas.errors import CheckpointError, ConfigError, RunDirError
from s2dnas.search.journal import Journal
from s2dnas.space import Space
from s2dnas.train.loops import evaluate
from s2dnas.train.sandwich import cheapest, most_expensive
from s2dnas.train.supernet import SuperNet
from s2dnas.train.supernet_training import train_supernet
from tests._models import trained_toy

CPU = torch.device("cpu")


def _images(n: int, gen: torch.Generator) -> TensorImageDataset:
    """8x8 noise plus a bright quadrant; the class is the quadrant."""
    labels = torch.arange(n) % 4
    images = torch.randn(n, 1, 8, 8, generator=gen) * 0.5
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        images[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 2.0
    return TensorImageDataset(images, labels)


@pytest.fixture(scope="module")
def setup() -> SupernetSetup:
    gen = torch.Generator().manual_seed(0)
    splits = DataSplits(name="quadrants", train=_images(192, gen), val=_images(96, gen), test=_images(32, gen),
                        num_classes=4, in_channels=1, input_size=(8, 8), mean=(0.0,), std=(1.0,),
                        class_names=("a", "b", "c", "d"))
    base = trained_toy(splits, epochs=2)
    space = Space(base, input_shape=(1, 8, 8), num_stages=3, ratio_grid=4, model_name="toy")
    supernet = SuperNet(space)
    meta = train_supernet(supernet, splits.train, config=SupernetConfig(epochs=1, batch_size=32, limit_train=64,
                                                                        num_sampled=1, seed=0), progress=False)
    cfg = load_config(None, overrides=["data.batch_size=32", "data.eval_batch_size=96", "search.bn_batches=2",
                                       "train.limit_train=32", "train.epochs=1", "final_epochs=1"])
    base_val = evaluate(base, make_loader(splits.val, batch_size=96), device=CPU).accuracy
    return SupernetSetup(cfg=cfg, splits=splits, base=base, supernet=supernet.eval(),
                         supernet_meta={"config_hash": meta["config_hash"], "epoch": 1, "epochs": 1},
                         base_val_accuracy=base_val, target=CalibrationTarget(target_accuracy=base_val - 0.01),
                         device=CPU)


def test_architectures_are_the_extremes_the_hand_picked_and_a_spread_by_macs(setup: SupernetSetup) -> None:
    space = setup.supernet.space
    archs = pick_architectures(space, count=6, pool=12)
    assert archs == pick_architectures(space, count=6, pool=12)  # deterministic
    assert list(archs)[:3] == ["cheapest", "most_expensive", "hand_picked"]
    assert archs["cheapest"] == cheapest(space) and archs["most_expensive"] == most_expensive(space)
    assert len({space.canonical(a) for a in archs.values()}) == len(archs) == 6  # distinct networks
    spread = [sum(space.build(a).analytic_macs) for n, a in archs.items() if n.startswith("spread_")]
    assert spread == sorted(spread) and spread[0] < spread[-1]


def test_ranking_scores_fine_tunes_in_steps_and_refuses_another_setup(setup: SupernetSetup, tmp_path: Path) -> None:
    out = tmp_path / "ranking.json"
    kw = dict(work_dir=tmp_path / "work", out=out, count=4, pool=6, progress=False)
    first = run_ranking(setup, **kw, stop_after=1)
    assert first["architectures"] == 4 and first["finetuned"] == 1 and not first["complete"]
    assert json.loads(out.read_text())["finetuned"] == 1
    # the super-network score is the search's: the run's evaluator on the same architecture
    evaluator = setup.evaluator()
    for name, arch in pick_architectures(setup.supernet.space, count=4, pool=6).items():
        assert first["rows"][name]["supernet"]["reward"] == evaluator.evaluate(arch).reward, name
    done = run_ranking(setup, **kw)
    assert done["complete"] and done["finetuned"] == 4
    assert all(done["rows"][n]["supernet"] == first["rows"][n]["supernet"] for n in first["rows"])  # cached
    finetuned = done["rows"]["cheapest"]["finetuned"]
    assert finetuned == first["rows"]["cheapest"]["finetuned"]  # fine-tuned once, in the first call
    assert finetuned["epochs"] == 1
    rows = [done["rows"][n] for n in pick_architectures(setup.supernet.space, count=4, pool=6)]
    assert done["kendall_tau_reward"] == kendall_tau([r["supernet"]["reward"] for r in rows],
                                                     [r["finetuned"]["reward"] for r in rows])
    assert len(done["mean_gap_per_stage"]) == 3 and done["mean_gap_last_stage"] == done["mean_gap_per_stage"][-1]
    # fine-tuning moved the weights: the stage accuracies are the fine-tuned network's own
    assert any(r["finetuned"]["metrics"]["stage_val_accuracy"] != r["supernet"]["metrics"]["stage_val_accuracy"]
               for r in done["rows"].values())
    before = out.read_bytes()
    with pytest.raises(RunDirError, match="another setup .*final_training"):
        run_ranking(setup, **{**kw, "final_epochs": 2})
    # the scores' batch-norm re-estimation reads batches of data.batch_size: another one is another setup
    other = dataclasses.replace(setup, cfg=dataclasses.replace(
        setup.cfg, data=dataclasses.replace(setup.cfg.data, batch_size=setup.cfg.data.batch_size // 2)))
    with pytest.raises(RunDirError, match="another setup .*batch_size"):
        run_ranking(other, **kw)
    assert out.read_bytes() == before


def test_search_seeds_runs_the_library_search_and_resumes(setup: SupernetSetup, tmp_path: Path) -> None:
    out = tmp_path / "seeds.json"
    first = run_seeds(setup, work_dir=tmp_path / "work", out=out, budget=3, seeds=(0, 1), progress=False)
    for strategy in ("rl", "random"):
        rows = first["searches"][strategy]
        assert [r["seed"] for r in rows] == [0, 1] and all(r["candidates"] == 3 for r in rows)
        for r in rows:
            records = Journal(tmp_path / "work" / f"{strategy}_seed{r['seed']}" / "journal.jsonl").records()
            assert r["reward"] == max(x["reward"] for x in records)
        a, b = (r["reward"] for r in rows)
        assert first["summary"][strategy]["reward"] == pytest.approx(
            {"n": 2, "mean": (a + b) / 2, "std": abs(a - b) / 2 ** 0.5, "min": min(a, b), "max": max(a, b)})
    hand = setup.evaluator().evaluate(setup.supernet.space.default_architecture())
    assert first["hand_picked"]["reward"] == hand.reward
    lines = {p: p.read_text() for p in (tmp_path / "work").glob("*/journal.jsonl")}
    again = run_seeds(setup, work_dir=tmp_path / "work", out=out, budget=3, seeds=(0, 1), progress=False)
    assert again["searches"] == first["searches"]
    assert {p: p.read_text() for p in lines} == lines  # resumed from the journals: nothing scored again


def test_search_seeds_refuses_to_resume_with_another_controller(setup: SupernetSetup, tmp_path: Path) -> None:
    """The journals of one controller setting are not continued by another (here a 10x learning rate)."""
    run_seeds(setup, work_dir=tmp_path / "w", out=tmp_path / "a.json", budget=2, seeds=(0,), strategies=("rl",),
              progress=False)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["hand_picked.json", "rl_seed0", "setup.json"]
    journal = (tmp_path / "w" / "rl_seed0" / "journal.jsonl").read_text()
    faster = dataclasses.replace(setup, cfg=dataclasses.replace(
        setup.cfg, search=dataclasses.replace(setup.cfg.search, controller_lr=3.5e-2)))
    with pytest.raises(CheckpointError, match=r"rl_seed0/journal.jsonl was written by another configuration"):
        run_seeds(faster, work_dir=tmp_path / "w", out=tmp_path / "b.json", budget=3, seeds=(0,), strategies=("rl",),
                  progress=False)
    assert (tmp_path / "w" / "rl_seed0" / "journal.jsonl").read_text() == journal
    assert not (tmp_path / "b.json").exists()
    # nor is the RL search run with random search as its controller: refused before anything runs
    uniform = dataclasses.replace(setup, cfg=dataclasses.replace(
        setup.cfg, search=dataclasses.replace(setup.cfg.search, controller="random")))
    with pytest.raises(ConfigError, match=r"^Expected search.controller lstm or factorized for --strategies rl"):
        run_seeds(uniform, work_dir=tmp_path / "u", out=tmp_path / "u.json", budget=2, seeds=(0,), progress=False)
    assert not (tmp_path / "u").exists()


def test_rerunning_one_strategy_keeps_the_other_strategies_rows(setup: SupernetSetup, tmp_path: Path) -> None:
    """``--strategies random`` then ``--strategies rl`` in one --dir: the summary holds both; a search
    of the other strategy short of the budget is left out (listed), one of other settings refused."""
    out = tmp_path / "seeds.json"
    kw = dict(work_dir=tmp_path / "w", out=out, seeds=(0,), progress=False)
    first = run_seeds(setup, **kw, budget=2, strategies=("random",))
    assert set(first["searches"]) == {"random"}
    journal = tmp_path / "w" / "random_seed0" / "journal.jsonl"
    lines = journal.read_text()
    run_seeds(setup, **kw, budget=2, strategies=("rl",))
    saved = json.loads(out.read_text())
    assert set(saved["searches"]) == set(saved["controllers"]) == {"rl", "random"}
    assert set(saved["summary"]) == {"rl", "random", "hand_picked"}
    assert saved["searches"]["random"] == first["searches"]["random"]  # read back from its journal ...
    assert journal.read_text() == lines  # ... not searched again
    assert saved["summary"]["rl"]["reward"]["n"] == 1 and saved["incomplete"] == []
    more = run_seeds(setup, **kw, budget=3, strategies=("random",))  # the rl search has 2 of 3 candidates
    assert set(more["searches"]) == {"random"} and more["searches"]["random"][0]["candidates"] == 3
    assert more["incomplete"] == ["rl_seed0 (2 of 3 candidates)"]
    faster = dataclasses.replace(setup, cfg=dataclasses.replace(
        setup.cfg, search=dataclasses.replace(setup.cfg.search, controller_lr=3.5e-2)))
    with pytest.raises(CheckpointError, match=r"rl_seed0/journal.jsonl was written by another configuration .* "
                                              r"cannot be reported with this run's"):
        run_seeds(faster, **kw, budget=3, strategies=("random",))


def test_kendall_tau_of_known_orderings() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    assert kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / 3)  # the tie counts as neither


def test_summary_stats_of_known_values() -> None:
    assert summary_stats([1.0, 2.0, 3.0, 4.0]) == pytest.approx(
        {"n": 4, "mean": 2.5, "std": (5 / 3) ** 0.5, "min": 1.0, "max": 4.0})  # sample std: sum of squares 5 over 3
    assert summary_stats([0.25]) == {"n": 1, "mean": 0.25, "std": 0.0, "min": 0.25, "max": 0.25}


_SEEDS = "Expected --seeds as distinct comma-separated integers >= 0 (e.g. 0,1,2), but got "


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,x"], _SEEDS + "'0,x'"),
    (["--seeds", "1,1"], _SEEDS + "'1,1'"),
    (["--seeds", "0,-2"], _SEEDS + "'0,-2'"),
    (["--budget", "0"], "Expected --budget >= 1, but got 0"),
    (["--strategies", "rl,bayes"], "Expected --strategies as distinct comma-separated names of rl, random, "
                                   "but got 'rl,bayes'"),
])
def test_search_seeds_refuses_malformed_options_in_one_line(argv: list[str], message: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert seeds_main(["--supernet", "nowhere", *argv]) == 2  # refused before the super-network is looked for
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_ranking_refuses_fewer_than_four_architectures_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert ranking_main(["--supernet", "nowhere", "--architectures", "3"]) == 2
    assert capsys.readouterr().err.strip() == "error: Expected --architectures >= 4, but got 3"


def test_ranking_proxies_rescore_the_ranked_networks_and_need_a_complete_ranking(setup: SupernetSetup,
                                                                                 tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "proxies.json"
    run_ranking(setup, work_dir=work, out=tmp_path / "r.json", count=4, pool=6, progress=False, stop_after=1)
    with pytest.raises(RunDirError, match="3 of 4 architectures are not fine-tuned yet"):
        run_proxies(setup, work_dir=work, out=out, bn_batches=3, finetune_images=32, resamples=5)
    assert not out.exists()
    ranking = run_ranking(setup, work_dir=work, out=tmp_path / "r.json", count=4, pool=6, progress=False)
    result = run_proxies(setup, work_dir=work, out=out, bn_batches=3, finetune_images=32, resamples=5)
    assert set(result["proxies"]) == {"supernet", "supernet_bn3", "finetune32"}
    assert set(result["proxies"]["supernet"]) >= {"bootstrap_best_accuracy", "cross_half_best_accuracy"}
    assert set(result["ground_truth"]) == {"split_half_best_accuracy"}
    for name, row in ranking["rows"].items():  # the search's score and the ranking's ground truth, re-derived
        assert result["rows"][name]["supernet"]["reward"] == row["supernet"]["reward"]
        assert result["rows"][name]["finetuned"]["reward"] == row["finetuned"]["reward"]
    assert result["proxies"]["supernet"]["kendall_tau_reward"] == ranking["kendall_tau_reward"]
    logits = sorted(work.glob("*/proxies/*.pt"))
    assert len(logits) == 4 * 4
    stamps = [p.stat().st_mtime_ns for p in logits]
    assert run_proxies(setup, work_dir=work, out=out, bn_batches=3, finetune_images=32, resamples=5)["rows"] == \
        result["rows"]
    assert [p.stat().st_mtime_ns for p in logits] == stamps  # cached: nothing scored again
    # a cached network made another way (its key: options, recipe, setup) is scored again
    few_shot = work / "cheapest" / "proxies" / "finetune32.pt"
    saved = torch.load(few_shot, weights_only=True)
    torch.save({**saved, "key": "another recipe"}, few_shot)
    again = run_proxies(setup, work_dir=work, out=out, bn_batches=3, finetune_images=32, resamples=5)["rows"]
    assert again["cheapest"]["finetune32"]["reward"] == result["rows"]["cheapest"]["finetune32"]["reward"]
    assert again["cheapest"]["finetune32"]["seconds"] != result["rows"]["cheapest"]["finetune32"]["seconds"]
    assert torch.load(few_shot, weights_only=True)["key"] == saved["key"]
    other = dataclasses.replace(setup, target=CalibrationTarget(target_accuracy=0.5))
    with pytest.raises(RunDirError, match="ranked with another setup .changed: target"):
        run_proxies(other, work_dir=work, out=out)


def test_resampled_taus_of_orderings_that_image_noise_cannot_change() -> None:
    """Three networks right on 20%, 50% and 80% of 2,000 images: every resample and every half keeps
    their order, so a proxy that agrees has tau 1, a reversed one -1, and the truth agrees with itself."""
    gen = torch.Generator().manual_seed(0)
    truth = [torch.rand(2000, generator=gen) < p for p in (0.2, 0.5, 0.8)]
    flipped = [torch.rand(2000, generator=gen) < p for p in (0.8, 0.5, 0.2)]
    taus = resampled_taus({"truth": truth, "same": truth, "reversed": flipped}, truth="truth", resamples=20)
    assert taus["same"]["bootstrap"] == {"mean": 1.0, "p05": 1.0, "p95": 1.0}
    assert taus["same"]["cross_half"]["mean"] == 1.0
    assert taus["reversed"]["bootstrap"]["mean"] == -1.0 and taus["reversed"]["cross_half"]["mean"] == -1.0
    assert taus["truth"] == {"split_half": {"mean": 1.0, "p05": 1.0, "p95": 1.0}}


def test_resampled_taus_spread_when_the_networks_are_within_image_noise() -> None:
    """Two networks 2 points apart on 400 images (noise ~2.5 points): resamples and halves disagree
    on their order, so the taus spread between -1 and 1, and the truth disagrees with itself."""
    gen = torch.Generator().manual_seed(0)
    truth = [torch.rand(400, generator=gen) < p for p in (0.50, 0.52)]
    taus = resampled_taus({"truth": truth, "same": truth}, truth="truth", resamples=200)
    # scored on the same draws they never disagree (a draw where the two tie counts as neither)
    assert 0.9 < taus["same"]["bootstrap"]["mean"] <= 1.0 and taus["same"]["bootstrap"]["p05"] >= 0.0
    for stats in (taus["truth"]["split_half"], taus["same"]["cross_half"]):
        assert -1.0 < stats["mean"] < 1.0 and stats["p05"] == -1.0 and stats["p95"] == 1.0


def test_correct_at_best_follows_the_exit_rule() -> None:
    labels = torch.tensor([0, 1, 0, 1])
    stage0 = torch.tensor([[9.0, 0.0], [9.0, 0.0], [0.0, 0.1], [0.0, 0.1]])  # confident on 0-1, right on 0 and 3
    stage1 = torch.tensor([[9.0, 0.0], [0.0, 9.0], [0.0, 9.0], [0.0, 9.0]])  # right on 0, 1, 3
    logits = StageLogits(torch.stack([stage0, stage1]), labels)
    assert correct_at_best(logits, (0.9,), measure="max_softmax").tolist() == [True, False, False, True]
    assert correct_at_best(logits, (2.0,), measure="max_softmax").tolist() == [True, True, False, True]
    assert correct_at_best(logits, (0.0,), measure="max_softmax").tolist() == [True, False, False, True]


def test_ranking_proxies_at_a_macs_budget_rank_only_the_architectures_that_fit(setup: SupernetSetup,
                                                                               tmp_path: Path) -> None:
    work = tmp_path / "work"
    run_ranking(setup, work_dir=work, out=tmp_path / "r.json", count=4, pool=6, progress=False)
    at_target = run_proxies(setup, work_dir=work, out=tmp_path / "a.json", bn_batches=3, finetune_images=32,
                            resamples=5)
    space = setup.supernet.space
    archs = pick_architectures(space, count=4, pool=6)
    first_stage = {n: space.build(a).analytic_macs[0] / space.base_macs() for n, a in archs.items()}
    budget = sorted(first_stage.values())[1] + 1e-6  # two first stages fit
    result = run_proxies(setup, work_dir=work, out=tmp_path / "b.json", bn_batches=3, finetune_images=32,
                         resamples=5, macs_budget=budget)
    assert sorted(result["ranked"]) == sorted(n for n, f in first_stage.items() if f <= budget)
    assert result["reward"] == "accuracy_in_budget" and result["all_below_target"] is None
    for name, row in result["rows"].items():  # the same cached networks, scored within the budget
        for method in ("supernet", "finetuned"):
            assert row[method]["seconds"] == at_target["rows"][name][method]["seconds"]
            assert row[method]["feasible"] == (first_stage[name] <= budget)
            if row[method]["feasible"]:
                assert row[method]["reward"] == row[method]["accuracy"]
    assert set(result["proxies"]["supernet"]) >= {"bootstrap_accuracy_in_budget", "cross_half_accuracy_in_budget"}
