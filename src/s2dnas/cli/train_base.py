"""``s2dnas train-base``: train the static base model."""
from __future__ import annotations

import argparse
import json

from s2dnas import distributed
from s2dnas._device import resolve_device
from s2dnas.cli.common import add_data_args, add_device_arg, image_options, prepare_out_dir
from s2dnas.data import build_splits
from s2dnas.train.base import BaseTrainConfig, train_base
from s2dnas.train.loops import seed_everything
from s2dnas.zoo import create_model

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-base", help="train the static base model",
                       description="Train a base CNN with SGD + cosine schedule; checkpoints every epoch. The data "
                                   "set, val cut and preprocessing are stored with the weights (model.json) so that "
                                   "the later commands reproduce them.")
    p.add_argument("--model", default="resnet20", help="zoo name, torchvision:<name> or package.module:factory")
    add_data_args(p, preprocessing=True)
    defaults = BaseTrainConfig()
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N examples only (smoke runs)")
    p.add_argument("--out", required=True, help="output directory (checkpoint.pt, model.safetensors, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="start over in an existing OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch still)")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = BaseTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, seed=args.seed, limit_train=args.limit_train)
    device = distributed.device_for(distributed.get_info(), resolve_device(args.device))  # torchrun: cuda:LOCAL_RANK
    dataset = args.dataset or "fashion-mnist"
    options = image_options(args)
    out = prepare_out_dir(args.out, resume=args.resume, force=args.force, marker="checkpoint.pt", dataset=dataset)
    args.resume_hint = f"s2dnas train-base ... --out {out} --resume"
    splits = build_splits(dataset, data_dir=args.data_dir, val_size=args.val_size, seed=args.data_seed or 0,
                          options=options)
    seed_everything(config.seed)  # the initial weights follow --seed, not the process's random state
    model = create_model(args.model, num_classes=splits.num_classes, in_channels=splits.in_channels)

    def say(r: dict[str, float]) -> None:
        print(f"epoch {r['epoch']}/{config.epochs}: train loss {r['train_loss']:.4f} acc {r['train_accuracy']:.4f} "
              f"| val acc {r['val_accuracy']:.4f}", flush=True)

    metrics = train_base(model, splits, config=config, out_dir=out, model_name=args.model, device=device,
                         resume=args.resume, progress=not args.no_progress, distributed=True, on_epoch=say)
    print(json.dumps({k: metrics[k] for k in ("model", "dataset", "val_accuracy", "test_accuracy")}))
    return 0
