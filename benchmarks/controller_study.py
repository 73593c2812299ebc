"""Why does the RL controller beat random search, or not? A study on a surrogate of the reward (issue 12, "Search")

    python -m benchmarks.controller_study --journals runs/search_seeds --budgets 50,200 --seeds 20 \\
        --out benchmarks/results/controller_study.json

Scoring one candidate from the super-network takes about 10 s here, so comparing controller
settings over many seeds on the real score does not fit a session. This script takes every
candidate ``benchmarks.search_seeds`` scored (all strategies and seeds, each architecture once)
and fits an additive surrogate of the reward: a bias plus one weight per (decision, choice),
least squares with a small ridge penalty, over the decisions of the space those searches ran
in (rebuilt from the ``setup.json`` that ``benchmarks.search_seeds`` writes in its ``--dir``:
the base model's structure and the space options; its signature must match). Its fit is
reported (R^2, and Kendall's tau on a held-out half when fitted on the other half; the halves
are a permutation of the candidates seeded with :data:`SPLIT_SEED`, so each mixes strategies and
seeds); the residual's standard deviation is added back as Gaussian noise to every reward a
controller sees, since the real score is noisy too.

Each controller setting then searches the surrogate for ``--budgets`` candidates, ``--seeds``
seeds each, in milliseconds per candidate: random search (distinct samples) and REINFORCE
variants (LSTM and factorized policies, ENAS's and larger learning rates, rewards rescaled,
advantages normalised).
Reported per setting and budget: the mean and spread over the seeds of the regret of the
architecture each search would return (its noise-free surrogate reward below the best in the
space, exact for an additive model), and how far the policy moved (the largest probability any
choice reached). It tells which knob (learning rate, policy, reward scale, budget) decides
whether RL beats random here; the real searches of ``benchmarks.search_seeds`` confirm it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks._args import check_at_least, parse_names, parse_positive_ints, report_error
from benchmarks.ranking import kendall_tau
from benchmarks.supernet_setup import summary_stats
from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.errors import ConfigError, S2DNASError
from s2dnas.search.journal import Journal
from s2dnas.search.random import RandomController
from s2dnas.search.rl import RLController
from s2dnas.space import Space
from s2dnas.space.decision import Decision, Sample

__all__ = ["Setting", "Surrogate", "fit_surrogate", "read_journals", "decisions_from_setup", "check_samples",
           "split_halves", "SETTINGS", "SPLIT_SEED", "study", "main"]

#: The seed of the permutation that cuts the candidates into the surrogate's fit and held-out halves.
SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Setting:
    """One controller setting: ``policy`` ("random", "lstm" or "factorized"), the Adam ``lr``
    (None: the controller's default), normalised advantages, and the factor on every reward."""

    policy: str
    lr: float | None = None
    normalize_advantage: bool = False
    reward_scale: float = 1.0


#: Controller settings compared, by name.
SETTINGS: dict[str, Setting] = {
    "random": Setting("random"),
    "rl_lstm_enas_lr": Setting("lstm", lr=3.5e-3),
    "rl_lstm_lr_1e-2": Setting("lstm", lr=1e-2),
    "rl_lstm_lr_3.5e-2": Setting("lstm", lr=3.5e-2),
    "rl_lstm_enas_lr_reward_x100": Setting("lstm", lr=3.5e-3, reward_scale=100.0),
    "rl_lstm_enas_lr_normalized": Setting("lstm", lr=3.5e-3, normalize_advantage=True),
    "rl_factorized_default": Setting("factorized"),
    "rl_factorized_reward_x100": Setting("factorized", reward_scale=100.0),
    "rl_factorized_normalized": Setting("factorized", normalize_advantage=True),
}


class Surrogate:
    """An additive reward model: ``bias + sum_d weight[d][choice_d]``."""

    def __init__(self, decisions: Sequence[Decision], bias: float, weights: list[list[float]]) -> None:
        self.decisions, self.bias, self.weights = list(decisions), bias, weights

    def __call__(self, sample: Sample) -> float:
        return self.bias + sum(w[sample[d.name]] for d, w in zip(self.decisions, self.weights))

    def best(self) -> float:
        """The largest reward in the space (exact: the decisions are independent)."""
        return self.bias + sum(max(w) for w in self.weights)


def _design(decisions: Sequence[Decision], samples: Sequence[Sample]) -> torch.Tensor:
    offsets, total = [], 0
    for d in decisions:
        offsets.append(total)
        total += d.size
    x = torch.zeros(len(samples), total + 1, dtype=torch.float64)
    x[:, -1] = 1.0
    for i, s in enumerate(samples):
        for d, off in zip(decisions, offsets):
            x[i, off + s[d.name]] = 1.0
    return x


def fit_surrogate(decisions: Sequence[Decision], samples: Sequence[Sample], rewards: Sequence[float], *,
                  ridge: float = 1.0) -> Surrogate:
    """Least squares with a ridge penalty on the one-hot choices (not on the bias)."""
    x = _design(decisions, samples)
    y = torch.tensor(list(rewards), dtype=torch.float64)
    penalty = torch.eye(x.shape[1], dtype=torch.float64) * ridge
    penalty[-1, -1] = 0.0
    coef = torch.linalg.solve(x.T @ x + penalty, x.T @ y)
    weights, start = [], 0
    for d in decisions:
        weights.append([float(v) for v in coef[start:start + d.size]])
        start += d.size
    return Surrogate(decisions, float(coef[-1]), weights)


def _is_record(r: dict[str, Any]) -> bool:
    """A search journal's candidate: a sample of choice indices, metrics and, when scored, a numeric reward."""
    sample, metrics = r.get("sample"), r.get("metrics", {})
    if not isinstance(sample, dict) or not isinstance(metrics, dict):
        return False
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sample.values()):
        return False
    reward = r.get("reward")
    return "feasible" not in metrics or (isinstance(reward, (int, float)) and not isinstance(reward, bool))


