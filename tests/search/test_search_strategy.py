"""Tests of the search loop (ask -> journal lookup or evaluate -> journal -> tell -> save) with a fake,
instant evaluator over the real space of a 2-block toy CNN: budget, duplicates, the RL controller on a
toy reward with a known optimum, resume after a clean stop and after a kill, invalid candidates."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import s2dnas.search.strategy as strategy_module
from s2dnas.errors import CheckpointError, S2DNASError, TransformError
from s2dnas.search import Controller, Decision, Journal, RandomController, RLController, sample_key
from s2dnas.search.evaluator import CandidateResult
from s2dnas.search.strategy import REWARD_FOR_INVALID, SearchStrategy
from s2dnas.space import Architecture, Space
from tests._models import ToyCNN


@pytest.fixture(scope="module")
def space() -> Space:
    """S=3, q=6: 10 splits per group x 2 groups x 2 concat choices x 2 stages = 400 architectures (group 1
    holds only the stem, which never concatenates, so concatenating from group 1 or 2 is the same network)."""
    torch.manual_seed(0)
    sp = Space(ToyCNN().eval(), input_shape=(1, 8, 8), num_stages=3, ratio_grid=6, model_name="toy")
    assert [(d.name, d.size) for d in sp.decisions] == [("split.g1", 10), ("split.g2", 10), ("concat.s2", 2),
                                                        ("concat.s3", 2)]
    return sp


TARGET = {"split.g1": 6, "split.g2": 2, "concat.s2": 1, "concat.s3": 0}


def toy_reward(sample: Mapping[str, int], sizes: Mapping[str, int]) -> float:
    """Per decision: closeness to the target (a gradient to follow) plus a bonus for hitting it; max 1."""
    terms = [0.5 * (1 - abs(sample[k] - t) / (sizes[k] - 1)) + 0.5 * (sample[k] == t) for k, t in TARGET.items()]
    return sum(terms) / len(terms)


class FakeEvaluator:
    """Instant evaluator: the reward is a known function of the sample; records every call.

    ``fail`` (sample -> bool) makes a candidate raise TransformError; ``kill_at`` raises
    ``SimulatedKill`` on that call (1-based), as if the process died mid-evaluation.
    """

    def __init__(self, space: Space, reward: Callable[[dict[str, int]], float] | None = None, *,
                 fail: Callable[[dict[str, int]], bool] | None = None, kill_at: int | None = None) -> None:
        self.space = space
        sizes = {d.name: d.size for d in space.decisions}
        self.reward = reward or (lambda s: toy_reward(s, sizes))
        self.fail = fail
        self.kill_at = kill_at
        self.calls: list[dict[str, int]] = []

    def evaluate(self, arch: Architecture) -> CandidateResult:
        sample = self.space.to_sample(arch)
        self.calls.append(sample)
        if self.kill_at is not None and len(self.calls) == self.kill_at:
            raise SimulatedKill("killed during evaluation")
        if self.fail is not None and self.fail(sample):
            raise TransformError(f"cannot build {sample}")
        return CandidateResult(arch, self.reward(sample), {"macs_ratio": 0.5, "toy": True}, 0.0)


class SimulatedKill(Exception):
    """Stands for SIGKILL: nothing after the raising point runs."""


class ScriptedController(Controller):
    """Asks a fixed list of samples in order (then cycles); its position is part of its state."""

    def __init__(self, decisions: Sequence[Decision], script: list[dict[str, int]]) -> None:
        super().__init__(decisions, seed=0)
        self.script = script
        self.position = 0
        self.told: list[tuple[dict[str, int], float]] = []

    def _sample(self) -> dict[str, int]:
        sample = dict(self.script[self.position % len(self.script)])
        self.position += 1
        return sample

    def _observe(self, sample: dict[str, int], reward: float) -> None:
        self.told.append((dict(sample), reward))

    def _extra_state(self) -> dict[str, Any]:
        return {"position": self.position}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self.position = int(extra["position"])


def journal_of(run_dir: Path) -> list[dict[str, Any]]:
    return Journal(run_dir / "journal.jsonl").records()


def samples_of(records: list[dict[str, Any]]) -> list[dict[str, int]]:
    return [r["sample"] for r in records]


def rl(space: Space, seed: int = 0) -> RLController:
    # factorised logits with a larger step than the default: the toy search has only ~60 candidates
    return RLController(space.decisions, kind="factorized", lr=0.1, seed=seed)


def search(space: Space, run_dir: Path, controller: Controller, evaluator: Any, budget: int, *,
           resume: bool = False, max_invalid: int = 5) -> strategy_module.SearchResult:
    return SearchStrategy(space, evaluator, controller, budget=budget, run_dir=run_dir, max_invalid=max_invalid,
                          progress=False).run(resume=resume)


# -- budget and duplicates -------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda sp: RandomController(sp.decisions, seed=1, unique=True), rl],
                         ids=["random", "rl"])
def test_budget_is_respected_exactly(space: Space, tmp_path: Path, make: Callable[[Space], Controller]) -> None:
    evaluator = FakeEvaluator(space)
    controller = make(space)
    result = search(space, tmp_path, controller, evaluator, budget=7)
    records = journal_of(tmp_path)
    assert len(records) == 7 == len(evaluator.calls) == len(result.records)
    assert len({sample_key(s) for s in samples_of(records)}) == 7
    assert samples_of(records) == evaluator.calls
    assert [r["index"] for r in records] == list(range(7))
    assert all(r["architecture"] == space.from_sample(r["sample"]).to_dict() for r in records)
    assert controller.num_told == controller.num_asked >= 7 and not controller.pending
    assert (tmp_path / "controller.pt").is_file()


def test_identical_samples_are_scored_once(space: Space, tmp_path: Path) -> None:
    a = {"split.g1": 0, "split.g2": 0, "concat.s2": 0, "concat.s3": 0}
    b = {"split.g1": 1, "split.g2": 0, "concat.s2": 0, "concat.s3": 0}
    c = {"split.g1": 2, "split.g2": 3, "concat.s2": 1, "concat.s3": 0}
    controller = ScriptedController(space.decisions, [a, a, a, b, a, b, c])
    evaluator = FakeEvaluator(space, lambda s: float(s["split.g1"] + s["split.g2"]))
    search(space, tmp_path, controller, evaluator, budget=3)
    assert evaluator.calls == [a, b, c]
    assert samples_of(journal_of(tmp_path)) == [a, b, c]
    # every ask was told, duplicates with the journalled reward
    assert controller.told == [(a, 0.0), (a, 0.0), (a, 0.0), (b, 1.0), (a, 0.0), (b, 1.0), (c, 5.0)]


def test_controller_stuck_on_evaluated_samples_stops(space: Space, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    a = {"split.g1": 0, "split.g2": 0, "concat.s2": 0, "concat.s3": 0}
    controller = ScriptedController(space.decisions, [a])
    result = search(space, tmp_path, controller, FakeEvaluator(space), budget=3)
    assert len(result.records) == 1
    assert controller.num_asked == 20 * 3 + 100  # the loop's bound
    assert "kept proposing evaluated candidates" in caplog.text


@pytest.mark.parametrize("make", [lambda sp: RandomController(sp.decisions, seed=1, unique=True), rl],
                         ids=["random", "rl"])
def test_a_budget_larger_than_the_space_stops_when_every_architecture_is_scored(
        tmp_path: Path, make: Callable[[Space], Controller], caplog: pytest.LogCaptureFixture) -> None:
    """Issue 17 item 4: the loop used to ask 20 x budget + 100 times, at 100% CPU, after the last new one."""
    tiny = Space(ToyCNN().eval(), input_shape=(1, 8, 8), num_stages=2, ratio_grid=3, model_name="toy")
    size = 8  # 2 x 2 splits x 2 concat choices (from group 1 = from group 2: group 1 holds only the stem)
    controller = make(tiny)
    reward = lambda s: 0.5  # noqa: E731 - a flat reward keeps the RL policy uniform: it reaches every sample
    result = search(tiny, tmp_path, controller, FakeEvaluator(tiny, reward), budget=500)
    assert result.exhausted
    assert len({sample_key(s) for s in samples_of(result.records)}) == len(result.records) == size
    assert controller.num_asked < 20 * 500 + 100  # stopped as soon as the space was exhausted
    assert "the space has only 8 architectures and every one was scored" in caplog.text
    # a resumed search of the exhausted space scores nothing and says so again
    again = FakeEvaluator(tiny, reward)
    assert search(tiny, tmp_path, make(tiny), again, budget=500, resume=True).exhausted and again.calls == []
    # a budget equal to the space is simply reached
    assert not search(tiny, tmp_path / "exact", make(tiny), FakeEvaluator(tiny, reward), budget=size).exhausted


def test_a_resume_with_another_config_hash_is_refused(space: Space, tmp_path: Path) -> None:
    """Issue 12 item 6: journal records carry the config hash; another one is refused, nothing written."""
    def strategy(config_hash: str, evaluator: Any) -> SearchStrategy:
        return SearchStrategy(space, evaluator, rl(space), budget=4, run_dir=tmp_path, progress=False,
                              provenance={"config_hash": config_hash, "s2dnas_version": "0"})

    strategy("aaaa", FakeEvaluator(space)).run()
    journal = (tmp_path / "journal.jsonl").read_bytes()
    assert all(r["config_hash"] == "aaaa" for r in Journal(tmp_path / "journal.jsonl").records())
    other = FakeEvaluator(space)
    with pytest.raises(CheckpointError, match="written by another configuration .config hash aaaa"):
        strategy("bbbb", other).run(resume=True)
    assert other.calls == [] and (tmp_path / "journal.jsonl").read_bytes() == journal


def test_a_journal_of_another_space_is_refused(space: Space, tmp_path: Path) -> None:
    """A sample is a choice index per decision: when the space's choices changed since a journal was
    written (say, a version that offers other splits), its indices pick other networks, and their
    recorded rewards must not be reused; the resume is refused before anything is scored or written."""
    search(space, tmp_path, RandomController(space.decisions, seed=1, unique=True), FakeEvaluator(space), budget=3)
    path = tmp_path / "journal.jsonl"
    records = Journal(path).records()
    moved = dict(records[1], sample={**records[1]["sample"], "split.g1": (records[1]["sample"]["split.g1"] + 1) % 10})
    path.write_text("".join(json.dumps(r) + "\n" for r in [records[0], moved, records[2]]))
    (tmp_path / "controller.pt").unlink()  # nothing else to catch it: a journal without its controller state
    before = path.read_bytes()
    other = FakeEvaluator(space)
    with pytest.raises(CheckpointError, match="record 1 was written for another search space"):
        search(space, tmp_path, RandomController(space.decisions, seed=1, unique=True), other, budget=5, resume=True)
    assert other.calls == [] and path.read_bytes() == before


# -- the RL controller on a toy reward ---------------------------------------------------------------
def test_rl_finds_the_toy_optimum_and_the_reward_rises(space: Space, tmp_path: Path) -> None:
    evaluator = FakeEvaluator(space)
    result = search(space, tmp_path, rl(space), evaluator, budget=60)
    rewards = [r["reward"] for r in result.records]
    assert len(rewards) == 60
    assert space.to_sample(result.best) == TARGET
    assert result.best_reward == pytest.approx(1.0)
    first, last = float(np.mean(rewards[:15])), float(np.mean(rewards[-15:]))
    assert last > first + 0.15, (first, last)
    # random search with the same budget does not find it (the space has 400 architectures)
    random_result = search(space, tmp_path / "random", RandomController(space.decisions, seed=0, unique=True),
                           FakeEvaluator(space), budget=60)
    assert random_result.best_reward < 1.0
    assert float(np.mean([r["reward"] for r in random_result.records][-15:])) < last


# -- resume ----------------------------------------------------------------------------------------
def test_resume_continues_exactly(space: Space, tmp_path: Path) -> None:
    straight_controller = rl(space)
    search(space, tmp_path / "straight", straight_controller, FakeEvaluator(space), budget=8)
    expected = journal_of(tmp_path / "straight")

    first = FakeEvaluator(space)
    search(space, tmp_path / "split", rl(space), first, budget=5)
    second = FakeEvaluator(space)
    # fresh, and seeded differently: everything it does must come from controller.pt
    controller = rl(space, seed=99)
    result = search(space, tmp_path / "split", controller, second, budget=8, resume=True)
    records = journal_of(tmp_path / "split")
    assert len(records) == 8
    assert len(first.calls) == 5 and len(second.calls) == 3
    assert not {sample_key(s) for s in first.calls} & {sample_key(s) for s in second.calls}
    assert samples_of(records) == samples_of(expected)
    assert [r["reward"] for r in records] == [r["reward"] for r in expected]
    assert result.best == Architecture.from_dict(max(expected, key=lambda r: r["reward"])["architecture"])
    state, straight_state = controller.state_dict(), straight_controller.state_dict()
    assert state["num_asked"] == straight_state["num_asked"]
    assert state["extra"]["baseline"] == straight_state["extra"]["baseline"]
    for name, tensor in straight_state["extra"]["policy"].items():
        assert torch.equal(state["extra"]["policy"][name], tensor), name
    # resuming a finished search evaluates nothing
    third = FakeEvaluator(space)
    search(space, tmp_path / "split", rl(space), third, budget=8, resume=True)
    assert third.calls == [] and len(journal_of(tmp_path / "split")) == 8


@pytest.mark.parametrize("kill_after_saves", [1, 3, 5])
def test_kill_between_journal_and_controller_save(space: Space, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  kill_after_saves: int) -> None:
    budget = 7
    straight = FakeEvaluator(space)
    search(space, tmp_path / "straight", rl(space), straight, budget=budget)
    expected = journal_of(tmp_path / "straight")

    real_save = strategy_module.atomic_torch_save
    saves = []

    def dying_save(path: Path, obj: Any) -> None:
        saves.append(path)
        if len(saves) == kill_after_saves:  # the journal line is on disk, this controller state never is
            raise SimulatedKill("killed before the controller state was saved")
        real_save(path, obj)

    monkeypatch.setattr(strategy_module, "atomic_torch_save", dying_save)
    first = FakeEvaluator(space)
    with pytest.raises(SimulatedKill):
        search(space, tmp_path / "run", rl(space), first, budget=budget)
    monkeypatch.setattr(strategy_module, "atomic_torch_save", real_save)
    journalled = journal_of(tmp_path / "run")
    assert len(journalled) == kill_after_saves == len(first.calls)

    second = FakeEvaluator(space)
    search(space, tmp_path / "run", rl(space), second, budget=budget, resume=True)
    records = journal_of(tmp_path / "run")
    assert len(second.calls) == budget - kill_after_saves  # the journalled candidate was not scored again
    assert not {sample_key(s) for s in samples_of(journalled)} & {sample_key(s) for s in second.calls}
    assert samples_of(records) == samples_of(expected)
    assert [r["reward"] for r in records] == [r["reward"] for r in expected]


def test_kill_during_evaluation_loses_nothing(space: Space, tmp_path: Path) -> None:
    search(space, tmp_path / "straight", rl(space), FakeEvaluator(space), budget=6)
    expected = journal_of(tmp_path / "straight")
    with pytest.raises(SimulatedKill):
        search(space, tmp_path / "run", rl(space), FakeEvaluator(space, kill_at=4), budget=6)
    assert len(journal_of(tmp_path / "run")) == 3
    second = FakeEvaluator(space)
    search(space, tmp_path / "run", rl(space), second, budget=6, resume=True)
    assert second.calls == samples_of(expected)[3:]  # the interrupted candidate is scored now, once
    assert samples_of(journal_of(tmp_path / "run")) == samples_of(expected)


# -- invalid candidates ------------------------------------------------------------------------------
def test_invalid_candidates_are_journalled_with_the_lowest_reward(space: Space, tmp_path: Path) -> None:
    def fail(sample: dict[str, int]) -> bool:
        return sample["concat.s2"] == 0

    evaluator = FakeEvaluator(space, fail=fail)
    controller = RandomController(space.decisions, seed=3, unique=True)
    result = search(space, tmp_path, controller, evaluator, budget=12, max_invalid=12)
    records = journal_of(tmp_path)
    invalid = [r for r in records if r["metrics"].get("invalid")]
    valid = [r for r in records if not r["metrics"].get("invalid")]
    assert len(records) == 12 and invalid and valid
    assert all(fail(r["sample"]) for r in invalid) and not any(fail(r["sample"]) for r in valid)
    for r in invalid:
        assert r["reward"] == REWARD_FOR_INVALID
        assert "cannot build" in r["metrics"]["error"]
        assert r["architecture"] == space.from_sample(r["sample"]).to_dict()
    assert not fail(space.to_sample(result.best))


def test_non_finite_reward_is_invalid(space: Space, tmp_path: Path) -> None:
    evaluator = FakeEvaluator(space, lambda s: float("nan") if s["concat.s3"] == 1 else 0.5)
    search(space, tmp_path, RandomController(space.decisions, seed=0, unique=True), evaluator, budget=10,
           max_invalid=10)
    records = journal_of(tmp_path)
    assert any(r["metrics"].get("invalid") for r in records)
    for r in records:
        if r["sample"]["concat.s3"] == 1:
            assert r["reward"] == REWARD_FOR_INVALID and "non-finite reward" in r["metrics"]["error"]


def test_max_invalid_in_a_row_stops_the_search(space: Space, tmp_path: Path) -> None:
    evaluator = FakeEvaluator(space, fail=lambda s: True)
    with pytest.raises(S2DNASError, match=r"3 candidates in a row failed \(last: cannot build .*\); "
                                          r"the search stopped.*search\.max_invalid"):
        search(space, tmp_path, rl(space), evaluator, budget=10, max_invalid=3)
    records = journal_of(tmp_path)
    assert len(records) == 3 == len(evaluator.calls)
    assert all(r["metrics"]["invalid"] and r["reward"] == REWARD_FOR_INVALID for r in records)


def test_a_valid_candidate_resets_the_invalid_count(space: Space, tmp_path: Path) -> None:
    samples = [{"split.g1": i, "split.g2": 0, "concat.s2": 0, "concat.s3": 0} for i in range(6)]
    evaluator = FakeEvaluator(space, fail=lambda s: s["split.g1"] % 3 != 2)  # 2 fail, 1 passes, 2 fail, ...
    search(space, tmp_path, ScriptedController(space.decisions, samples), evaluator, budget=6, max_invalid=3)
    assert len(journal_of(tmp_path)) == 6


# -- result ------------------------------------------------------------------------------------------
def test_result_picks_the_best_valid_record(space: Space, tmp_path: Path) -> None:
    # valid rewards all below REWARD_FOR_INVALID: the best must still be a valid candidate
    samples = [{"split.g1": i, "split.g2": 1, "concat.s2": 1, "concat.s3": 0} for i in range(5)]
    evaluator = FakeEvaluator(space, lambda s: -10.0 - abs(s["split.g1"] - 3), fail=lambda s: s["split.g1"] in (0, 4))
    strategy = SearchStrategy(space, evaluator, ScriptedController(space.decisions, samples), budget=5,
                              run_dir=tmp_path, progress=False)
    result = strategy.run()
    assert space.to_sample(result.best) == samples[3]
    assert result.best_reward == -10.0
    assert len(result.records) == 5
    assert strategy.result() == result


def test_result_without_a_valid_candidate_raises(space: Space, tmp_path: Path) -> None:
    strategy = SearchStrategy(space, FakeEvaluator(space, fail=lambda s: True),
                              RandomController(space.decisions, seed=0), budget=2, run_dir=tmp_path, progress=False)
    with pytest.raises(S2DNASError, match="no valid candidate"):
        strategy.run()
    with pytest.raises(S2DNASError, match="no valid candidate"):
        SearchStrategy(space, FakeEvaluator(space), RandomController(space.decisions), budget=1,
                       run_dir=tmp_path / "empty", progress=False).result()
