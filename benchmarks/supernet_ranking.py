"""Does the super-network's score rank architectures as their own fine-tuning does? (issue 12, "Ranking")

    python -m benchmarks.supernet_ranking --supernet runs/sn/r20 [--config FILE] [--set KEY=VALUE ...] \\
        --architectures 12 --final-epochs 2 --limit-train 20000 --stop-after 3 \\
        --dir runs/supernet_ranking --out benchmarks/results/supernet_ranking.json

Architectures (deterministic): the sandwich's cheapest and most expensive, METHOD.md's hand-picked
one, and ``--architectures - 3`` more spread evenly by their MACs (all stages) over ``--pool``
distinct uniform samples (seed 0). Each is

1. scored from the super-network at the run's target, exactly as ``s2dnas run``'s oneshot search
   scores a candidate (:class:`~s2dnas.search.evaluator.SupernetEvaluator`: extracted with its
   per-stage heads, batch norms recalibrated on ``search.bn_batches`` seeded training batches,
   thresholds chosen on val at the target, reward);
2. fine-tuned stand-alone from the super-network's weights (as ``final_init: supernet`` does:
   :func:`~s2dnas.train.multistage.train_multistage` with the config's ``train`` recipe for
   ``--final-epochs`` epochs on ``--limit-train`` images), its batch norms recalibrated on the same
   batches, and scored again the same way (:meth:`~s2dnas.search.evaluator.Evaluator.score_network`).

Reported: Kendall's tau between the two rewards and between the two best val accuracies (the most
accurate threshold setting: target-free), and the mean gap (fine-tuned minus extracted) in each
stage's val accuracy, and its mean absolute value. Every score and every fine-tuning is cached in
``--dir`` (a fine-tuning resumes from its per-epoch checkpoint); ``--stop-after N`` fine-tunes at
most N more architectures per invocation, so the benchmark can run across sessions; the JSON is
rewritten after every architecture (``complete`` says whether all are fine-tuned). A rerun with
another super-network, target or scoring option in the same ``--dir`` is refused (exit 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._args import check_at_least, report_error
from benchmarks.ranking import kendall_tau
from benchmarks.supernet_setup import SupernetSetup, add_setup_arguments, check_identity, setup_from_args
from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.config import config_to_dict
from s2dnas.errors import S2DNASError
from s2dnas.search.evaluator import SupernetEvaluator
from s2dnas.space import Architecture, Space
from s2dnas.train.multistage import train_multistage
from s2dnas.train.sandwich import cheapest, most_expensive

__all__ = ["pick_architectures", "run_ranking", "main"]


def pick_architectures(space: Space, *, count: int, pool: int, seed: int = 0) -> dict[str, Architecture]:
    """``count`` architectures that build distinct networks, from cheap to expensive (see the module docstring)."""
    fixed = {"cheapest": cheapest(space), "most_expensive": most_expensive(space),
             "hand_picked": space.default_architecture()}
    gen = torch.Generator().manual_seed(seed)
    seen = {space.canonical(a) for a in fixed.values()}  # samples are canonical: distinct networks
    sampled: list[Architecture] = []
    for _ in range(20 * pool):  # bounded: a small space has fewer than `pool` architectures
        if len(sampled) == pool:
            break
        arch = space.sample(gen)
        if arch not in seen:
            seen.add(arch)
            sampled.append(arch)
    total = {a: sum(space.build(a, share_weights=True).analytic_macs) for a in sampled}
    ordered = sorted(sampled, key=lambda a: (total[a], json.dumps(a.to_dict(), sort_keys=True)))
    k = min(max(count - len(fixed), 0), len(ordered))
    picks = [ordered[round(i * (len(ordered) - 1) / (k - 1))] if k > 1 else ordered[len(ordered) // 2]
             for i in range(k)]
    return {**fixed, **{f"spread_{i:02d}": a for i, a in enumerate(dict.fromkeys(picks))}}


def _stage_gaps(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (fine-tuned - extracted) per-stage val accuracy, and mean absolute gap."""
    if not rows:
        return {}
    num_stages = len(rows[0]["supernet"]["metrics"]["stage_val_accuracy"])
    gaps = [[r["finetuned"]["metrics"]["stage_val_accuracy"][s] - r["supernet"]["metrics"]["stage_val_accuracy"][s]
             for s in range(num_stages)] for r in rows]
    mean = [sum(g[s] for g in gaps) / len(gaps) for s in range(num_stages)]
    mean_abs = [sum(abs(g[s]) for g in gaps) / len(gaps) for s in range(num_stages)]
    return {"mean_gap_per_stage": mean, "mean_abs_gap_per_stage": mean_abs, "mean_gap_last_stage": mean[-1],
            "mean_abs_gap_last_stage": mean_abs[-1]}


