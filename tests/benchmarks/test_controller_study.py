"""benchmarks/controller_study.py: the additive surrogate is exact where it should be, journals are
read once per architecture (and refused, not half-read, when corrupt), the space is the one the
searches ran in, and the study's regret is measured against the true optimum."""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from benchmarks import controller_study as cs
from benchmarks.search_seeds import main as seeds_main
from benchmarks.supernet_setup import check_identity
from s2dnas.errors import CheckpointError, ConfigError
from s2dnas.search.random import RandomController
from s2dnas.space.decision import Decision
from s2dnas.train.supernet import SuperNet
from tests._models import blob_splits, make_space

DECISIONS = [Decision("a", (0, 1, 2)), Decision("b", (0, 1)), Decision("c", (0, 1, 2, 3))]
WEIGHTS = {"a": [0.0, 0.3, -0.2], "b": [0.1, -0.1], "c": [0.0, 0.05, 0.4, -0.3]}


def _every_sample() -> list[dict[str, int]]:
    return [dict(zip("abc", t)) for t in itertools.product(range(3), range(2), range(4))]


def _truth(sample: dict[str, int]) -> float:
    return 1.0 + sum(WEIGHTS[k][v] for k, v in sample.items())


def test_an_additive_reward_is_recovered_and_its_best_is_the_brute_force_maximum() -> None:
    samples = _every_sample()
    surrogate = cs.fit_surrogate(DECISIONS, samples, [_truth(s) for s in samples], ridge=1e-9)
    assert max(abs(surrogate(s) - _truth(s)) for s in samples) < 1e-6
    assert surrogate.best() == pytest.approx(max(_truth(s) for s in samples), abs=1e-6)  # 1.0 + 0.3 + 0.1 + 0.4


def _write_journals(folder: Path, parts: dict[str, list[dict]]) -> None:
    for name, lines in parts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "journal.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_journals_are_read_once_per_architecture_and_failed_candidates_skipped(tmp_path: Path) -> None:
    samples = _every_sample()[:12]
    parts = {}
    for name, part in (("rl_seed0", samples[:8]), ("random_seed0", samples[4:])):  # 4 architectures in both
        lines = [{"kind": "header"}, {"sample": samples[0], "metrics": {"error": "failed"}, "reward": -2.0}]
        lines += [{"sample": s, "metrics": {"feasible": False}, "reward": _truth(s) + (name == "random_seed0")}
                  for s in part]
        parts[name] = lines
    _write_journals(tmp_path, parts)
    got, rewards = cs.read_journals(tmp_path)
    assert len(got) == 12 and len({tuple(sorted(s.items())) for s in got}) == 12
    assert -2.0 not in rewards
    read = {tuple(sorted(s.items())): r for s, r in zip(got, rewards)}
    for s in samples[4:8]:  # in both: random_seed0 comes first in sorted order, its (+1) score is kept
        assert read[tuple(sorted(s.items()))] == pytest.approx(_truth(s) + 1)
    for s in samples[:4]:
        assert read[tuple(sorted(s.items()))] == pytest.approx(_truth(s))
    with pytest.raises(ConfigError, match=r"Expected at least 10 scored candidates in .*, but found 0"):
        cs.read_journals(tmp_path / "rl_seed0")


def _scored(samples: list[dict[str, int]]) -> list[dict]:
    return [{"sample": s, "metrics": {"feasible": True}, "reward": _truth(s)} for s in samples]


def test_a_torn_last_line_is_skipped_but_a_corrupt_or_foreign_line_is_refused(tmp_path: Path) -> None:
    samples = _every_sample()[:12]
    _write_journals(tmp_path, {"random_seed0": _scored(samples)})
    journal = tmp_path / "random_seed0" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines) + "\n" + lines[0][:17])  # a crash tore the last append
    got, _ = cs.read_journals(tmp_path)
    assert got == samples
    journal.write_text("\n".join([*lines[:3], lines[3][:17], *lines[4:]]) + "\n")  # damaged in the middle
    with pytest.raises(CheckpointError, match=r"random_seed0/journal\.jsonl: line 4 is not a JSON object"):
        cs.read_journals(tmp_path)
    foreign = {"sample": samples[3], "metrics": {"feasible": True}, "reward": "high"}
    journal.write_text("\n".join([*lines[:3], json.dumps(foreign), *lines[4:]]) + "\n")
    with pytest.raises(ConfigError, match=r"Expected record 4 of .*random_seed0/journal\.jsonl to be a search record"):
        cs.read_journals(tmp_path)


