"""Entry point of the ``s2dnas`` command: one thin subcommand per module in this package."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from typing import Iterator, Sequence

from s2dnas import distributed
from s2dnas.errors import ConfigError, S2DNASError

__all__ = ["main", "build_parser", "COMMANDS", "DISTRIBUTED_COMMANDS"]

# Subcommand name -> module in s2dnas.cli exposing `add_parser(subparsers)` and `run(args) -> int`.
COMMANDS: dict[str, str] = {
    "run": "s2dnas.cli.run",
    "bench": "s2dnas.cli.bench",
    "profile": "s2dnas.cli.profile",
    "train-base": "s2dnas.cli.train_base",
    "space": "s2dnas.cli.space",
    "train": "s2dnas.cli.train",
    "supernet": "s2dnas.cli.supernet",
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


#: Subcommands that run on several processes under torchrun (see s2dnas.distributed).
DISTRIBUTED_COMMANDS = ("train-base", "train", "run")

#: Collective timeout (minutes) of the commands in which ranks wait for long: in ``run`` the
#: others wait while rank 0 trains the super-network, and
#: every rank waits for the slowest candidate of a round. $S2DNAS_DIST_TIMEOUT_MINUTES overrides.
_TIMEOUT_MINUTES = {"run": 24 * 60.0}


@contextlib.contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """Send stdout and stderr to /dev/null when ``quiet`` (the ranks other than 0 under torchrun)."""
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE") or 1)
    except ValueError:
        return 1  # reported by init_distributed if a distributed command runs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line and return exit code 2.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the commands in :data:`DISTRIBUTED_COMMANDS` join the
    process group before they start and leave it at exit; only rank 0 prints (results, progress,
    warnings), and a user error on any rank is printed once, by the first rank that hits it, or
    by rank 0 when rank 0 raised it and handed it to the others (every rank exits with its code).
    """
    world_size = _world_size()
    quiet = world_size > 1 and os.environ.get("RANK", "0") != "0"
    parser = build_parser()
    with _silenced(quiet):  # a usage error or --help shows once, not once per rank
        args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.INFO if args.verbose or args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    started = False
    try:
        if world_size > 1:
            if args.command not in DISTRIBUTED_COMMANDS:
                raise ConfigError(f"s2dnas {args.command} runs in one process; launch it without torchrun "
                                  f"(commands that run on several: {', '.join(DISTRIBUTED_COMMANDS)})")
            distributed.init_distributed(timeout_minutes=_TIMEOUT_MINUTES.get(args.command, 30.0))
            started = True
        with _silenced(quiet):  # results, warnings and bars from rank 0 only (tracebacks still show)
            code = int(args.func(args) or 0)
        if started:
            distributed.barrier()  # no rank leaves the group while another still needs it
        return code
    except S2DNASError as err:
        if args.debug:
            raise
        # rank 0 reports its own errors, also those it handed to the others; otherwise the first rank
        if (not distributed.from_main(err) and distributed.claim_report()) if started else not quiet:
            print(f"s2dnas: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        hint = getattr(args, "resume_hint", None)
        if not quiet:
            print("s2dnas: interrupted" + (f"; resume with: {hint}" if hint else ""), file=sys.stderr)
        return 130
    finally:
        if started:
            distributed.cleanup()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
