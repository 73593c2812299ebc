"""benchmarks/controller_study.py: the additive surrogate is exact where it should be, journals are
read once per architecture, and the study's regret is measured against the true optimum."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from benchmarks import controller_study as cs
from s2dnas.errors import ConfigError
from s2dnas.space.decision import Decision

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


def test_journals_are_read_once_per_architecture_and_failed_candidates_skipped(tmp_path: Path) -> None:
    samples = _every_sample()[:12]
    for name, part in (("rl_seed0", samples[:8]), ("random_seed0", samples[4:])):  # 4 architectures in both
        (tmp_path / name).mkdir()
        lines = [{"kind": "header"}, {"sample": samples[0], "metrics": {"error": "failed"}, "reward": -2.0}]
        lines += [{"sample": s, "metrics": {"feasible": False}, "reward": _truth(s) + (name == "random_seed0")}
                  for s in part]
        (tmp_path / name / "journal.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    got, rewards = cs.read_journals(tmp_path)
    assert len(got) == 12 and len({tuple(sorted(s.items())) for s in got}) == 12
    assert -2.0 not in rewards
    with pytest.raises(ConfigError, match=r"Expected at least 10 scored candidates in .*, but found 0"):
        cs.read_journals(tmp_path / "rl_seed0")


def test_the_study_measures_regret_from_the_true_optimum() -> None:
    samples = _every_sample()
    surrogate = cs.fit_surrogate(DECISIONS, samples, [_truth(s) for s in samples], ridge=1e-9)
    results = cs.study(DECISIONS, surrogate, noise=0.0, budgets=(24,), seeds=2)
    assert set(results) == set(cs.SETTINGS)
    # 24 distinct samples are the whole space: noise-free random search finds the optimum exactly
    assert results["random"]["24"]["regret"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert results["random"]["24"]["peak_probability"] is None
    for setting in cs.SETTINGS:
        assert results[setting]["24"]["regret"]["min"] >= -1e-9