def read_journals(folder: Path) -> tuple[list[Sample], list[float]]:
    """Every scored candidate of ``folder/*/journal.jsonl`` (journals in sorted folder order), each
    architecture once: the first score read is kept. Lines without a ``sample`` (not a candidate)
    and failed candidates (no ``feasible`` metric) are skipped.

    Raises:
        CheckpointError: a line other than a journal's last is not JSON (the library's journal reader).
        ConfigError: a record is not a search record, or fewer than 10 candidates are found.
    """
    samples, rewards, seen = [], [], set()
    for journal in sorted(folder.glob("*/journal.jsonl")):
        for number, r in enumerate(Journal(journal).records(), start=1):
            if "sample" not in r:
                continue
            if not _is_record(r):
                raise ConfigError(f"Expected record {number} of {journal} to be a search record (sample: "
                                  f"{{decision: choice index}}, metrics, a numeric reward), but got "
                                  f"{json.dumps(r)[:120]}; fix or remove that line")
            if "feasible" not in r.get("metrics", {}):
                continue
            key = tuple(sorted(r["sample"].items()))
            if key not in seen:
                seen.add(key)
                samples.append(r["sample"])
                rewards.append(float(r["reward"]))
    if len(samples) < 10:
        raise ConfigError(f"Expected at least 10 scored candidates in {folder}/*/journal.jsonl "
                          f"(run benchmarks.search_seeds first), but found {len(samples)}")
    return samples, rewards


def decisions_from_setup(folder: Path) -> list[Decision]:
    """The decisions of the space ``benchmarks.search_seeds`` searched in ``folder`` (its ``--dir``).

    Rebuilt as that script builds its space, from what its ``setup.json`` records: the base model
    (by name, for the recorded classes and input shape; the decisions depend on its structure, not
    its weights) and the space options. The rebuilt space's signature must be the recorded one.

    Raises:
        ConfigError: ``setup.json`` is missing or malformed, or describes another space than the
            one rebuilt.
    """
    from s2dnas.zoo import create_model

    path = folder / "setup.json"
    fix = f"pass --journals the --dir of benchmarks.search_seeds, or rerun it with --dir {folder}"
    if not path.is_file():
        raise ConfigError(f"Expected {path} (written by benchmarks.search_seeds in its --dir), but it does not "
                          f"exist; {fix}")
    try:
        identity = json.loads(path.read_text())["identity"]
        space, data = identity["space"], identity["data"]
        model, signature = space["model"], space["signature"]
        input_shape = tuple(int(v) for v in space["input_shape"])
        num_classes = int(data["num_classes"])
        options = {k: space[k] for k in ("num_stages", "ratio_grid", "groups", "importance", "channel_multiple")}
        if not isinstance(model, str) or not isinstance(signature, str) or len(input_shape) != 3:
            raise ValueError("model, signature or input_shape")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"Expected {path} to record identity.space (model, signature, input_shape, space options) "
                          f"and identity.data.num_classes as benchmarks.search_seeds writes them, but it does not "
                          f"({type(exc).__name__}: {exc}); {fix}") from None
    base = create_model(model, num_classes=num_classes, in_channels=input_shape[0])
    rebuilt = Space(base, input_shape=input_shape, model_name=model, **options)  # type: ignore[arg-type]
    if rebuilt.signature != signature:
        raise ConfigError(f"Expected the space rebuilt from {path} to have its recorded signature {signature}, but "
                          f"got {rebuilt.signature}; {fix}")
    return rebuilt.decisions


