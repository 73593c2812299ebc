"""How well do cheap scores rank candidates? (issue 5, items 2 and 5)

For N architectures sampled uniformly from the space of the shipped ResNet-20 (Fashion-MNIST):
- the one-shot score (super-network weights, BN re-estimated, thresholds on val);
- the briefly-trained score (inherited weights, `--brief-images` training images, same scoring);
- for the first `--full` of them, the score after longer training (`--full-epochs` on all data).
Reports Kendall's tau between the rankings. Run:

    python -m benchmarks.ranking --candidates 20 --full 4 --out benchmarks/results/ranking.json

Rewards use the base model's target (base val accuracy - 0.1 pt); when candidates cannot reach it,
the reward ranks them by accuracy gap (see src/s2dnas/search/reward.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from s2dnas._io import atomic_write_json
from s2dnas._device import machine_info
from s2dnas.config import CalibrationConfig, SupernetConfig, TrainConfig, resolve_target
from s2dnas.data import build_splits
from s2dnas.search.evaluator import SupernetEvaluator, TrainedEvaluator
from s2dnas.train.supernet import SuperNet
from s2dnas.train.supernet_training import train_supernet
from s2dnas.space import Space
from s2dnas.train.evaluate import load_base_model
from s2dnas.train.loops import evaluate
from s2dnas.data import make_loader


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two score lists (ties count as neither)."""
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = (a[i] - a[j]), (b[i] - b[j])
            s += (x * y > 0) - (x * y < 0)
    return 2 * s / (n * (n - 1)) if n > 1 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--full", type=int, default=4)
    p.add_argument("--brief-images", type=int, default=5000)
    p.add_argument("--full-epochs", type=int, default=1)
    p.add_argument("--supernet-epochs", type=int, default=1)
    p.add_argument("--limit-train", type=int, default=None, help="training images per epoch of the super-network "
                   "and of the longer training (default: all)")
    p.add_argument("--out", default="benchmarks/results/ranking.json")
    args = p.parse_args()
    torch.manual_seed(0)
    device = torch.device("cpu")
    splits = build_splits("fashion-mnist")
    base, name, source = load_base_model(splits=splits, model_name="resnet20")
    base.eval()
    for q in base.parameters():
        q.requires_grad_(False)
    space = Space(base, input_shape=splits.input_shape, num_stages=3, model_name=name)
    base_val = evaluate(base, make_loader(splits.val, batch_size=512), device=device).accuracy
    common = dict(target=resolve_target(CalibrationConfig(), base_val_accuracy=base_val, base_macs=space.base_macs()),
                  confidence=CalibrationConfig().confidence, reward="macs_saving", device=device)
    gen = torch.Generator().manual_seed(0)
    archs = [space.sample(gen) for _ in range(args.candidates)]
    t = time.time()
    supernet = SuperNet(space)  # the sandwich super-network of `s2dnas run` (strategy oneshot)
    train_supernet(supernet, splits.train, config=SupernetConfig(epochs=args.supernet_epochs,
                                                                 limit_train=args.limit_train),
                   device=device, progress=True)
    supernet_seconds = time.time() - t
    oneshot = SupernetEvaluator(supernet.eval(), splits, **common)
    brief = TrainedEvaluator(space, splits, teacher=base, train=TrainConfig(epochs=1, lr=0.02,
                             limit_train=args.brief_images), **common)
    full = TrainedEvaluator(space, splits, teacher=base, train=TrainConfig(epochs=args.full_epochs, lr=0.02,
                                                                        limit_train=args.limit_train),
                            **common)
    rows = []
    for i, arch in enumerate(archs):
        r1, r2 = oneshot.evaluate(arch), brief.evaluate(arch)
        row = {"architecture": arch.to_dict(), "oneshot": r1.reward, "brief": r2.reward,
               "oneshot_seconds": r1.seconds, "brief_seconds": r2.seconds,
               "oneshot_metrics": r1.metrics, "brief_metrics": r2.metrics}
        if i < args.full:
            r3 = full.evaluate(arch)
            row.update(full=r3.reward, full_seconds=r3.seconds, full_metrics=r3.metrics)
        rows.append(row)
        print(f"{i}: oneshot {r1.reward:.3f} brief {r2.reward:.3f} full {row.get('full', float('nan')):.3f}", flush=True)
    k = [r for r in rows if "full" in r]
    result = {
        "machine": machine_info(), "base_model": name, "dataset": "fashion-mnist", "base_val_accuracy": base_val,
        "supernet_seconds": supernet_seconds, "candidates": rows,
        "kendall_tau_oneshot_vs_brief": kendall_tau([r["oneshot"] for r in rows], [r["brief"] for r in rows]),
        "kendall_tau_brief_vs_full": kendall_tau([r["brief"] for r in k], [r["full"] for r in k]),
        "kendall_tau_oneshot_vs_full": kendall_tau([r["oneshot"] for r in k], [r["full"] for r in k]),
        # accuracy alone (the most accurate threshold setting of each candidate), target-free
        "kendall_tau_accuracy_oneshot_vs_brief": kendall_tau([r["oneshot_metrics"]["best_accuracy"] for r in rows],
                                                             [r["brief_metrics"]["best_accuracy"] for r in rows]),
        "kendall_tau_accuracy_brief_vs_full": kendall_tau([r["brief_metrics"]["best_accuracy"] for r in k],
                                                          [r["full_metrics"]["best_accuracy"] for r in k]),
        "args": vars(args),
    }
    atomic_write_json(args.out, result)
    print(json.dumps({key: v for key, v in result.items() if key.startswith("kendall")}, indent=1))


if __name__ == "__main__":
    main()
