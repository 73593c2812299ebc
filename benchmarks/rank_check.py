"""Does the brief-training score rank architectures like the final training does? (issue 5, item 2)

Uses the architectures the method benchmark trained in full (its final-training recipe): the
hand-picked one and the winners of random search, RL search and one-shot search. Each is scored
twice with the search's reward (MAC saving at the run's accuracy target, calibrated on val):
after brief training from inherited weights (exactly as a search candidate), and after the
benchmark's final training. Reports Kendall's tau between the two rankings.

    python -m benchmarks.rank_check --model resnet20      # after benchmarks.methods --model resnet20
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from s2dnas._io import atomic_write_json
from s2dnas.config import CalibrationTarget, load_config
from s2dnas.data import make_loader
from s2dnas.dynamic.calibrate import collect_logits
from s2dnas.search.evaluator import TrainedEvaluator
from s2dnas.space import Architecture

from benchmarks.methods import METHODS, Scale, _space, make_context, teacher
from benchmarks.ranking import kendall_tau

NAMES = ["s2dnas_handpicked", "s2dnas_random", "s2dnas_rl", "s2dnas_oneshot"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--scale", default="small")
    args = p.parse_args()
    out = Path(f"runs/bench/{args.model}")
    ctx = make_context(model=args.model, scale=args.scale, out=out)
    cfg = load_config(None)
    # the target the search's rewards aim at: the run's own (search.target: reference was removed)
    target = float(json.loads((out / "s2dnas_rl" / "results.json").read_text())["target_val_accuracy"])
    space = _space(ctx)
    sc = ctx.scale
    brief = TrainedEvaluator(space, ctx.splits, teacher=teacher(ctx),
                             train=dataclasses.replace(cfg.train, epochs=sc.candidate_epochs,
                                                       limit_train=sc.candidate_limit_train, seed=cfg.seed),
                             target=CalibrationTarget(target_accuracy=target), confidence=cfg.calibration.confidence,
                             reward="macs_saving",
                             device=ctx.device, eval_batch_size=sc.eval_batch_size)
    rows, seen = [], set()
    for name in NAMES:
        net, _, extra = METHODS[name](ctx)  # the benchmark's finished network (cached)
        arch = Architecture.from_dict(extra["architecture"])
        if space.canonical(arch) in seen:  # two searches found the same network: rank it once
            continue
        seen.add(space.canonical(arch))
        scored = brief.evaluate(arch)
        logits = collect_logits(net.to(ctx.device), make_loader(ctx.splits.val, batch_size=sc.eval_batch_size),
                                device=ctx.device)
        final_reward, final_metrics = brief.score(logits, net)
        rows.append({"method": name, "architecture": arch.to_dict(), "brief_reward": scored.reward,
                     "brief_metrics": scored.metrics, "final_reward": final_reward, "final_metrics": final_metrics})
        print(f"{name}: brief {scored.reward:.3f}, final {final_reward:.3f}", flush=True)
    write(args.model, out, rows, target=target, scale=sc)


def write(model: str, out: Path, rows: list[dict], *, target: float, scale: Scale) -> None:
    """Add the final networks' accuracy at the real target, the two taus, and write the file."""
    for r in rows:
        # the benchmark's operating point, calibrated for the base's val accuracy: when no setting
        # reaches it (all of them here), the reward ranks by this val accuracy
        result = json.loads((out / r["method"] / "result.json").read_text())
        r["final_val_accuracy_at_base_target"] = result["val_accuracy"]
    tau = kendall_tau([r["brief_reward"] for r in rows], [r["final_reward"] for r in rows])
    tau_base = kendall_tau([r["brief_reward"] for r in rows], [r["final_val_accuracy_at_base_target"] for r in rows])
    print(f"Kendall tau on {len(rows)} architectures (few: weak evidence either way): brief vs final reward at the "
          f"search target {tau:.2f}; brief vs final val accuracy at the base target {tau_base:.2f}")
    atomic_write_json(f"benchmarks/results/rank_check_{model}.json",
                      {"model": model, "search_target": target, "candidates": rows, "kendall_tau": tau,
                       "kendall_tau_base_target": tau_base,
                       "brief": {"epochs": scale.candidate_epochs, "images": scale.candidate_limit_train},
                       "final": {"epochs": scale.final_epochs, "images": scale.limit_train},
                       "command": f"python -m benchmarks.rank_check --model {model}"})


if __name__ == "__main__":
    main()
