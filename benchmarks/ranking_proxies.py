"""Approaches to the ranking goal, and the ceiling the ground truth allows (issue 12, "Ranking")

    python -m benchmarks.ranking_proxies --supernet DIR --dir runs/supernet_ranking \\
        --out benchmarks/results/ranking_proxies.json [--bn-batches 64] [--finetune-images 6400] [--resamples 200]

Reads the architectures and fine-tuned networks of ``benchmarks.supernet_ranking`` (the same
``--supernet``, ``--config``, ``--set`` and ``--dir``; run it to completion first) and scores every
architecture on val four ways, each at the run's target with the search's reward:

- ``supernet``: the search's own score (extracted, batch norms recalibrated on ``search.bn_batches``
  batches); it must equal the ranking's cached super-network score;
- ``supernet_bn{N}``: the same with ``--bn-batches`` recalibration batches (approach: less noisy
  batch-norm statistics);
- ``finetune{M}``: extracted, trained one epoch on the first ``--finetune-images`` training images
  with the ranking's final-training recipe (distilled from the base), recalibrated, scored
  (approach: a few-shot proxy, which costs the search that training per candidate);
- ``finetuned``: the ranking's fine-tuned network (its checkpoint reloaded): the ground truth; its
  score must equal the ranking's cached one.

Reported per proxy: Kendall's tau against the ground truth on all val images, the seconds a
candidate costs, and the tau's spread when the val images are resampled with replacement. And the
ground truth's own reliability: the tau between the ground-truth rankings of two disjoint random
halves of val (and a proxy on one half against the truth on the other), the ceiling that image
noise alone leaves. Resampling keeps each network's thresholds at the most accurate setting chosen
on all val images and re-measures its accuracy on the drawn images, so these taus order the best
accuracies (``*_best_accuracy``); with the default reward (``macs_saving``) and no architecture
at the target (``all_below_target``), the reward is that accuracy minus the target, the same order.
With ``--macs-budget F`` the same networks are scored at F of the base's MACs instead (reward
``accuracy_in_budget``; thresholds kept at the setting chosen within the budget; ``*_accuracy_in_budget``),
over the architectures whose first stage fits in it. Every network's val logits are cached in
``--dir/<architecture>/proxies/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks._args import check_at_least, report_error
from benchmarks.ranking import kendall_tau
from benchmarks.supernet_setup import SupernetSetup, add_setup_arguments, setup_from_args
from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.dynamic.calibrate import StageLogits, collect_logits
from s2dnas.dynamic.confidence import confidence
from s2dnas.dynamic.executor import route
from s2dnas.config import CalibrationTarget, config_from_dict, config_to_dict
from s2dnas.errors import ConfigError, RunDirError, S2DNASError
from s2dnas.search.evaluator import SupernetEvaluator
from s2dnas.search.score import score_logits
from s2dnas.space import Architecture
from s2dnas.space.multistage import MultiStageNet
from s2dnas.train.checkpoint import load_checkpoint
from s2dnas.train.multistage import train_multistage

__all__ = ["correct_at_best", "resampled_taus", "run_proxies", "main"]

TRUTH = "finetuned"


def correct_at_best(logits: StageLogits, thresholds: tuple[float, ...], *, measure: str) -> torch.Tensor:
    """``(N,)`` bool: whether the exit rule with ``thresholds`` classifies each input correctly."""
    conf = torch.stack([confidence(z, measure) for z in logits.logits[:-1]])
    exits = route(conf, torch.tensor([thresholds], dtype=torch.float32))[0]
    return logits.correct()[exits, torch.arange(logits.num_examples)]


def resampled_taus(correct: dict[str, list[torch.Tensor]], *, truth: str, resamples: int,
                   seed: int = 0) -> dict[str, dict[str, Any]]:
    """Kendall's tau of each proxy's ranking against ``truth``'s under resampled val images.

    Args:
        correct: per method, one ``(N,)`` bool vector per architecture (the same order and images).
        truth: the method the others are ranked against.
        resamples: how many bootstrap draws and how many random half splits.

    Returns:
        per proxy: ``bootstrap`` (tau when all methods are scored on the same images drawn with
        replacement: mean, 5th and 95th percentile) and ``cross_half`` (mean tau of the proxy on one
        random half against the truth on the other); for ``truth`` itself ``split_half``: mean tau
        between its rankings on two disjoint halves, the ceiling that image noise leaves.
    """
    n = correct[truth][0].numel()
    gen = torch.Generator().manual_seed(seed)
    acc = {m: torch.stack([c.float() for c in cs]) for m, cs in correct.items()}  # (A, N)

    def tau(a: torch.Tensor, b: torch.Tensor) -> float:
        return kendall_tau(a.tolist(), b.tolist())

    boot: dict[str, list[float]] = {m: [] for m in acc if m != truth}
    cross: dict[str, list[float]] = {m: [] for m in acc if m != truth}
    halves: list[float] = []
    for _ in range(resamples):
        idx = torch.randint(n, (n,), generator=gen)
        t = acc[truth][:, idx].mean(1)
        for m in boot:
            boot[m].append(tau(acc[m][:, idx].mean(1), t))
        perm = torch.randperm(n, generator=gen)
        first, second = perm[: n // 2], perm[n // 2: 2 * (n // 2)]
        t_second = acc[truth][:, second].mean(1)
        halves.append(tau(acc[truth][:, first].mean(1), t_second))
        for m in cross:
            cross[m].append(tau(acc[m][:, first].mean(1), t_second))

    def stats(values: list[float]) -> dict[str, float]:
        v = torch.tensor(values, dtype=torch.float64)
        return {"mean": float(v.mean()), "p05": float(v.quantile(0.05)), "p95": float(v.quantile(0.95))}

    out: dict[str, dict[str, Any]] = {m: {"bootstrap": stats(boot[m]), "cross_half": stats(cross[m])} for m in boot}
    out[truth] = {"split_half": stats(halves)}
    return out


def _cached_logits(path: Path, key: str, make: Callable[[], tuple[StageLogits, float]]) -> tuple[StageLogits, float]:
    """The val logits of one network, computed once (``make`` returns them and the seconds it took);
    a cache made another way (``key``: the method's options and recipe) is computed again."""
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            return StageLogits(saved["logits"], saved["labels"]), float(saved["seconds"])
    logits, seconds = make()
    tmp = path.with_suffix(".tmp")
    torch.save({"logits": logits.logits, "labels": logits.labels, "seconds": seconds, "key": key}, tmp)
    tmp.replace(path)
    return logits, seconds


def _logits_of(build: Callable[[Architecture], MultiStageNet], arch: Architecture, evaluator: SupernetEvaluator,
               built: list[MultiStageNet]) -> Callable[[], tuple[StageLogits, float]]:
    """A maker for :func:`_cached_logits`: build ``arch`` (appended to ``built``) and collect its val logits."""
    def make() -> tuple[StageLogits, float]:
        start = time.time()
        built.append(build(arch))
        logits = collect_logits(built[0], evaluator.val_loader, device=evaluator.device)
        return logits, time.time() - start
    return make


def run_proxies(setup: SupernetSetup, *, work_dir: str | Path, out: str | Path, bn_batches: int = 64,
                finetune_images: int = 6400, resamples: int = 200, macs_budget: float | None = None,
                command: str = "") -> dict[str, Any]:
    """Score every ranked architecture by each proxy and by its fine-tuned network; write and return the summary.

    ``macs_budget`` (a fraction of the base's MACs): score the same cached networks at that budget
    instead of the ranking's target (reward ``accuracy_in_budget``: val accuracy within the budget),
    the taus over the architectures whose first stage fits in it (the others score the same
    MACs excess from every network, which would agree by construction).

    Raises:
        RunDirError: ``work_dir`` holds no complete ranking of this setup.
    """
    work = Path(work_dir)
    saved_path = work / "setup.json"
    if not saved_path.exists():
        raise RunDirError(f"{work} holds no ranking; run benchmarks.supernet_ranking with --dir {work} first")
    try:
        setup_file = json.loads(saved_path.read_text())
        saved, saved_hash = setup_file["identity"], setup_file["hash"]
    except (ValueError, KeyError, TypeError):
        raise RunDirError(f"{saved_path} is not a ranking's setup file; rerun benchmarks.supernet_ranking in a new "
                          "--dir") from None
    mine = setup.identity()
    changed = sorted(k for k in mine if saved.get(k) != mine[k])
    if changed:
        raise RunDirError(f"{work} was ranked with another setup (changed: {', '.join(changed)}); pass the "
                          "ranking's --supernet, --config and --set")
    archs = {name: Architecture.from_dict(a) for name, a in saved["architectures"].items()}
    missing = [n for n in archs if not (work / n / "finetuned_score.json").exists()]
    if missing:
        raise RunDirError(f"{work}: {len(missing)} of {len(archs)} architectures are not fine-tuned yet "
                          f"({', '.join(missing)}); finish benchmarks.supernet_ranking first")
    cfg = setup.cfg
    evaluators = {"supernet": setup.evaluator(), f"supernet_bn{bn_batches}": dataclasses.replace(
        setup, cfg=dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, bn_batches=bn_batches))).evaluator()}
    default: SupernetEvaluator = evaluators["supernet"]
    # the ranking's own final-training recipe, for one epoch on the first `finetune_images` images
    recipe = {k: v for k, v in saved["final_training"].items() if k != "init"}
    short = dataclasses.replace(config_from_dict({"train": recipe}).train, epochs=1, limit_train=finetune_images)

    def extracted(name: str) -> Callable[[Architecture], MultiStageNet]:
        def make(arch: Architecture) -> MultiStageNet:
            net = setup.supernet.extract(arch).to(setup.device)
            evaluators[name].recalibrate(net)
            return net
        return make

    def few_shot(arch: Architecture) -> MultiStageNet:
        net = setup.supernet.extract(arch).to(setup.device)
        train_multistage(net, setup.splits, config=short, teacher=setup.base, device=setup.device, out_dir=None,
                         progress=False, evaluate_val=False)
        default.recalibrate(net)
        return net

    def finetuned(name: str) -> Callable[[Architecture], MultiStageNet]:
        def make(arch: Architecture) -> MultiStageNet:
            net = setup.supernet.extract(arch).to(setup.device)
            net.load_state_dict(load_checkpoint(work / name / "final" / "checkpoint.pt")["model"])
            default.recalibrate(net)  # as the ranking did after fine-tuning
            return net
        return make

    methods: dict[str, Callable[[str], Callable[[Architecture], MultiStageNet]]] = {
        "supernet": lambda _n: extracted("supernet"),
        f"supernet_bn{bn_batches}": lambda _n: extracted(f"supernet_bn{bn_batches}"),
        f"finetune{finetune_images}": lambda _n: few_shot,
        TRUTH: finetuned,
    }
    # what each cached network depends on beyond the ranking's setup (its hash): the options, the
    # recalibration batches' size, the few-shot recipe
    common = {"setup": saved_hash, "bn_batch_size": cfg.data.batch_size}
    keys = {m: json.dumps({**common, "method": m, **({"recipe": config_to_dict(short)} if m.startswith("finetune")
                                                     else {})}, sort_keys=True) for m in methods}
    if macs_budget is None:
        target, reward_mode, order = default.target, default.reward, "best_accuracy"
    else:
        target = CalibrationTarget(macs_budget=macs_budget * default.base_macs)
        reward_mode, order = "accuracy_in_budget", "accuracy_in_budget"
    rows: dict[str, dict[str, Any]] = {}
    correct: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    for name, arch in archs.items():
        pdir = work / name / "proxies"
        pdir.mkdir(exist_ok=True)
        rows[name] = {"architecture": arch.to_dict()}
        for method, builder in methods.items():
            built: list[MultiStageNet] = []
            logits, seconds = _cached_logits(pdir / f"{method}.pt", keys[method],
                                             _logits_of(builder(name), arch, default, built))
            net = built[0] if built else setup.supernet.extract(arch)  # read: its MACs and cost hook only
            reward, metrics, cal = score_logits(
                logits, stage_cost=default.stage_cost(net), stage_macs=net.analytic_macs, target=target,
                base_macs=default.base_macs, base_cost=default.base_cost, reward=reward_mode,
                confidence=default.confidence, tradeoff_weight=default.tradeoff_weight)
            if macs_budget is None:  # the most accurate setting: the reward's order below the target
                best = max(cal.curve, key=lambda p: p.accuracy) if cal.curve else None
                thresholds = tuple(best.thresholds) if best is not None else tuple(cal.thresholds)
            else:  # the setting chosen within the budget
                thresholds = tuple(cal.thresholds)
            hits = correct_at_best(logits, thresholds, measure=default.confidence)
            expected_accuracy = metrics["best_accuracy"] if macs_budget is None else metrics["accuracy"]
            if abs(float(hits.float().mean()) - expected_accuracy) > 1e-6:  # the exit rule of the calibration
                raise RuntimeError(f"{name}/{method}: the chosen setting re-applied scores "
                                   f"{float(hits.float().mean())}, the calibration {expected_accuracy}")
            correct[method].append(hits)
            rows[name][method] = {"reward": reward, "best_accuracy": metrics["best_accuracy"],
                                  "accuracy": metrics["accuracy"], "feasible": metrics["feasible"],
                                  "seconds": seconds}
        for method, cached in (("supernet", "supernet_score.json"), (TRUTH, "finetuned_score.json")):
            if macs_budget is not None:  # the ranking scored at its own target
                break
            expected = json.loads((work / name / cached).read_text())["reward"]
            if abs(rows[name][method]["reward"] - expected) > 1e-9:
                raise RunDirError(f"{work / name}: the {method} network scores {rows[name][method]['reward']:.6f}, "
                                  f"the ranking cached {expected:.6f}; delete {work / name / 'proxies'} and run again, or "
                                  "rerun the ranking in a new --dir")
        print(f"{name:15s} " + "  ".join(f"{m} {rows[name][m]['reward']:+.4f}" for m in methods), flush=True)

    names = list(archs)
    if macs_budget is not None:  # the architectures whose first stage fits: the others cannot differ
        keep = [i for i, n in enumerate(names) if rows[n][TRUTH]["feasible"]]
        names = [names[i] for i in keep]
        correct = {m: [c[i] for i in keep] for m, c in correct.items()}
    truth = [rows[n][TRUTH]["reward"] for n in names]
    proxies = {m: {"kendall_tau_reward": kendall_tau([rows[n][m]["reward"] for n in names], truth),
                   "kendall_tau_best_accuracy": kendall_tau([rows[n][m]["best_accuracy"] for n in names],
                                                            [rows[n][TRUTH]["best_accuracy"] for n in names]),
                   "seconds_per_candidate": sum(rows[n][m]["seconds"] for n in names) / len(names)}
               for m in methods if m != TRUTH}
    spread = resampled_taus(correct, truth=TRUTH, resamples=resamples)
    for m in proxies:  # of the accuracies `order` names (the reward's order, see the module docstring)
        proxies[m].update({f"{k}_{order}": v for k, v in spread[m].items()})
    result = {"command": command, "machine": machine_info(), "target": target.to_dict(),
              "macs_budget": macs_budget, "architectures": len(names), "ranked": names, "resamples": resamples,
              "all_below_target": (not any(rows[n][m]["feasible"] for n in names for m in methods)
                                   if macs_budget is None else None),
              "options": {"bn_batches": bn_batches, "finetune_images": finetune_images,
                          "finetune_recipe": dataclasses.asdict(short)},
              "reward": reward_mode, "proxies": proxies,
              "ground_truth": {f"{k}_{order}": v for k, v in spread[TRUTH].items()}, "rows": rows}
    atomic_write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--dir", default="runs/supernet_ranking", help="the ranking's --dir")
    parser.add_argument("--out", default="benchmarks/results/ranking_proxies.json")
    parser.add_argument("--bn-batches", type=int, default=64)
    parser.add_argument("--finetune-images", type=int, default=6400)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--macs-budget", type=float, default=None,
                        help="score at this fraction of the base's MACs instead of the ranking's target")
    args = parser.parse_args(argv)
    try:
        bn = check_at_least(args.bn_batches, 1, flag="--bn-batches")
        images = check_at_least(args.finetune_images, 1, flag="--finetune-images")
        resamples = check_at_least(args.resamples, 1, flag="--resamples")
        if args.macs_budget is not None and not 0 < args.macs_budget <= 1:
            raise ConfigError(f"Expected --macs-budget as a fraction of the base's MACs in (0, 1], but got "
                              f"{args.macs_budget}")
        setup = setup_from_args(args)
        result = run_proxies(setup, work_dir=args.dir, out=args.out, bn_batches=bn, finetune_images=images,
                             resamples=resamples, macs_budget=args.macs_budget,
                             command="python -m benchmarks.ranking_proxies " + " ".join(sys.argv[1:]))
    except S2DNASError as err:
        return report_error(err)
    print(json.dumps({"proxies": result["proxies"], "ground_truth": result["ground_truth"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
