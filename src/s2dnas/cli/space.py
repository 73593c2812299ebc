"""``s2dnas space``: describe the split/concat space of a model (decisions, size, default MACs).

Needs no trained weights: the structure and the MACs do not depend on them (the base model is
built with random weights; only the importance order of channels would change). The input shape
and class count come from the data set (an image folder's from its image headers).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from s2dnas.cli.common import add_config_args
from s2dnas.config import load_config
from s2dnas.cost import count_macs
from s2dnas.data import DATASET_SHAPES, ImageOptions, dataset_shape
from s2dnas.errors import ConfigError, RunDirError, S2DNASError
from s2dnas.space import Space
from s2dnas.space.factory import build_space
from s2dnas.zoo import create_model

__all__ = ["add_parser", "run", "describe_space"]

_FLAGS = {"model": "model.name", "stages": "space.num_stages", "ratio_grid": "space.ratio_grid",
          "groups": "space.groups", "importance": "space.importance", "dataset": "data.dataset"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``space``."""
    p = sub.add_parser(
        "space", help="describe the split/concat space of a model",
        description="Print the decisions of a model's space (splits per group, concat per stage), its size, "
                    "the number of groups, and the default architecture's MACs per stage. Needs no data.",
    )
    p.add_argument("--model", default=None, help="zoo name, torchvision:<name> or module:factory (default: resnet20)")
    p.add_argument("--stages", type=int, default=None, help="S, the number of stages (default: 3)")
    p.add_argument("--ratio-grid", type=int, default=None, help="q: splits are multiples of 1/q (default: 8)")
    p.add_argument("--groups", default=None, help="resolution or resolution:N (default: resolution)")
    p.add_argument("--importance", default=None, help="channel order before cutting: bn, l1 or none (default: bn)")
    p.add_argument("--dataset", default=None,
                   help=f"take the input shape and class count from a dataset: {', '.join(DATASET_SHAPES)} or "
                        "imagefolder:<root> (its native size, read from the image headers; default: fashion-mnist)")
    p.add_argument("--input-shape", default=None, metavar="C,H,W", help="input shape, e.g. 1,28,28 (overrides --dataset)")
    p.add_argument("--num-classes", type=int, default=None, help="class count (default: the dataset's, else 10)")
    p.add_argument("--arch-out", default=None, metavar="FILE", help="write the default architecture as JSON")
    add_config_args(p)
    p.set_defaults(func=run)


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"Expected --input-shape C,H,W of three positive integers (e.g. 1,28,28), but got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def describe_space(space: Space, *, base_macs: int) -> list[str]:
    """Lines describing ``space``: decisions, groups, size, and the default architecture's MACs."""
    lines = [f"decisions ({len(space.decisions)}):"]
    width = max(len(d.name) for d in space.decisions)
    for d in space.decisions:
        if d.name.startswith("split."):
            first, last = ("/".join(map(str, c)) for c in (d.choices[0], d.choices[-1]))
            detail = f"stage shares in 1/{space.ratio_grid}: {first} .. {last}"
        else:
            detail = (f"{', '.join(map(str, d.choices))} (group boundary from which stage {d.name[-1]} reads "
                      f"earlier stages; {space.num_groups} = never)")
        lines.append(f"  {d.name:<{width}}  {d.size:>3} choices  {detail}")
    lines.append(f"groups: {space.num_groups}")
    lines.append(f"space size: {space.size():,} distinct networks")
    arch = space.default_architecture()
    macs = space.build(arch).stage_macs()
    split = "/".join(map(str, arch.splits[0]))
    lines.append(f"base model: {base_macs:,} MACs")
    lines.append(f"default architecture (split {split} of {space.ratio_grid} in every group, concat {list(arch.concat)}):")
    digits = len(f"{max(sum(macs), 1):,}")
    for s, m in enumerate(macs):
        lines.append(f"  stage {s + 1}: {m:>{digits},} MACs  {100 * m / base_macs:5.1f}% of base")
    lines.append(f"  all stages: {sum(macs):,} MACs  {100 * sum(macs) / base_macs:.1f}% of base")
    return lines


def run(args: argparse.Namespace) -> int:
    """Run ``s2dnas space``."""
    flags = [(key, getattr(args, dest)) for dest, key in _FLAGS.items() if getattr(args, dest) is not None]
    cfg = load_config(args.config, [*flags, *args.set])
    dataset = cfg.data.dataset
    if args.input_shape is not None:
        shape = _parse_shape(args.input_shape)
    elif cfg.model.input_shape is not None:
        shape = tuple(cfg.model.input_shape)
    else:
        shape = None
    if shape is None or args.num_classes is None:
        # a given shape is the size an image folder's images would be resized to (mixed sizes are fine then):
        # its class count is still the folder's; only a data set that cannot be read at all falls back to 10
        options = None if shape is None else ImageOptions(input_size=shape[1:])
        try:
            known_shape, known_classes = dataset_shape(dataset, options=options, size_flag="--input-shape C,H,W")
        except S2DNASError:
            if shape is None:
                raise
            known_shape, known_classes = shape, 10
        shape = shape or known_shape
    num_classes = args.num_classes if args.num_classes is not None else known_classes
    if num_classes < 1:
        raise ConfigError(f"Expected --num-classes >= 1, but got {num_classes}")
    model = create_model(cfg.model.name, num_classes=num_classes, in_channels=shape[0]).eval()
    space = build_space(model, config=cfg.space, input_shape=shape, model_name=cfg.model.name)
    with torch.no_grad():
        base_macs = count_macs(model, torch.zeros(1, *shape))
    print(f"model: {cfg.model.name} | input {'x'.join(map(str, shape))} | {num_classes} classes | "
          f"S={space.num_stages} stages | ratio grid q={space.ratio_grid} | groups: {space.groups}")
    for line in describe_space(space, base_macs=base_macs):
        print(line)
    if args.arch_out is not None:
        path = Path(args.arch_out)
        try:
            space.default_architecture().save(path)
        except OSError as err:
            raise RunDirError(f"Cannot write {path} ({err.strerror}); choose another --arch-out") from None
        print(f"wrote the default architecture to {path}")
    return 0
