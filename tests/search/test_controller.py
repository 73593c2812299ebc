"""Tests of the search controllers on toy spaces with a known optimum."""
from __future__ import annotations

import doctest
import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

import s2dnas.search.controller
import s2dnas.space.decision
from s2dnas.errors import CheckpointError, ConfigError
from s2dnas.search import Controller, Decision, RandomController, RLController, count_samples

DECISIONS = [Decision(f"d{i}", (0, 1, 2, 3)) for i in range(4)]
TARGET = {"d0": 2, "d1": 0, "d2": 3, "d3": 1}
WEIGHTS = (0.1, 0.2, 0.3, 0.4)


def reward_match(sample: dict[str, int], rng: np.random.Generator) -> float:
    """Fraction of decisions equal to the hidden target, plus small noise."""
    hits = sum(sample[name] == choice for name, choice in TARGET.items())
    return hits / len(TARGET) + float(rng.normal(0.0, 0.02))


def reward_sum(sample: dict[str, int], rng: np.random.Generator) -> float:
    """Weighted sum of per-decision terms, each largest at the target choice."""
    terms = (
        w * (1.0 - abs(sample[name] - choice) / 3.0)
        for w, (name, choice) in zip(WEIGHTS, TARGET.items())
    )
    return sum(terms) + float(rng.normal(0.0, 0.02))


def run(
    controller: Controller,
    steps: int,
    reward_fn: Callable[[dict[str, int], np.random.Generator], float],
    *,
    start: int = 0,
) -> tuple[list[dict[str, int]], list[float]]:
    """Ask/tell ``steps`` times; the noise of step ``i`` depends only on ``i``."""
    samples, rewards = [], []
    for step in range(start, start + steps):
        sample = controller.ask()
        reward = reward_fn(sample, np.random.default_rng(step))
        controller.tell(sample, reward)
        samples.append(sample)
        rewards.append(reward)
    return samples, rewards


@pytest.mark.parametrize("kind", ["lstm", "factorized"])
@pytest.mark.parametrize("reward_fn", [reward_match, reward_sum], ids=["match", "sum"])
def test_rl_controller_learns_toy_optimum(kind: str, reward_fn: Callable) -> None:
    controller = RLController(DECISIONS, kind=kind, seed=0)
    _, rewards = run(controller, 250, reward_fn)
    first, last = float(np.mean(rewards[:50])), float(np.mean(rewards[-50:]))
    assert last > first + 0.1, (first, last)
    assert last > 0.9, last
    best = controller.best()
    assert best is not None and best[0] == TARGET
    assert controller.num_updates == 250


def test_rl_controller_batches_updates() -> None:
    controller = RLController(DECISIONS, kind="factorized", batch_size=4, seed=0)
    run(controller, 10, reward_match)
    assert controller.num_updates == 2
    assert len(controller.state_dict()["extra"]["buffer"]) == 2


@pytest.mark.parametrize("kind", ["lstm", "factorized"])
def test_rl_controller_is_deterministic(kind: str) -> None:
    a, _ = run(RLController(DECISIONS, kind=kind, seed=3), 40, reward_match)
    b, _ = run(RLController(DECISIONS, kind=kind, seed=3), 40, reward_match)
    c, _ = run(RLController(DECISIONS, kind=kind, seed=4), 40, reward_match)
    assert a == b
    assert a != c


def test_controller_does_not_touch_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    run(RLController(DECISIONS, seed=1), 5, reward_match)
    run(RandomController(DECISIONS, seed=1), 5, reward_match)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RLController(DECISIONS, kind="lstm", batch_size=3, seed=7),
        lambda: RLController(DECISIONS, kind="factorized", tanh_constant=2.5, seed=7),
        lambda: RLController(DECISIONS, kind="lstm", normalize_advantage=True, seed=7),
        lambda: RandomController(DECISIONS, seed=7, unique=True),
    ],
    ids=["lstm", "factorized", "lstm-normalized", "random"],
)
def test_resume_equals_uninterrupted_run(make: Callable[[], Controller], tmp_path) -> None:
    straight, _ = run(make(), 60, reward_match)

    first = make()
    head, _ = run(first, 30, reward_match)
    pending = first.ask()  # a sample in flight at save time must survive the resume
    path = tmp_path / "controller.pt"
    torch.save(first.state_dict(), path)

    resumed = make()
    resumed.load_state_dict(torch.load(path, weights_only=True))
    assert resumed.pending == [pending]
    resumed.tell(pending, reward_match(pending, np.random.default_rng(30)))
    tail, _ = run(resumed, 29, reward_match, start=31)

    assert head + [pending] + tail == straight
    assert resumed.best() == run_best(straight)
    assert resumed.num_asked == resumed.num_told == 60


