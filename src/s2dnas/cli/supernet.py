"""``s2dnas supernet``: train the super-network of a config once (its ``supernet`` section), to be
scored from by ``s2dnas run`` with ``search.supernet: DIR``."""
from __future__ import annotations

import argparse
import json

from s2dnas.cli.common import add_set_arg, prepare_out_dir
from s2dnas.cli.run import load_run_config
from s2dnas.train.supernet_training import CHECKPOINT_NAME, WEIGHTS_NAME

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``supernet``."""
    p = sub.add_parser(
        "supernet", help="train the super-network once (sandwich rule, distillation from the base)",
        description="Train the super-network over the space of the config's base model with the recipe of its "
                    "`supernet` section. Writes OUT/supernet_checkpoint.safetensors after every epoch and "
                    "OUT/supernet.safetensors + supernet.json (config, config hash, training time, machine); "
                    "`s2dnas run` scores candidates from it with --set search.supernet=OUT.")
    p.add_argument("--config", default=None, help="YAML file of what differs from the defaults")
    add_set_arg(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT's checkpoint (refused if the configuration differs)")
    p.add_argument("--force", action="store_true", help="start over in an existing OUT")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (overrides the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars; one line per epoch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``s2dnas supernet``."""
    from s2dnas.runner import train_supernet_step

    cfg = load_run_config(args)
    out = prepare_out_dir(args.out, resume=args.resume, force=args.force, marker=CHECKPOINT_NAME,
                          dataset=cfg.data.dataset)
    args.resume_hint = f"s2dnas supernet {'--config ' + args.config + ' ' if args.config else ''}--out {out} --resume"
    result = train_supernet_step(cfg, out=out, resume=args.resume, overwrite=args.force,
                                 progress=not args.no_progress, log_epochs=args.no_progress)
    print(json.dumps({"out": str(out / WEIGHTS_NAME), "epochs": result["epochs"],
                      "config_hash": result["config_hash"], "train_seconds": round(result["train_seconds"], 1),
                      "loss": round(result["history"][-1]["loss"], 4) if result["history"] else None}))
    return 0
