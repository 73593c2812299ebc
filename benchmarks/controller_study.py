"""Why does the RL controller beat random search, or not? A study on a surrogate of the reward (issue 12, "Search")

    python -m benchmarks.controller_study --journals runs/search_seeds --budgets 50,200 --seeds 20 \\
        --out benchmarks/results/controller_study.json

Scoring one candidate from the super-network takes about 10 s here, so comparing controller
settings over many seeds on the real score does not fit a session. This script takes every
candidate ``benchmarks.search_seeds`` scored (all strategies and seeds, each architecture once)
and fits an additive surrogate of the reward: a bias plus one weight per (decision, choice),
least squares with a small ridge penalty. Its fit is reported (R^2, and Kendall's tau on a
held-out half when fitted on the other half); the residual's standard deviation is added back
as Gaussian noise to every reward a controller sees, since the real score is noisy too.

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
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks._args import check_at_least, parse_seeds, report_error
from benchmarks.ranking import kendall_tau
from benchmarks.supernet_setup import summary_stats
from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.errors import ConfigError, S2DNASError
from s2dnas.search.random import RandomController
from s2dnas.search.rl import RLController
from s2dnas.space.decision import Decision, Sample

__all__ = ["Surrogate", "fit_surrogate", "read_journals", "SETTINGS", "study", "main"]

#: Controller settings compared: name -> (policy or "random", Adam lr (None: the default), normalised
#: advantages, reward scale).
SETTINGS: dict[str, tuple[str, float | None, bool, float]] = {
    "random": ("random", None, False, 1.0),
    "rl_lstm_enas_lr": ("lstm", 3.5e-3, False, 1.0),
    "rl_lstm_lr_1e-2": ("lstm", 1e-2, False, 1.0),
    "rl_lstm_lr_3.5e-2": ("lstm", 3.5e-2, False, 1.0),
    "rl_lstm_enas_lr_reward_x100": ("lstm", 3.5e-3, False, 100.0),
    "rl_lstm_enas_lr_normalized": ("lstm", 3.5e-3, True, 1.0),
    "rl_factorized_default": ("factorized", None, False, 1.0),
    "rl_factorized_reward_x100": ("factorized", None, False, 100.0),
    "rl_factorized_normalized": ("factorized", None, True, 1.0),
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


def read_journals(folder: Path) -> tuple[list[Sample], list[float]]:
    """Every scored candidate of ``folder/*/journal.jsonl``, each architecture once (first score kept)."""
    samples, rewards, seen = [], [], set()
    for journal in sorted(folder.glob("*/journal.jsonl")):
        for line in journal.read_text().splitlines():
            r = json.loads(line)
            if "sample" not in r or "feasible" not in r.get("metrics", {}):
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


def _controller(setting: str, decisions: Sequence[Decision], seed: int) -> Any:
    kind, lr, normalize, _ = SETTINGS[setting]
    if kind == "random":
        return RandomController(decisions, seed=seed, unique=True)
    return RLController(decisions, kind=kind, lr=lr, normalize_advantage=normalize, seed=seed)


def _peak_probability(controller: Any) -> float | None:
    if not isinstance(controller, RLController):
        return None
    return max(max(p) for p in controller.probabilities().values())


def study(decisions: Sequence[Decision], surrogate: Surrogate, *, noise: float, budgets: Sequence[int],
          seeds: int, settings: Sequence[str] = tuple(SETTINGS)) -> dict[str, dict[str, Any]]:
    """Regret (mean, spread over seeds) and peak choice probability per setting and budget."""
    best, out = surrogate.best(), {}
    for setting in settings:
        scale = SETTINGS[setting][-1]
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
    parser.add_argument("--budgets", default="50,200", help="comma-separated candidates per search")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per setting and budget")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, some of " + ", ".join(SETTINGS))
    parser.add_argument("--out", default="benchmarks/results/controller_study.json")
    args = parser.parse_args(argv)
    try:
        budgets = parse_seeds(args.budgets, flag="--budgets")
        check_at_least(min(budgets), 1, flag="--budgets")
        seeds = check_at_least(args.seeds, 2, flag="--seeds")
        settings = [t for t in args.settings.split(",") if t]
        if not settings or not set(settings) <= set(SETTINGS):
            raise ConfigError(f"Expected --settings as comma-separated names of {', '.join(SETTINGS)}, "
                              f"but got {args.settings!r}")
        samples, rewards = read_journals(Path(args.journals))
        from s2dnas.config import load_config
        from s2dnas.runner import load_run_base

        decisions = load_run_base(load_config(None), torch.device("cpu")).space.decisions
        surrogate = fit_surrogate(decisions, samples, rewards)
        fitted = [surrogate(s) for s in samples]
        y = torch.tensor(rewards, dtype=torch.float64)
        residual = y - torch.tensor(fitted, dtype=torch.float64)
        r2 = 1.0 - float((residual ** 2).sum() / ((y - y.mean()) ** 2).sum())
        half = len(samples) // 2
        held = fit_surrogate(decisions, samples[:half], rewards[:half])
        tau_held_out = kendall_tau([held(s) for s in samples[half:]], rewards[half:])
        noise = float(residual.std())
        torch.set_num_threads(1)
        results = study(decisions, surrogate, noise=noise, budgets=budgets, seeds=seeds, settings=settings)
    except S2DNASError as err:
        return report_error(err)
    out = {"command": "python -m benchmarks.controller_study " + " ".join(sys.argv[1:]), "machine": machine_info(),
           "candidates": len(samples), "reward_range": [min(rewards), max(rewards)],
           "surrogate": {"r2": r2, "kendall_tau_held_out": tau_held_out, "noise_std": noise,
                         "best_in_space": surrogate.best(), "best_seen": max(rewards)},
           "settings": {k: {"policy": v[0], "lr": v[1], "normalize_advantage": v[2], "reward_scale": v[3]}
                        for k, v in SETTINGS.items() if k in settings},
           "budgets": list(budgets), "seeds": seeds, "results": results}
    atomic_write_json(Path(args.out), out)
    for setting, rows in results.items():
        print(setting, {b: f"{r['regret']['mean']:.4f}+-{r['regret']['std']:.4f}" for b, r in rows.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
