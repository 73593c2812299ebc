"""``s2dnas train``: train a multi-stage network of one architecture, distilling from the base model."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2dnas import distributed
from s2dnas._device import resolve_device
from s2dnas._io import atomic_write_json
from s2dnas.cli.common import add_config_args, add_data_args, add_device_arg, prepare_out_dir
from s2dnas.config import RunConfig, config_to_dict, dump_config, load_config
from s2dnas.cost import count_macs
from s2dnas.data import DataSplits, make_loader
from s2dnas.errors import CheckpointError
from s2dnas.space import Architecture
from s2dnas.space.checks import check_architecture
from s2dnas.space.factory import build_space
from s2dnas.train.checkpoint import load_checkpoint
from s2dnas.train.evaluate import base_splits, load_trained_base
from s2dnas.train.multistage import CHECKPOINT_NAME, evaluate_stages, save_multistage, train_multistage

__all__ = ["add_parser", "run", "add_config_args", "config_from_args", "load_base", "check_architecture"]

# Flag (argparse dest) -> config key; a flag given on the command line overrides the YAML file,
# and --set overrides both.
_FLAGS = {
    "model": "model.name", "base_weights": "model.weights",
    "dataset": "data.dataset", "data_dir": "data.data_dir", "val_size": "data.val_size", "data_seed": "data.seed",
    "stages": "space.num_stages", "ratio_grid": "space.ratio_grid", "groups": "space.groups",
    "epochs": "train.epochs", "lr": "train.lr", "batch_size": "train.batch_size",
    "limit_train": "train.limit_train", "seed": "train.seed", "device": "device", "out": "out",
}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults -> ``--config`` -> flags given on the command line -> ``--set``."""
    flags = [(key, getattr(args, dest)) for dest, key in _FLAGS.items()
             if getattr(args, dest, None) is not None]
    return load_config(args.config, [*flags, *args.set])


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train``."""
    p = sub.add_parser(
        "train", help="train a multi-stage network (per-stage CE + distillation from the base)",
        description="Build the multi-stage network of --arch from the base model with inherited weights and "
                    "train it: per-stage cross-entropy plus distillation from the base. Writes OUT/checkpoint.pt "
                    "every epoch, then OUT/multistage.safetensors (+ .json), metrics.json and config.yaml. "
                    "Values come from the defaults, then --config, then the flags below, then --set.",
    )
    p.add_argument("--arch", required=True, help="architecture JSON (s2dnas space --arch-out, or a search result)")
    p.add_argument("--model", default=None, help="base model: zoo name, torchvision:<name> or module:factory "
                                                 "(default: resnet20)")
    p.add_argument("--base-weights", default=None, metavar="FILE",
                   help="model.safetensors of the base from s2dnas train-base (default: the shipped weights)")
    add_data_args(p)
    p.add_argument("--stages", type=int, default=None, help="S, must match the architecture (default: 3)")
    p.add_argument("--ratio-grid", type=int, default=None, help="q, must match the architecture (default: 8)")
    p.add_argument("--groups", default=None, help="resolution or resolution:N (default: resolution)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: train.epochs)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: train.lr)")
    p.add_argument("--batch-size", type=int, default=None, help="default: data.batch_size")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N examples only")
    p.add_argument("--seed", type=int, default=None, help="seed of shuffling and augmentation")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="start over in an existing OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)
    add_device_arg(p)
    # Flags left unset must not override the config file: None means "not given".
    p.set_defaults(func=run, dataset=None, data_dir=None, val_size=None, data_seed=None, device=None)


def load_base(cfg: RunConfig, splits: DataSplits) -> tuple[nn.Module, str, str]:
    """The trained base model of ``cfg.model`` for ``splits`` (see :func:`load_trained_base`)."""
    return load_trained_base(splits=splits, model_name=cfg.model.name, weights=cfg.model.weights,
                             pretrained=cfg.model.pretrained)


def _check_resume_checkpoint(path: Path, arch: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``path`` loads (weights-only) and was written for ``arch``."""
    state = load_checkpoint(path)
    if state.get("architecture") != arch:
        raise CheckpointError(f"{path} is not a multi-stage training checkpoint of this architecture; resume with "
                              "the --arch it was written for, or start over with --force")