def test_the_decisions_are_those_of_the_space_the_searches_ran_in(tmp_path: Path) -> None:
    """setup.json as benchmarks.search_seeds writes it: the space is rebuilt from the base model's
    structure (not its weights: these are spread, the rebuilt model's fresh) and the options."""
    space = make_space(num_stages=2, num_classes=2)
    space_options = SuperNet(space).space_options()
    check_identity(tmp_path / "setup.json", {"space": space_options, "data": blob_splits().data_spec()})
    assert cs.decisions_from_setup(tmp_path) == space.decisions
    saved = json.loads((tmp_path / "setup.json").read_text())
    saved["identity"]["space"]["ratio_grid"] = 4  # another space than the searched one
    (tmp_path / "setup.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"Expected the space rebuilt from .*setup\.json to have its recorded "
                                          r"signature .*-s2-q8"):
        cs.decisions_from_setup(tmp_path)
    del saved["identity"]["data"]
    (tmp_path / "setup.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"setup\.json to record identity\.space .* but it does not \(KeyError"):
        cs.decisions_from_setup(tmp_path)
    with pytest.raises(ConfigError, match=r"nowhere/setup\.json \(written by benchmarks\.search_seeds in its "
                                          r"--dir\), but it does not exist"):
        cs.decisions_from_setup(tmp_path / "nowhere")
    samples = [{d.name: 0 for d in space.decisions}]
    cs.check_samples(space.decisions, samples, folder=tmp_path)
    with pytest.raises(ConfigError, match="samples of the space of its setup.json"):
        cs.check_samples(space.decisions, [{**samples[0], "concat.s2": 99}], folder=tmp_path)


def test_the_held_out_half_is_a_seeded_permutation_not_the_first_half() -> None:
    fit, held = cs.split_halves(10)
    assert sorted(fit + held) == list(range(10)) and len(fit) == 5
    assert (fit, held) == cs.split_halves(10, seed=cs.SPLIT_SEED)  # reproducible
    assert set(fit) != set(range(5))  # sorted folder order would put random_seed* in one half, rl_seed* in the other


def test_the_study_measures_regret_from_the_true_optimum() -> None:
    samples = _every_sample()
    surrogate = cs.fit_surrogate(DECISIONS, samples, [_truth(s) for s in samples], ridge=1e-9)
    best = max(_truth(s) for s in samples)
    results = cs.study(DECISIONS, surrogate, noise=0.0, budgets=(24,), seeds=2)
    assert set(results) == set(cs.SETTINGS)
    # 24 distinct samples are the whole space: noise-free random search finds the optimum exactly
    assert results["random"]["24"]["regret"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert results["random"]["24"]["peak_probability"] is None
    # one candidate: the regret is the optimum minus the noise-free reward of the one sample taken,
    # whatever noise the controller saw
    one = cs.study(DECISIONS, surrogate, noise=0.5, budgets=(1,), seeds=4, settings=("random",))["random"]["1"]
    regrets = [best - _truth(RandomController(DECISIONS, seed=k, unique=True).ask()) for k in range(4)]
    assert one["regret"]["mean"] == pytest.approx(sum(regrets) / 4, abs=1e-6)
    assert one["regret"]["min"] == pytest.approx(min(regrets), abs=1e-6)
    assert one["regret"]["max"] == pytest.approx(max(regrets), abs=1e-6)
    assert max(regrets) > 0  # the seeds' first samples are not all the optimum: the check can fail


def test_settings_keep_their_json_keys() -> None:
    assert dataclasses.asdict(cs.SETTINGS["rl_lstm_enas_lr_reward_x100"]) == {
        "policy": "lstm", "lr": 3.5e-3, "normalize_advantage": False, "reward_scale": 100.0}


@pytest.mark.parametrize("argv, message", [
    (["--settings", "random,random"], "Expected --settings as distinct comma-separated names of "),
    (["--settings", "random,bayes"], "Expected --settings as distinct comma-separated names of "),
    (["--budgets", "0,50"], "Expected --budgets as distinct comma-separated integers >= 1 (e.g. 50,200), "
                            "but got '0,50'"),
    (["--budgets", "50,50"], "Expected --budgets as distinct comma-separated integers >= 1 (e.g. 50,200), "
                             "but got '50,50'"),
])
def test_the_study_refuses_malformed_options_in_one_line(argv: list[str], message: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cs.main(["--journals", str(tmp_path), "--out", str(tmp_path / "o.json"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err
    assert not (tmp_path / "o.json").exists()


def test_search_seeds_refuses_a_repeated_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert seeds_main(["--supernet", "nowhere", "--strategies", "rl,rl"]) == 2
    assert capsys.readouterr().err.strip() == ("error: Expected --strategies as distinct comma-separated names of "
                                               "rl, random, but got 'rl,rl'")
