"""Arguments and steps that several subcommands share (kept here so each command stays small)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from s2dnas.errors import RunDirError

__all__ = ["add_data_args", "add_device_arg", "prepare_out_dir"]


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--data-dir``, ``--val-size``, ``--data-seed``."""
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="fashion-mnist, cifar10, cifar100 or imagefolder:<root> (default: fashion-mnist)")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    parser.add_argument("--val-size", type=int, default=5000, help="images held out of train for validation")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the train/val cut")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """``--device`` (auto picks CUDA when present)."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def prepare_out_dir(path: str | os.PathLike, *, resume: bool, force: bool, marker: str) -> Path:
    """Create or check an output directory.

    An existing directory holding ``marker`` is only reused with ``resume`` (continue) or ``force``
    (start over; files are overwritten as the run goes, never deleted up front).

    Raises:
        RunDirError: exists without --resume/--force, nothing to resume, or not writable.
    """
    out = Path(path)
    exists = (out / marker).exists()
    if resume and not exists:
        raise RunDirError(f"Nothing to resume: {out / marker} does not exist; drop --resume to start a new run")
    if exists and not (resume or force):
        raise RunDirError(
            f"Output directory {out} already holds a run ({marker}); pass --resume to continue it "
            "or --force to start over"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".s2dnas-write-test-{os.getpid()}"  # one per process: torchrun ranks share OUT
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"Cannot write to output directory {out} ({err.strerror}); choose another --out") from None
    return out