def check_samples(decisions: Sequence[Decision], samples: Sequence[Sample], *, folder: Path) -> None:
    """Refuse candidates that are not samples of ``decisions`` (one choice index of each decision).

    Raises:
        ConfigError: a sample has other decisions, or a choice index out of range.
    """
    sizes = {d.name: d.size for d in decisions}
    for s in samples:
        if set(s) != set(sizes) or any(not 0 <= v < sizes[k] for k, v in s.items()):
            raise ConfigError(f"Expected the journals of {folder} to hold samples of the space of its setup.json "
                              f"({', '.join(f'{k}: 0..{n - 1}' for k, n in sizes.items())}), but found {s}; "
                              "use a --dir of benchmarks.search_seeds whose searches all ran in one space")


def split_halves(n: int, *, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Indices ``0..n-1`` cut into a fit half (``n // 2``) and a held-out half by a seeded permutation."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[:n // 2], order[n // 2:]


def _controller(setting: str, decisions: Sequence[Decision], seed: int) -> Any:
    s = SETTINGS[setting]
    if s.policy == "random":
        return RandomController(decisions, seed=seed, unique=True)
    return RLController(decisions, kind=s.policy, lr=s.lr, normalize_advantage=s.normalize_advantage, seed=seed)


def _peak_probability(controller: Any) -> float | None:
    if not isinstance(controller, RLController):
        return None
    return max(max(p) for p in controller.probabilities().values())


def study(decisions: Sequence[Decision], surrogate: Surrogate, *, noise: float, budgets: Sequence[int],
          seeds: int, settings: Sequence[str] = tuple(SETTINGS)) -> dict[str, dict[str, Any]]:
    """Regret (mean, spread over seeds) and peak choice probability per setting and budget."""
    best, out = surrogate.best(), {}
    for setting in settings:
        scale = SETTINGS[setting].reward_scale
        rows: dict[str, Any] = {}
        for budget in budgets:
            regrets, peaks = [], []
            for seed in range(seeds):
                controller, gen = _controller(setting, decisions, seed), torch.Generator().manual_seed(1000 + seed)
                chosen, chosen_seen = None, float("-inf")
                for _ in range(budget):
                    sample = controller.ask()
                    seen = surrogate(sample) + noise * float(torch.randn((), generator=gen, dtype=torch.float64))
                    controller.tell(sample, scale * seen)
                    if seen > chosen_seen:  # a search returns the best reward it saw (noisy)
                        chosen, chosen_seen = sample, seen
                regrets.append(best - surrogate(chosen))
                peaks.append(_peak_probability(controller))
            rows[str(budget)] = {"regret": summary_stats(regrets),
                                 "peak_probability": None if peaks[0] is None else summary_stats(peaks)}
        out[setting] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journals", default="runs/search_seeds", help="the --dir of benchmarks.search_seeds")
    parser.add_argument("--budgets", default="50,200", help="distinct comma-separated candidates per search")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per setting and budget")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="distinct comma-separated, some of " + ", ".join(SETTINGS))
    parser.add_argument("--out", default="benchmarks/results/controller_study.json")
    args = parser.parse_args(argv)
    try:
        budgets = parse_positive_ints(args.budgets, flag="--budgets")
        seeds = check_at_least(args.seeds, 2, flag="--seeds")
        settings = parse_names(args.settings, flag="--settings", allowed=tuple(SETTINGS))
        folder = Path(args.journals)
        decisions = decisions_from_setup(folder)
        samples, rewards = read_journals(folder)
        check_samples(decisions, samples, folder=folder)
        surrogate = fit_surrogate(decisions, samples, rewards)
        fitted = [surrogate(s) for s in samples]
        y = torch.tensor(rewards, dtype=torch.float64)
        residual = y - torch.tensor(fitted, dtype=torch.float64)
        r2 = 1.0 - float((residual ** 2).sum() / ((y - y.mean()) ** 2).sum())
        fit_half, held_half = split_halves(len(samples))
        held = fit_surrogate(decisions, [samples[i] for i in fit_half], [rewards[i] for i in fit_half])
        tau_held_out = kendall_tau([held(samples[i]) for i in held_half], [rewards[i] for i in held_half])
        noise = float(residual.std())
        torch.set_num_threads(1)
        results = study(decisions, surrogate, noise=noise, budgets=budgets, seeds=seeds, settings=settings)
    except S2DNASError as err:
        return report_error(err)
    out = {"command": "python -m benchmarks.controller_study " + " ".join(sys.argv[1:]), "machine": machine_info(),
           "candidates": len(samples), "reward_range": [min(rewards), max(rewards)],
           "surrogate": {"r2": r2, "kendall_tau_held_out": tau_held_out, "split_seed": SPLIT_SEED,
                         "noise_std": noise, "best_in_space": surrogate.best(), "best_seen": max(rewards)},
           "settings": {k: dataclasses.asdict(v) for k, v in SETTINGS.items() if k in settings},
           "budgets": list(budgets), "seeds": seeds, "results": results}
    atomic_write_json(Path(args.out), out)
    for setting, rows in results.items():
        print(setting, {b: f"{r['regret']['mean']:.4f}+-{r['regret']['std']:.4f}" for b, r in rows.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