def run_best(samples: list[dict[str, int]]) -> tuple[dict[str, int], float]:
    """Best (sample, reward) of a replayed run, earliest on ties."""
    rewards = [reward_match(s, np.random.default_rng(i)) for i, s in enumerate(samples)]
    best = int(np.argmax(rewards))
    return samples[best], rewards[best]


def test_normalized_advantages_make_the_search_independent_of_the_reward_units() -> None:
    """Fed the same rewards in other units (x1000 + 5: accuracy gaps vs MAC savings), a controller
    with normalised advantages asks exactly the same samples; without, the entropy bonus weighs
    differently against the advantages and the searches part."""
    def units(normalize: bool, scale: float, shift: float) -> list[dict[str, int]]:
        controller = RLController(DECISIONS, kind="factorized", normalize_advantage=normalize, seed=3)
        samples = []
        for step in range(80):
            sample = controller.ask()
            controller.tell(sample, scale * reward_sum(sample, np.random.default_rng(step)) / 100 + shift)
            samples.append(sample)
        return samples

    assert units(True, 1.0, 0.0) == units(True, 1000.0, 5.0)
    assert units(False, 1.0, 0.0) != units(False, 1000.0, 5.0)


def test_the_running_spread_starts_at_the_first_informative_advantage() -> None:
    """With one reward per update the first advantage is always 0 (the baseline starts at the
    first reward): the spread must start at the first non-zero squared advantage, not average it
    with that 0 (which would inflate the early advantages by ~3x), then decay as a moving average."""
    controller = RLController(DECISIONS, kind="factorized", normalize_advantage=True, seed=0)
    for reward in (0.50, 0.52, 0.47):
        controller.tell(controller.ask(), reward)
        spread = controller.state_dict()["extra"]["spread"]
        if reward == 0.50:
            assert spread == 0.0
        elif reward == 0.52:
            assert spread == pytest.approx(0.02 ** 2, rel=1e-12)
    baseline = 0.9 * 0.50 + 0.1 * 0.52  # moving average of the rewards before the third
    assert spread == pytest.approx(0.9 * 0.02 ** 2 + 0.1 * (0.47 - baseline) ** 2, rel=1e-12)


def test_state_dict_is_a_snapshot() -> None:
    controller = RLController(DECISIONS, seed=0)
    run(controller, 5, reward_match)
    state = controller.state_dict()
    following, _ = run(controller, 5, reward_match, start=5)
    controller.load_state_dict(state)
    assert run(controller, 5, reward_match, start=5)[0] == following


def test_load_state_dict_rejects_other_space_or_class() -> None:
    state = RLController(DECISIONS, seed=0).state_dict()
    with pytest.raises(CheckpointError, match="search space changed"):
        RLController(DECISIONS[:3], seed=0).load_state_dict(state)
    with pytest.raises(CheckpointError, match="Expected a state of RandomController"):
        RandomController(DECISIONS).load_state_dict(state)
    with pytest.raises(CheckpointError, match="kind='factorized'"):
        RLController(DECISIONS, kind="factorized").load_state_dict(state)
    with pytest.raises(CheckpointError, match="controller state dict"):
        RLController(DECISIONS).load_state_dict({"weights": torch.zeros(1)})


