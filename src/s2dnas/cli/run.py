"""``s2dnas run``: the whole pipeline from a YAML config (base -> search -> train -> calibrate ->
test -> export -> report)."""
from __future__ import annotations

import argparse
from pathlib import Path

from s2dnas import distributed
from s2dnas.cli.common import add_set_arg, prepare_out_dir
from s2dnas.config import RunConfig, load_config

__all__ = ["add_parser", "run", "add_config_args"]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--set``, ``--out``, ``--resume``/``--force``, ``--device``, ``--no-progress``."""
    p.add_argument("--config", default=None,
                   help="YAML file of what differs from the defaults (the defaults and their documentation: "
                        "src/s2dnas/config/schema.py; the demo's file: src/s2dnas/config/demo.yaml)")
    # --resume refuses a config that differs from the run's config.yaml outside RESUME_MAY_DIFFER
    add_set_arg(p)
    p.add_argument("--out", default=None, help="run directory (overrides the config's `out`)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in its directory")
    p.add_argument("--force", action="store_true", help="start over in an existing run directory")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (overrides the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the whole pipeline from a config",
                       description="Base model -> search -> final training -> calibration on val -> "
                                   "test evaluation -> export -> report, in one run directory.")
    add_config_args(p)
    p.set_defaults(func=run)


def load_run_config(args: argparse.Namespace, *, default_out: str = "runs/s2dnas") -> RunConfig:
    """The validated config of ``args`` (file, then flags, then ``--set``)."""
    flags = []
    if args.out is not None:
        flags.append(("out", args.out))
    if args.device is not None:
        flags.append(("device", args.device))
    cfg = load_config(args.config, [*flags, *args.set])
    if cfg.out is None:
        cfg = load_config(args.config, [("out", default_out), *flags, *args.set])
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run ``s2dnas run`` (under torchrun: on every rank; see :mod:`s2dnas.runner`)."""
    from s2dnas.runner import run_pipeline

    def prepare() -> tuple[RunConfig, Path]:
        cfg = load_run_config(args)
        return cfg, prepare_out_dir(cfg.out, resume=args.resume, force=args.force, marker="config.yaml",
                                    dataset=cfg.data.dataset)

    # Under torchrun rank 0 reads the config and checks the run directory (another rank could
    # otherwise see the config.yaml rank 0 has just written); the others get both, or its error.
    cfg, out = distributed.run_on_main(prepare)
    args.resume_hint = f"s2dnas run {'--config ' + args.config + ' ' if args.config else ''}--out {out} --resume"
    results = run_pipeline(cfg, out=out, resume=args.resume, progress=not args.no_progress)
    if not distributed.is_main():
        return 0
    test = results["test"]
    print(f"test accuracy {100 * test['accuracy']:.2f}% (base {100 * results['base']['test_accuracy']:.2f}%) at "
          f"{100 * test['macs_ratio']:.1f}% of the base MACs; report: {out / 'report.md'}")
    return 0