def run_ranking(setup: SupernetSetup, *, work_dir: str | Path, out: str | Path, count: int = 12, pool: int = 200,
                final_epochs: int | None = None, limit_train: int | None = None, stop_after: int | None = None,
                progress: bool = True, command: str = "") -> dict[str, Any]:
    """Score, fine-tune (at most ``stop_after`` more) and score again; write and return the summary.

    Raises:
        RunDirError: ``work_dir`` holds results of another setup or other final options.
    """
    work = Path(work_dir)
    cfg = setup.cfg
    final_cfg = dataclasses.replace(cfg.train, epochs=final_epochs or cfg.final_epochs or cfg.train.epochs,
                                    limit_train=limit_train if limit_train is not None else cfg.train.limit_train)
    space = setup.supernet.space
    archs = pick_architectures(space, count=count, pool=pool)
    identity = {**setup.identity(), "final_training": {"init": "supernet", **config_to_dict(final_cfg)},
                "architectures": {n: a.to_dict() for n, a in archs.items()}}
    check_identity(work / "setup.json", identity)
    evaluator: SupernetEvaluator = setup.evaluator()
    rows: dict[str, dict[str, Any]] = {}
    finetuned_now = 0

    def write() -> dict[str, Any]:
        both = [r for r in rows.values() if "finetuned" in r]
        a = [r["supernet"]["reward"] for r in both]
        b = [r["finetuned"]["reward"] for r in both]
        best = lambda r, k: r[k]["metrics"]["best_accuracy"]  # noqa: E731
        result = {
            "command": command, "machine": machine_info(), "supernet": {k: setup.supernet_meta.get(k) for k in (
                "config_hash", "epoch", "epochs", "train_seconds")},
            "base_val_accuracy": setup.base_val_accuracy, "target": setup.target.to_dict(),
            "final_training": identity["final_training"], "complete": len(both) == len(archs),
            "finetuned": len(both), "architectures": len(archs),
            "kendall_tau_reward": kendall_tau(a, b) if len(both) > 1 else None,
            "kendall_tau_best_accuracy": kendall_tau([best(r, "supernet") for r in both],
                                                     [best(r, "finetuned") for r in both]) if len(both) > 1 else None,
            **_stage_gaps(both), "rows": rows}
        atomic_write_json(out, result)
        return result

    for name, arch in archs.items():
        adir = work / name
        adir.mkdir(parents=True, exist_ok=True)
        # 1. from the super-network (cached)
        spath = adir / "supernet_score.json"
        if not spath.exists():
            r = evaluator.evaluate(arch)
            atomic_write_json(spath, {"reward": r.reward, "metrics": r.metrics, "seconds": r.seconds})
        row = {"architecture": arch.to_dict(), "total_macs": None, "supernet": json.loads(spath.read_text())}
        row["total_macs"] = sum(row["supernet"]["metrics"]["stage_macs"])
        # 2. fine-tuned stand-alone from the super-network's weights, then scored the same way
        fpath = adir / "finetuned_score.json"
        if not fpath.exists() and (stop_after is None or finetuned_now < stop_after):
            finetuned_now += 1
            start = time.time()
            net = setup.supernet.extract(arch).to(setup.device)
            ckpt_dir = adir / "final"
            train = train_multistage(net, setup.splits, config=final_cfg, teacher=setup.base, device=setup.device,
                                     out_dir=ckpt_dir, resume=(ckpt_dir / "checkpoint.pt").exists(),
                                     progress=progress, evaluate_val=False,
                                     eval_batch_size=cfg.data.eval_batch_size)
            evaluator.recalibrate(net)
            reward, metrics = evaluator.score_network(net)
            atomic_write_json(fpath, {"reward": reward, "metrics": metrics, "epochs": train["epochs"],
                                      "seconds": time.time() - start})
        if fpath.exists():
            row["finetuned"] = json.loads(fpath.read_text())
        rows[name] = row
        line = f"{name:15s} {row['total_macs'] / 1e6:6.2f}M MACs  supernet {row['supernet']['reward']:+.4f}"
        if "finetuned" in row:
            line += f"  fine-tuned {row['finetuned']['reward']:+.4f}"
        print(line, flush=True)
        write()
    result = write()
    if not result["complete"]:
        print(f"fine-tuned {result['finetuned']}/{len(archs)}; rerun the same command to go on", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--architectures", type=int, default=12, help="how many (>= 4)")
    parser.add_argument("--pool", type=int, default=200, help="distinct samples they are spread over")
    parser.add_argument("--final-epochs", type=int, default=None, help="default: the config's final_epochs")
    parser.add_argument("--limit-train", type=int, default=None, help="default: the config's train.limit_train")
    parser.add_argument("--stop-after", type=int, default=None, help="fine-tune at most N more now")
    parser.add_argument("--dir", default="runs/supernet_ranking")
    parser.add_argument("--out", default="benchmarks/results/supernet_ranking.json")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        count = check_at_least(args.architectures, 4, flag="--architectures")
        setup = setup_from_args(args)
        result = run_ranking(setup, work_dir=args.dir, out=args.out, count=count, pool=args.pool,
                             final_epochs=args.final_epochs, limit_train=args.limit_train,
                             stop_after=args.stop_after, progress=not args.no_progress,
                             command="python -m benchmarks.supernet_ranking " + " ".join(sys.argv[1:]))
    except S2DNASError as err:
        return report_error(err)
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("kendall", "mean_"))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