def run(args: argparse.Namespace) -> int:
    """Run ``s2dnas train``."""
    cfg = config_from_args(args)
    # Cheap checks first: the architecture file, before any data is loaded or directory made.
    arch = Architecture.load(args.arch)
    check_architecture(arch, num_stages=cfg.space.num_stages, ratio_grid=cfg.space.ratio_grid)
    out = prepare_out_dir(cfg.out, resume=args.resume, force=args.force, marker=CHECKPOINT_NAME,
                          dataset=cfg.data.dataset)
    args.resume_hint = f"s2dnas train --arch {args.arch} ... --out {out} --resume"
    device = distributed.device_for(distributed.get_info(), resolve_device(cfg.device))  # torchrun: cuda:LOCAL_RANK
    t0 = time.time()

    # 1. data, base model, space, and the architecture's network with inherited weights
    splits = base_splits(dataset=cfg.data.dataset, data_dir=cfg.data.data_dir, val_size=cfg.data.val_size,
                         seed=cfg.data.seed, weights=cfg.model.weights, input_shape=cfg.model.input_shape)
    base, model_name, source = load_base(cfg, splits)
    base.eval()
    space = build_space(base, config=cfg.space, input_shape=splits.input_shape, model_name=model_name)
    space.validate_architecture(arch)
    msnet = space.build(arch)
    if args.resume:  # check the checkpoint before rewriting anything in OUT: a bad one leaves OUT as it was
        _check_resume_checkpoint(out / CHECKPOINT_NAME, msnet.architecture.to_dict())
    if distributed.is_main():
        dump_config(cfg, out / "config.yaml")

    # 2. training (checkpoint every epoch; --resume continues exactly)
    result = train_multistage(msnet, splits, config=cfg.train, teacher=base, device=device, out_dir=out,
                              resume=args.resume, progress=not args.no_progress,
                              eval_batch_size=cfg.data.eval_batch_size, distributed=True)
    if not distributed.is_main():  # every rank holds rank 0's weights; the report and files come from rank 0
        return 0

    # 3. report: per-stage accuracy (val for choices, test for reporting) and MACs counted by execution
    val_acc = result["val_accuracy"]
    if val_acc is None:  # resumed after the last epoch of a run without history
        val_acc = evaluate_stages(msnet, make_loader(splits.val, batch_size=cfg.data.eval_batch_size), device=device)
    test_acc = evaluate_stages(msnet, make_loader(splits.test, batch_size=cfg.data.eval_batch_size), device=device)
    stage_macs = msnet.stage_macs()
    with torch.no_grad():
        base_macs = count_macs(base, torch.zeros(1, *space.input_shape, device=device))
    facts: dict[str, Any] = {
        "model": model_name, "base_weights": source, "dataset": splits.name, "num_classes": splits.num_classes,
        "in_channels": splits.in_channels, "mean": list(splits.mean), "std": list(splits.std),
        "stage_val_accuracy": val_acc, "stage_test_accuracy": test_acc,
        "stage_macs": stage_macs, "base_macs": base_macs,
        "stage_macs_fraction": [m / base_macs for m in stage_macs],
        "epochs": result["epochs"], "train": config_to_dict(cfg.train),
    }
    save_multistage(out / "multistage.safetensors", msnet, metadata=facts)
    atomic_write_json(out / "metrics.json", {**facts, "architecture": arch.to_dict(), "history": result["history"],
                                             "seconds_this_run": time.time() - t0})
    print(json.dumps({"out": str(out), "stage_val_accuracy": [round(a, 4) for a in val_acc],
                      "stage_test_accuracy": [round(a, 4) for a in test_acc],
                      "stage_macs_percent": [round(100 * m / base_macs, 2) for m in stage_macs]}))
    return 0

