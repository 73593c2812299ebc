"""``s2dnas evaluate-base``: accuracy, parameters and MACs of a trained base model on one split."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from s2dnas._device import resolve_device
from s2dnas.cli.common import add_data_args, add_device_arg
from s2dnas.data import splits_for_model
from s2dnas.train.evaluate import DEFAULT_MODEL, BaseEvaluation, base_data_spec, evaluate_base_model, load_base_model

__all__ = ["add_parser", "format_summary", "run"]


def format_summary(result: BaseEvaluation) -> str:
    """One line: model, weights, dataset, split, accuracy in %, parameters and MACs per input."""
    shape = "x".join(str(s) for s in result.input_shape)
    correct = round(result.accuracy * result.num_examples)
    return (f"{result.model} ({result.weights}) on {result.dataset} {result.split}: "
            f"accuracy {100 * result.accuracy:.2f}% ({correct}/{result.num_examples}) | "
            f"params {result.num_params:,} | MACs {result.macs:,} per {shape} input "
            f"({result.macs / 1e6:.2f}M)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate-base``."""
    p = sub.add_parser(
        "evaluate-base", help="evaluate a base model (accuracy, params, MACs)",
        description="Evaluate a base model: train-base's model.safetensors (--weights) or the shipped "
                    "pretrained weights. Prints accuracy, parameters and MACs per input.",
    )
    p.add_argument("--model", default=None,
                   help=f"zoo name, torchvision:<name> or package.module:factory (default: the name stored "
                        f"with --weights, else {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None,
                   help="model.safetensors from s2dnas train-base, or its run directory "
                        "(default: the shipped pretrained weights)")
    add_data_args(p, stored=True)
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test (reporting) or val (the val cut stored with --weights); default test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples only")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``s2dnas evaluate-base``."""
    device = resolve_device(args.device)
    # The data set, val cut and preprocessing stored with the weights (train-base); val only when asked for.
    splits = splits_for_model(base_data_spec(args.weights), dataset=args.dataset, data_dir=args.data_dir,
                              val_size=args.val_size, seed=args.data_seed, need_val=args.split == "val",
                              source=str(args.weights))
    model, name, source = load_base_model(splits=splits, model_name=args.model, weights=args.weights)
    result = evaluate_base_model(model, splits, model_name=name, weights=source, split=args.split,
                                 batch_size=args.batch_size, device=device, limit=args.limit)
    if args.json:
        out = asdict(result)
        out["input_shape"] = list(result.input_shape)
        print(json.dumps(out))
    else:
        print(format_summary(result))
    return 0
