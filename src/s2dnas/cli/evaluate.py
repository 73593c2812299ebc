"""``s2dnas evaluate``: accuracy, exit distribution and average MACs of a saved dynamic model."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from s2dnas._device import resolve_device
from s2dnas._io import atomic_write_json
from s2dnas.cli.common import add_data_args, add_device_arg, check_model_dir
from s2dnas.data import check_splits_fit, make_loader, splits_for_model
from s2dnas.dynamic import collect_logits, evaluate_policy, load, plot_accuracy_vs_macs, plot_exit_histogram
from s2dnas.errors import ConfigError, RunDirError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a saved dynamic model (accuracy, exits, MACs, plots)",
        description="Run every stage once on a split, apply the saved thresholds, and report accuracy, the "
                    "exit distribution and the average MACs per input; write accuracy_vs_macs.png, "
                    "exit_histogram.png and evaluation_<split>.json.")
    p.add_argument("dir", metavar="DIR", help="dynamic model directory (RUN/model of s2dnas run, or DynamicNet.save)")
    add_data_args(p, stored=True)
    p.add_argument("--split", choices=("test", "val"), default="test", help="split to evaluate (default: test)")
    p.add_argument("--out-dir", default=None, help="where to write the plots and JSON (default: DIR)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N inputs only (smoke runs)")
    add_device_arg(p)
    p.set_defaults(func=run)


def _fmt_macs(macs: float) -> str:
    return f"{macs / 1e6:.4g}M"


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"Expected --batch-size >= 1, but got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"Expected --limit >= 1, but got {args.limit}")
    device = resolve_device(args.device)
    net = load(check_model_dir(args.dir, command="evaluate"), device=device)
    spec = net.model_spec or {}
    # The data set, val cut and preprocessing stored with the model; a val cut only for --split val.
    splits = splits_for_model(spec.get("data"), dataset=args.dataset, data_dir=args.data_dir,
                              val_size=args.val_size, seed=args.data_seed, need_val=args.split == "val",
                              source=str(args.dir))
    check_splits_fit(spec, splits)
    loader = make_loader(getattr(splits, args.split), batch_size=args.batch_size, limit=args.limit)

    # One pass with every stage; the rule is then applied to the cached logits (the executor gives
    # the same exits and MACs, which tests/dynamic checks). The curve: the calibration's Pareto
    # thresholds (chosen on val) re-scored on this split; without a saved calibration, a sweep on this
    # split itself (optimistic: chosen on the data it reports).
    stage_logits = collect_logits(net.msnet, loader, device=device)
    stage_macs = net.stage_macs
    scores = evaluate_policy(stage_logits, net.policy, stage_macs=stage_macs, sweep=True)
    result, best, stage_acc = scores.result, scores.oracle, scores.stage_accuracy
    curve = [(p["expected_macs"], p["accuracy"]) for p in scores.curve]
    label = (f"calibrated thresholds on {args.split}" if scores.curve_source == "calibration"
             else f"threshold sweep on {args.split} (optimistic)")
    base_macs = spec.get("base_macs")
    cumulative = [sum(stage_macs[: s + 1]) for s in range(len(stage_macs))]
    points = {"these thresholds": (result["expected_macs"], result["accuracy"]),
              "oracle exits": (best["expected_macs"], best["accuracy"])}
    if spec.get("base_accuracy") is not None and base_macs:
        points["base model (val)"] = (float(base_macs), float(spec["base_accuracy"]))

    out = Path(args.out_dir) if args.out_dir else Path(args.dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        acc_png = plot_accuracy_vs_macs({label: curve, "single stage (all inputs)": list(zip(cumulative, stage_acc))},
                                        out / "accuracy_vs_macs.png", base=base_macs, points=points)
        hist_png = plot_exit_histogram(result["exit_fractions"], out / "exit_histogram.png", stage_macs=stage_macs)
        report = {
            "dataset": splits.name, "split": args.split, **result, "stage_macs": stage_macs,
            "base_macs": base_macs,
            "macs_percent_of_base": 100.0 * result["expected_macs"] / base_macs if base_macs else None,
            "stage_accuracy": stage_acc, "oracle": best,
            "curve": [{"expected_macs": m, "accuracy": a} for m, a in curve], "curve_source": label,
        }
        json_path = out / f"evaluation_{args.split}.json"
        atomic_write_json(json_path, report)
    except OSError as err:
        raise RunDirError(f"Cannot write to {out} ({err.strerror or err}); pass a writable --out-dir") from None

    n = result["num_examples"]
    exits = " | ".join(f"stage {s + 1} {100 * f:.1f}%" for s, f in enumerate(result["exit_fractions"]))
    share = (f" ({100.0 * result['expected_macs'] / base_macs:.1f}% of the base model's {_fmt_macs(base_macs)})"
             if base_macs else "")
    print(f"{splits.name} {args.split}: {n} inputs, thresholds {[round(t, 4) for t in net.thresholds]} "
          f"({net.confidence})")
    print(f"accuracy: {100 * result['accuracy']:.2f}%")
    print(f"exits: {exits}")
    print(f"average MACs: {_fmt_macs(result['expected_macs'])} per input{share}")
    if not math.isnan(best["accuracy"]):
        print(f"oracle exits: {100 * best['accuracy']:.2f}% at {_fmt_macs(best['expected_macs'])} MACs")
    print(f"wrote {acc_png}, {hist_png}, {json_path}")
    return 0
