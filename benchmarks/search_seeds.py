"""Does the RL controller beat random search at equal budget? (issue 12, "Search")

    python -m benchmarks.search_seeds --supernet runs/sn/r20 [--config FILE] [--set KEY=VALUE ...] \\
        --budget 200 --seeds 0,1,2 --dir runs/search_seeds --out benchmarks/results/search_seeds.json

For each seed, the library's search loop (:class:`~s2dnas.search.strategy.SearchStrategy`: journal,
resume) runs ``--budget`` candidates with the RL controller (the config's ``search.controller``,
``controller_lr``, ``entropy_weight``, ``baseline_decay``, ``normalize_advantage``) and with random search (distinct uniform
samples), every candidate scored from the super-network at the run's target as ``s2dnas run``'s
oneshot search scores it; METHOD.md's hand-picked architecture is scored once the same way.
Reported per search: the best reward and, for its architecture, the val accuracy and the expected
MACs (fraction of the base's) at the thresholds chosen at the target, whether the target is
reached, and the best reward after 25/50/100% of the budget; per strategy: mean, standard
deviation, min and max over the seeds. Killed at any moment, the same command resumes every search
from its journal; another super-network, target or scoring option in the same ``--dir`` is refused.
The summary written to ``--out`` covers every strategy with journals in ``--dir`` for ``--seeds``:
``--strategies rl`` reruns the RL searches and keeps the random ones already there (read from
their journals; a search short of ``--budget`` candidates is left out and listed as incomplete).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmarks._args import check_at_least, parse_names, parse_seeds, report_error
from benchmarks.supernet_setup import (SupernetSetup, add_setup_arguments, check_identity, setup_from_args,
                                       summary_stats)
from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.errors import CheckpointError, ConfigError, S2DNASError
from s2dnas.search.journal import Journal
from s2dnas.search.random import RandomController
from s2dnas.search.rl import RLController
from s2dnas.search.strategy import SearchStrategy, check_journal_space

__all__ = ["run_seeds", "main"]

STRATEGIES = ("rl", "random")
_KEYS = ("reward", "accuracy", "macs_ratio")


def _controller(setup: SupernetSetup, strategy: str, seed: int) -> Any:
    """The controller ``s2dnas run`` makes for ``strategy`` (oneshot's is the RL one) at ``seed``."""
    space, sc = setup.supernet.space, setup.cfg.search
    if strategy == "random":
        return RandomController(space.decisions, seed=seed, unique=True)
    return RLController(space.decisions, kind=sc.controller, lr=sc.controller_lr, entropy_weight=sc.entropy_weight,
                        baseline_decay=sc.baseline_decay, normalize_advantage=sc.normalize_advantage, seed=seed)


def _controller_identity(controller: Any) -> dict[str, Any]:
    """What a search's journal depends on besides the setup: the controller and its settings."""
    if isinstance(controller, RLController):
        return {"controller": "rl", "kind": controller.kind, "lr": controller.lr,
                "entropy_weight": controller.entropy_weight, "baseline_decay": controller.baseline_decay,
                # the spread's rule changed once (session 6): a normalised search names the rule it used
                "normalize_advantage": "spread-from-first-nonzero" if controller.normalize_advantage else False}
    return {"controller": "random", "unique": True}


def _chosen(reward: float, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"reward": reward, "accuracy": metrics["accuracy"], "macs_ratio": metrics["macs_ratio"],
            "reached": bool(metrics["feasible"]), "stage_val_accuracy": metrics["stage_val_accuracy"]}


def _search_hash(digest: str, controller: Any) -> str:
    """The ``config_hash`` a search's journal records: the setup's and the controller's settings."""
    return hashlib.sha256(json.dumps([digest, _controller_identity(controller)], sort_keys=True).encode()
                          ).hexdigest()[:16]


def _row(seed: int, records: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
    """One search's result from its journal records: the best candidate and the best-so-far curve."""
    scored = [r for r in records if "feasible" in r["metrics"]]  # not the candidates that failed
    if not scored:
        raise S2DNASError(f"Every candidate of {run_dir} failed; see its journal.jsonl")
    best = max(scored, key=lambda r: r["reward"])
    running, curve = float("-inf"), {}
    for i, r in enumerate(records, 1):
        running = max(running, r["reward"])
        for frac in (0.25, 0.5, 1.0):
            if i == max(1, round(frac * len(records))):
                curve[str(frac)] = running
    return {"seed": seed, "candidates": len(records), "architecture": best["architecture"],
            **_chosen(best["reward"], best["metrics"]), "best_reward_after_fraction": curve,
            "seconds": sum(r.get("seconds", 0.0) for r in records)}


def run_seeds(setup: SupernetSetup, *, work_dir: str | Path, out: str | Path, budget: int = 200,
              seeds: Sequence[int] = (0, 1, 2), strategies: Sequence[str] = STRATEGIES, progress: bool = True,
              command: str = "") -> dict[str, Any]:
    """Run (or resume) every search of ``strategies``, score the hand-picked architecture; write and
    return the summary.

    The summary covers every strategy with a journal in ``work_dir`` for ``seeds``, not only
    ``strategies``: the searches of another strategy found there (run earlier with other
    ``--strategies``) are read from their journals, not run; one with fewer than ``budget``
    candidates is left out and listed under ``incomplete``.

    Raises:
        ConfigError: ``rl`` among ``strategies`` with ``search.controller: random`` (random search
            is ``--strategies random``; ``rl`` is the REINFORCE controller it is compared with).
        RunDirError: ``work_dir`` holds results of another setup.
        CheckpointError: a search's journal was written with other controller settings (another
            ``search.controller_lr``, say): its resume is refused, not mixed; so is reporting it.
    """
    if "rl" in strategies and setup.cfg.search.controller == "random":
        raise ConfigError("Expected search.controller lstm or factorized for --strategies rl (the REINFORCE "
                          "controller compared with random search), but got random; drop it (random search "
                          "is --strategies random)")
    work = Path(work_dir)
    digest = check_identity(work / "setup.json", setup.identity())
    space = setup.supernet.space
    on_disk = {s: [k for k in seeds if (work / f"{s}_seed{k}" / "journal.jsonl").exists()]
               for s in STRATEGIES if s not in strategies}
    on_disk = {s: found for s, found in on_disk.items() if found}
    for strategy, found in on_disk.items():  # refused before anything runs
        mine = _search_hash(digest, _controller(setup, strategy, 0))
        for seed in found:
            journal = Journal(work / f"{strategy}_seed{seed}" / "journal.jsonl")
            check_journal_space(journal, space)
            if theirs := journal.foreign_config_hashes(mine):
                raise CheckpointError(f"{journal.path} was written by another configuration (config hash "
                                      f"{', '.join(theirs)}, this setup's {mine}), so its searches cannot "
                                      f"be reported with this run's; rerun them with --strategies {strategy} and "
                                      "the config that started them, or move them out of --dir")
    evaluator = setup.evaluator()
    hand_path = work / "hand_picked.json"
    if not hand_path.exists():
        r = evaluator.evaluate(space.default_architecture())
        atomic_write_json(hand_path, {"architecture": r.architecture.to_dict(), **_chosen(r.reward, r.metrics),
                                      "seconds": r.seconds})
    hand = json.loads(hand_path.read_text())
    searches: dict[str, list[dict[str, Any]]] = {s: [] for s in STRATEGIES if s in strategies or s in on_disk}
    incomplete: list[str] = []
    for seed in seeds:
        for strategy in searches:
            run_dir = work / f"{strategy}_seed{seed}"
            if strategy in strategies:
                controller = _controller(setup, strategy, seed)
                search = SearchStrategy(space, evaluator, controller, budget=budget, run_dir=run_dir,
                                        max_invalid=setup.cfg.search.max_invalid, progress=progress,
                                        provenance={"config_hash": _search_hash(digest, controller)})
                records = search.run(resume=(run_dir / "journal.jsonl").exists()).records
                source = ""
            elif seed in on_disk[strategy]:
                records = Journal(run_dir / "journal.jsonl").records()[:budget]  # the same budget as the rest
                if len(records) < min(budget, space.size()):
                    incomplete.append(f"{run_dir.name} ({len(records)} of {budget} candidates)")
                    print(f"{strategy:6s} seed {seed}: left out, {len(records)} of {budget} candidates in "
                          f"{run_dir}", flush=True)
                    continue
                source = ", read from its journal"
            else:
                continue
            row = _row(seed, records, run_dir)
            searches[strategy].append(row)
            print(f"{strategy:6s} seed {seed}: best reward {row['reward']:+.4f}, val {row['accuracy']:.4f} at "
                  f"{row['macs_ratio']:.1%} of the base MACs ({len(records)} candidates{source})", flush=True)
    searches = {s: rows for s, rows in searches.items() if rows}
    summary = {s: {k: summary_stats([r[k] for r in rows]) for k in _KEYS} for s, rows in searches.items()}
    summary["hand_picked"] = {k: summary_stats([hand[k]]) for k in _KEYS}
    result = {"command": command, "machine": machine_info(),
              "supernet": {k: setup.supernet_meta.get(k) for k in ("config_hash", "epoch", "epochs", "train_seconds")},
              "base_val_accuracy": setup.base_val_accuracy, "target": setup.target.to_dict(), "budget": budget,
              "seeds": list(seeds), "controllers": {s: _controller_identity(_controller(setup, s, 0)) for s in searches},
              "summary": summary, "searches": searches, "incomplete": incomplete, "hand_picked": hand}
    atomic_write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--budget", type=int, default=200, help="candidates per search")
    parser.add_argument("--seeds", default="0,1,2", help="distinct comma-separated controller seeds >= 0")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated, some of " + ", ".join(STRATEGIES))
    parser.add_argument("--dir", default="runs/search_seeds")
    parser.add_argument("--out", default="benchmarks/results/search_seeds.json")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        budget = check_at_least(args.budget, 1, flag="--budget")
        strategies = parse_names(args.strategies, flag="--strategies", allowed=STRATEGIES)
        setup = setup_from_args(args)
        result = run_seeds(setup, work_dir=args.dir, out=args.out, budget=budget, seeds=seeds, strategies=strategies,
                           progress=not args.no_progress,
                           command="python -m benchmarks.search_seeds " + " ".join(sys.argv[1:]))
    except S2DNASError as err:
        return report_error(err)
    print(json.dumps({s: {k: v["mean"] for k, v in m.items()} for s, m in result["summary"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
