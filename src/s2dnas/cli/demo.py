"""``s2dnas demo``: the built-in default run.

Step 1 evaluates the shipped pretrained ResNet-20 (Fashion-MNIST, 1 channel, 10 classes) on the
official test set and prints its accuracy and MACs. Step 2 runs the whole pipeline (search, final
training, calibration on val, test evaluation, export, report) with the shipped demo config
(``s2dnas/config/demo.yaml``) into ``runs/demo``; an interrupted demo resumes where it stopped.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from s2dnas._device import resolve_device
from s2dnas.cli.common import add_device_arg
from s2dnas.cli.evaluate_base import format_summary
from s2dnas.train.evaluate import evaluate_base_model, load_base_model
from s2dnas.data import build_splits

__all__ = ["DEMO_DATASET", "DEMO_MODEL", "DEMO_VAL_SIZE", "add_parser", "plain_summary", "run", "run_demo"]

DEMO_MODEL = "resnet20"
DEMO_DATASET = "fashion-mnist"
#: Images held out of train for val (the default of every command; the demo reports on test only).
DEMO_VAL_SIZE = 5000


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help="run the built-in demo (shipped ResNet-20 on Fashion-MNIST, whole pipeline)",
                       description="Evaluate the shipped pretrained ResNet-20 on the Fashion-MNIST test set, "
                                   "then run the whole S2DNAS pipeline on it with the built-in demo config.")
    p.add_argument("--data-dir", default=None, help="folder holding the Fashion-MNIST files")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo; resumed if present)")
    p.add_argument("--force", action="store_true", help="start the demo over instead of resuming")
    p.add_argument("--base-only", action="store_true", help="only evaluate the shipped base model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_arg(p)
    p.set_defaults(func=run)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo steps with ``args.data_dir`` and ``args.device``; print one line per step."""
    device = resolve_device(args.device)
    # Step 1: data (the val cut does not matter here: only the test split is used).
    splits = build_splits(DEMO_DATASET, data_dir=args.data_dir, val_size=DEMO_VAL_SIZE)
    # Step 2: the shipped base model, evaluated on test.
    model, name, source = load_base_model(splits=splits, model_name=DEMO_MODEL)
    result = evaluate_base_model(model, splits, model_name=name, weights=f"pretrained {source}",
                                 split="test", device=device)
    print(f"base model: {format_summary(result)}")
    if args.base_only:
        return 0
    # Step 3: the whole pipeline on the built-in default config.
    from s2dnas.cli.common import prepare_out_dir
    from s2dnas.config import DEMO_CONFIG, load_config
    from s2dnas.runner import run_pipeline

    overrides: list[tuple[str, object]] = [("out", args.out), ("device", args.device)]
    if args.data_dir is not None:
        overrides.append(("data.data_dir", args.data_dir))
    cfg = load_config(DEMO_CONFIG, overrides)
    resume = (Path(cfg.out) / "config.yaml").exists() and not args.force
    out = prepare_out_dir(cfg.out, resume=resume, force=args.force, marker="config.yaml")
    args.resume_hint = "s2dnas demo (it resumes by itself)"
    results = run_pipeline(cfg, out=out, resume=resume, progress=not args.no_progress)
    print(plain_summary(results))
    print(f"report: {out / 'report.md'}")
    return 0


def plain_summary(results: dict) -> str:
    """What the demo got against the base, in plain words (from ``results.json``)."""
    test, base = results["test"], results["base"]
    gap = 100 * (test["accuracy"] - base["test_accuracy"])
    target = results.get("target_val_accuracy")
    budget = (results.get("calibration_target") or {}).get("macs_budget")
    met = results["calibration"].get("feasible")
    if target is not None:
        aim = (f" The thresholds were chosen on val for {100 * target:.2f}% val accuracy (the base's minus the "
               f"tolerance): {'reached' if met else 'not reached, so the most accurate setting was kept'}.")
    elif budget is not None:
        aim = (f" The thresholds were chosen on val for the best accuracy within {100 * budget / base['macs']:.3g}% "
               f"of the base's MACs{'' if met else ' (not possible on val, so the cheapest setting was kept)'}.")
    else:
        aim = ""
    return (f"result: the dynamic network is right on {100 * test['accuracy']:.2f}% of the test images, the base on "
            f"{100 * base['test_accuracy']:.2f}% ({gap:+.2f} points), and it spends {100 * test['macs_ratio']:.1f}% "
            f"of the base's MACs per image on average ({1 / test['macs_ratio']:.1f}x fewer); "
            f"{', '.join(f'{100 * f:.0f}%' for f in test['exit_fractions'])} of the images leave at stages "
            f"{', '.join(str(i + 1) for i in range(len(test['exit_fractions'])))}.{aim}")


def run(args: argparse.Namespace) -> int:
    """Run ``s2dnas demo``."""
    return run_demo(args)