def test_tell_unknown_sample_raises() -> None:
    controller = RLController(DECISIONS, seed=0)
    with pytest.raises(ValueError, match="returned by ask"):
        controller.tell({"d0": 0, "d1": 0, "d2": 0, "d3": 0}, 1.0)
    sample = controller.ask()
    with pytest.raises(ValueError, match="returned by ask"):
        controller.tell({**sample, "d9": 0}, 1.0)
    with pytest.raises(ValueError, match="finite"):
        controller.tell(sample, float("nan"))
    controller.tell(dict(reversed(list(sample.items()))), 1.0)  # key order does not matter
    with pytest.raises(ValueError, match="not told yet"):
        controller.tell(sample, 1.0)  # told twice


def test_out_of_order_tells() -> None:
    controller = RandomController(DECISIONS, seed=0, unique=True)
    a, b = controller.ask(), controller.ask()
    controller.tell(b, 0.2)
    controller.tell(a, 0.5)
    assert controller.best() == (a, 0.5)
    assert controller.pending == []


@pytest.mark.parametrize("cls", [RLController, RandomController])
def test_invalid_decisions_raise(cls: type) -> None:
    with pytest.raises(ConfigError, match="empty list"):
        cls([])
    with pytest.raises(ConfigError, match=r"duplicate decision names \['a'\]"):
        cls([Decision("a", (1, 2)), Decision("b", (1,)), Decision("a", (3,))])
    with pytest.raises(ConfigError, match="item 0 is a str"):
        cls(["a"])


def test_decision_without_choices_raises() -> None:
    with pytest.raises(ConfigError, match="at least 1 choice"):
        Decision("ratio", ())
    with pytest.raises(ConfigError, match="non-empty string"):
        Decision("", (1,))
    assert Decision("ratio", [0.5, 0.25]).choices == (0.5, 0.25)


def test_invalid_rl_arguments_are_all_listed() -> None:
    with pytest.raises(ConfigError, match="`kind`.*`lr`.*`batch_size`.*`temperature`"):
        RLController(DECISIONS, kind="gru", lr=-1.0, batch_size=0, temperature=0.0)


def test_single_choice_decision_is_supported() -> None:
    decisions = [Decision("fixed", ("only",)), Decision("free", (0, 1))]
    controller = RLController(decisions, seed=0)
    samples, _ = run(controller, 5, lambda s, rng: float(s["free"]))
    assert all(s["fixed"] == 0 for s in samples)


def test_random_controller_unique_covers_space_without_repeats() -> None:
    decisions = [Decision("a", (0, 1, 2)), Decision("b", (0, 1)), Decision("c", (0, 1))]
    controller = RandomController(decisions, seed=0, unique=True)
    size = count_samples(decisions)
    samples = [controller.ask() for _ in range(size)]
    keys = {tuple(sorted(s.items())) for s in samples}
    assert len(keys) == size == 12
    expected = {
        tuple(zip("abc", combo)) for combo in itertools.product(range(3), range(2), range(2))
    }
    assert keys == expected
    # Exhausted: keeps sampling (with repeats) instead of failing or looping.
    assert controller.ask() is not None


def test_random_controller_is_uniform_and_deterministic() -> None:
    a, _ = run(RandomController(DECISIONS, seed=5), 400, reward_match)
    b, _ = run(RandomController(DECISIONS, seed=5), 400, reward_match)
    assert a == b
    counts = np.bincount([s["d0"] for s in a], minlength=4)
    assert counts.min() > 60  # expected 100 per choice


def test_rl_probabilities_sum_to_one() -> None:
    controller = RLController(DECISIONS, seed=0)
    probs = controller.probabilities()
    assert list(probs) == [d.name for d in DECISIONS]
    assert all(abs(sum(p) - 1.0) < 1e-5 for p in probs.values())


@pytest.mark.parametrize("module", [s2dnas.search.controller, s2dnas.space.decision])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_failed_load_leaves_controller_unchanged() -> None:
    controller = RLController(DECISIONS, seed=0)
    run(controller, 3, reward_match)
    before = controller.state_dict()
    broken = RLController(DECISIONS, seed=9).state_dict()
    del broken["extra"]["optimizer"]
    with pytest.raises(CheckpointError, match="Malformed RLController state"):
        controller.load_state_dict(broken)
    after = controller.state_dict()
    for name, tensor in before["extra"]["policy"].items():
        assert torch.equal(tensor, after["extra"]["policy"][name]), name
    assert torch.equal(before["generator"], after["generator"])
