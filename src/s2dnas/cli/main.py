"""Entry point of the ``s2dnas`` command: one thin subcommand per module in this package."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from s2dnas.errors import S2DNASError

__all__ = ["main", "build_parser", "COMMANDS"]

# Subcommand name -> module in s2dnas.cli exposing `add_parser(subparsers)` and `run(args) -> int`.
COMMANDS: dict[str, str] = {
    "run": "s2dnas.cli.run",
    "bench": "s2dnas.cli.bench",
    "train-base": "s2dnas.cli.train_base",
    "space": "s2dnas.cli.space",
    "train": "s2dnas.cli.train",
    "export": "s2dnas.cli.export",
    "evaluate": "s2dnas.cli.evaluate",
    "evaluate-base": "s2dnas.cli.evaluate_base",
    "demo": "s2dnas.cli.demo",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="s2dnas",
        description="Turn a trained static CNN into a multi-stage network for dynamic inference.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line and return exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except S2DNASError as err:
        if args.debug:
            raise
        print(f"s2dnas: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        hint = getattr(args, "resume_hint", None)
        print("s2dnas: interrupted" + (f"; resume with: {hint}" if hint else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
