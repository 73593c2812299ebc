"""Arguments and steps that several subcommands share (kept here so each command stays small)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from s2dnas.data import AUGMENTATIONS, NORMALIZATIONS, ImageOptions
from s2dnas.data.preprocessing import parse_input_size
from s2dnas.errors import RunDirError

__all__ = ["add_config_args", "add_data_args", "add_device_arg", "add_set_arg", "check_model_dir", "image_options",
           "prepare_out_dir"]


def add_data_args(parser: argparse.ArgumentParser, *, preprocessing: bool = False, stored: bool = False) -> None:
    """``--dataset``, ``--data-dir``, ``--val-size``, ``--data-seed``; with ``preprocessing`` also
    ``--input-size``, ``--channels``, ``--augment``, ``--normalize``.

    ``stored``: the command reads a saved model, whose data set, val cut and preprocessing are the defaults.
    """
    source = "the model's" if stored else "fashion-mnist"
    parser.add_argument("--dataset", default=None,
                        help=f"fashion-mnist, cifar10, cifar100 or imagefolder:<root> (default: {source})")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    parser.add_argument("--val-size", type=int, default=None,
                        help=("images held out of train for validation (default: the model's)" if stored else
                              "images held out of train for validation (default: 10%% of train, at most 5000)"))
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the train/val cut (default: " + ("the model's)" if stored else "0)"))
    if preprocessing:
        parser.add_argument("--input-size", default=None, metavar="H[,W]",
                            help="resize images to this size (image folders; default: their native size, "
                                 "when all training images share one)")
        parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                            help="input channels (image folders; default: 1 when every image is grey, else 3)")
        parser.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                            help="train augmentation (default: crop for image folders, crop-flip for the "
                                 "built-in data sets; flip is wrong for digits and text)")
        parser.add_argument("--normalize", choices=NORMALIZATIONS, default=None,
                            help="per-channel mean/std of the training images (train, default) or ImageNet's")


def image_options(args: argparse.Namespace) -> ImageOptions:
    """The preprocessing choices of :func:`add_data_args` (``preprocessing=True``)."""
    size = getattr(args, "input_size", None)
    return ImageOptions(input_size=None if size is None else parse_input_size(size),
                        channels=getattr(args, "channels", None), augment=getattr(args, "augment", None),
                        normalize=getattr(args, "normalize", None))


def add_set_arg(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE ...`` into ``args.set``: the one definition for every command that has it.

    Several values may follow one ``--set`` and ``--set`` may be repeated; all values are kept in
    order (a later value of the same key wins).
    """
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set search.budget=40 train.lr=0.05 (repeatable)")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--set KEY=VALUE ...`` (shared by the commands that read a RunConfig)."""
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="YAML file of what differs from the defaults (sections data/model/space/train/...; the "
                             "defaults and their documentation: src/s2dnas/config/schema.py; the demo's file: "
                             "src/s2dnas/config/demo.yaml)")
    add_set_arg(parser)


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """``--device`` (auto picks CUDA when present)."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def check_model_dir(path: str | os.PathLike, *, command: str) -> Path:
    """``path`` when it can be a dynamic model directory; a run or train-base directory gets advice.

    Raises:
        RunDirError: ``path`` is a run directory (pass RUN/model) or a train-base directory.
    """
    root = Path(path)
    if not (root / "model.json").is_file() and (root / "model" / "model.json").is_file():
        raise RunDirError(f"{root} is a run directory, not a dynamic model; pass {root / 'model'} "
                          f"(s2dnas {command} {root / 'model'})")
    if (root / "model.safetensors").is_file():
        raise RunDirError(f"{root} holds a base model from s2dnas train-base, not a dynamic model; evaluate it with "
                          f"s2dnas evaluate-base --weights {root}, or pass the model directory of a run (RUN/model)")
    return root


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def prepare_out_dir(path: str | os.PathLike, *, resume: bool, force: bool, marker: str,
                    dataset: str | None = None) -> Path:
    """Create or check an output directory.

    An existing directory holding ``marker`` is only reused with ``resume`` (continue) or ``force``
    (start over; files are overwritten as the run goes, never deleted up front). With ``dataset``
    an image folder, an output inside that folder is refused before anything is written (its files
    would become images or classes of the data set).

    Raises:
        RunDirError: exists without --resume/--force, nothing to resume, not writable, or inside the data.
    """
    out = Path(path)
    if dataset is not None and dataset.startswith("imagefolder:"):
        data_root = Path(dataset.split(":", 1)[1]).expanduser().resolve()
        if _inside(out.expanduser().resolve(), data_root):
            raise RunDirError(f"Output directory {out} is inside the data folder {data_root}; its files would "
                              "become part of the data set; choose an --out outside it")
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
