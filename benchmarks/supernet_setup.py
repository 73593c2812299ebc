"""What the super-network evidence scripts share: a trained super-network loaded at a run's target.

``benchmarks/supernet_ranking.py`` and ``benchmarks/search_seeds.py`` score architectures exactly
as ``s2dnas run`` (strategy ``oneshot``) does: the config (defaults, ``--config`` file, ``--set``
overrides), the base model and its train/val cut, the space, the super-network of
``--supernet DIR`` (``s2dnas supernet --out DIR``), the target (base val accuracy minus
``calibration.tolerance``, or the config's budget) and a :class:`SupernetEvaluator` with the
run's options (``search.bn_batches``, ``search.reward``, ``calibration.confidence``, ...).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from s2dnas._device import resolve_device
from s2dnas._io import atomic_write_json
from s2dnas.config import CalibrationTarget, RunConfig, config_to_dict, load_config, resolve_target
from s2dnas.data import DataSplits, make_loader
from s2dnas.errors import ConfigError, RunDirError
from s2dnas.runner import load_run_base, stage_cost_hook
from s2dnas.search.evaluator import SupernetEvaluator
from s2dnas.train.loops import evaluate
from s2dnas.train.supernet import SuperNet
from s2dnas.train.supernet_training import load_supernet

__all__ = ["SupernetSetup", "load_setup", "add_setup_arguments", "setup_from_args", "check_identity", "summary_stats"]


@dataclass(frozen=True)
class SupernetSetup:
    """A trained super-network, its base model and data, and the run's target."""

    cfg: RunConfig
    splits: DataSplits
    base: nn.Module
    supernet: SuperNet
    supernet_meta: dict[str, Any]
    base_val_accuracy: float
    target: CalibrationTarget
    device: torch.device

    def evaluator(self) -> SupernetEvaluator:
        """The evaluator of ``s2dnas run``'s oneshot search, with the config's options."""
        cfg = self.cfg
        if cfg.calibration.cost != "macs":
            raise ConfigError("The super-network evidence scripts score by MACs; set calibration.cost=macs")
        return SupernetEvaluator(self.supernet, self.splits, bn_batches=cfg.search.bn_batches,
                                 batch_size=cfg.data.batch_size, target=self.target,
                                 confidence=cfg.calibration.confidence, reward=cfg.search.reward, device=self.device,
                                 eval_batch_size=cfg.data.eval_batch_size, tradeoff_weight=cfg.search.tradeoff_weight,
                                 stage_cost=stage_cost_hook(cfg.calibration, self.device))

    def identity(self) -> dict[str, Any]:
        """What every cached score depends on (a rerun with anything else is refused)."""
        cfg = self.cfg
        return {"supernet_config_hash": self.supernet_meta.get("config_hash"),
                "space": self.supernet.space_options(), "target": self.target.to_dict(),
                "search": {k: config_to_dict(cfg.search)[k] for k in ("bn_batches", "reward", "tradeoff_weight")},
                "confidence": cfg.calibration.confidence, "data": self.splits.data_spec(),
                # the evaluator re-estimates batch norms on batches of this size before each score
                "batch_size": cfg.data.batch_size}


def load_setup(*, cfg: RunConfig, supernet_dir: str | Path, device: torch.device | None = None) -> SupernetSetup:
    """Load the base model, the data, the space and the super-network of ``supernet_dir`` for ``cfg``.

    Raises:
        CheckpointError: the super-network is missing, unfinished, of another space or data split.
    """
    device = device or resolve_device(cfg.device)
    loaded = load_run_base(cfg, device)
    splits, base, space = loaded.splits, loaded.model, loaded.space
    supernet = SuperNet(space)
    meta = load_supernet(supernet, supernet_dir, data=splits.data_spec())
    supernet.to(device).eval()
    base_val = evaluate(base, make_loader(splits.val, batch_size=cfg.data.eval_batch_size), device=device).accuracy
    target = resolve_target(cfg.calibration, base_val_accuracy=base_val, base_macs=space.base_macs())
    return SupernetSetup(cfg=cfg, splits=splits, base=base, supernet=supernet, supernet_meta=meta,
                         base_val_accuracy=base_val, target=target, device=device)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """``--supernet``, ``--config``, ``--set`` and ``--threads``."""
    parser.add_argument("--supernet", required=True, help="directory of `s2dnas supernet --out DIR`")
    parser.add_argument("--config", default=None, help="the config the super-network was trained with (YAML)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="config overrides, as `s2dnas run --set`")
    parser.add_argument("--threads", type=int, default=2)


def setup_from_args(args: argparse.Namespace) -> SupernetSetup:
    """:func:`load_setup` from :func:`add_setup_arguments`' options."""
    torch.set_num_threads(args.threads)
    return load_setup(cfg=load_config(args.config, overrides=list(args.set)), supernet_dir=args.supernet)


def check_identity(path: Path, identity: dict[str, Any]) -> str:
    """Write ``identity`` to ``path`` on the first call; later, refuse another one. Returns its hash.

    Raises:
        RunDirError: ``path`` holds another identity (cached results of another super-network,
            target or option).
    """
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("hash") != digest:
            changed = sorted(k for k in set(saved.get("identity", {})) | set(identity)
                             if saved.get("identity", {}).get(k) != identity.get(k))
            raise RunDirError(f"{path.parent} holds results of another setup (changed: {', '.join(changed)}); "
                              "use another --dir, or delete it to start over")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"hash": digest, "identity": identity})
    return digest


def summary_stats(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation, min and max (``std`` 0 for one value)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    std = float(t.std(unbiased=True)) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": float(t.mean()), "std": std, "min": float(t.min()), "max": float(t.max())}
