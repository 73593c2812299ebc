"""``s2dnas demo``: the built-in default run (for now: evaluate the shipped base model).

The demo evaluates the shipped pretrained ResNet-20 (Fashion-MNIST, 1 channel, 10 classes) on the
official Fashion-MNIST test set and prints its accuracy and MACs. Later issues extend it to the
whole pipeline (search, multi-stage training, dynamic inference); each step stays a library call.
"""
from __future__ import annotations

import argparse

from s2dnas._device import resolve_device
from s2dnas.cli.common import add_device_arg
from s2dnas.cli.evaluate_base import format_summary
from s2dnas.train.evaluate import evaluate_base_model, load_base_model
from s2dnas.data import build_splits

__all__ = ["DEMO_DATASET", "DEMO_MODEL", "DEMO_VAL_SIZE", "add_parser", "run", "run_demo"]

DEMO_MODEL = "resnet20"
DEMO_DATASET = "fashion-mnist"
#: Images held out of train for val (the default of every command; the demo reports on test only).
DEMO_VAL_SIZE = 5000


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help="run the built-in demo (evaluate the shipped base model)",
                       description="Evaluate the shipped pretrained ResNet-20 on the Fashion-MNIST test set "
                                   "and print its accuracy and MACs.")
    p.add_argument("--data-dir", default=None, help="folder holding the Fashion-MNIST files")
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
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``s2dnas demo``."""
    return run_demo(args)
