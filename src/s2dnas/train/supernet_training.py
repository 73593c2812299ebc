"""Training a :class:`SuperNet` once, with the sandwich rule (BigNAS, slimmable networks).

Every step, on one batch:

1. the frozen base model's logits are computed once (the distillation teacher);
2. each architecture of :func:`~s2dnas.train.sandwich.sandwich` (most expensive, cheapest, ``N``
   sampled) runs as views of the shared weights; its loss is :class:`MultiStageLoss` (per-stage
   cross-entropy + distillation from the base) plus, with ``inplace_distill > 0``, distillation
   from the most expensive architecture's last-stage logits (detached; BigNAS in-place
   distillation); each loss is back-propagated at once, so gradients add up over the sandwich
   and only one architecture's graph is alive at a time (:func:`~s2dnas.train.loops.optimizer_step`,
   the step of every training loop, with its NaN guard before the update);
3. one SGD step, at a learning rate that is a pure function of the step (linear warm-up, cosine).

After every epoch one safetensors file (weights, optimiser state, and the JSON metadata inside
it) is written atomically, so a checkpoint is never half old, half new; the shippable weights
(``supernet.safetensors`` + ``supernet.json``) are written beside it. Shuffling, augmentation and
the sampled architectures depend only on ``(seed, epoch)``: a resumed run ends bit-for-bit where
an uninterrupted one does. A checkpoint made under another configuration (hash of the config, the
space and the code version) is refused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.nn import functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from s2dnas._device import machine_info
from s2dnas._io import atomic_write_bytes
from s2dnas._version import __version__
from s2dnas.config import DataConfig, SupernetConfig, config_to_dict, validate_config
from s2dnas.data import make_loader
from s2dnas.errors import CheckpointError, ConfigError, RunDirError
from s2dnas.space import Architecture, MultiStageNet
from s2dnas.train.checkpoint import weights_digest
from s2dnas.train.loops import cosine_lr, make_sgd, optimizer_step, seed_everything, to_device
from s2dnas.train.multistage import MultiStageLoss
from s2dnas.train.sandwich import cheapest, most_expensive, sandwich
from s2dnas.train.supernet import SuperNet

__all__ = ["SupernetConfig", "SupernetTrainer", "train_supernet", "load_supernet", "config_hash", "CHECKPOINT_NAME",
           "WEIGHTS_NAME", "BASE_DIGEST_KEY"]

_logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "supernet_checkpoint.safetensors"
WEIGHTS_NAME = "supernet.safetensors"
_KIND = "s2dnas.supernet-training/1"
#: the metadata key of the base's (the teacher's) :func:`~s2dnas.train.checkpoint.weights_digest`
BASE_DIGEST_KEY = "base_weights_digest"


def config_hash(config: SupernetConfig, supernet: SuperNet, context: Mapping[str, Any] | None = None) -> str:
    """sha256 (16 hex digits) of the recipe, the space's options, ``context`` and the code version."""
    payload = {"config": config_to_dict(config), "space": supernet.space_options(), "context": dict(context or {}),
               "version": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _kd(logits: list[torch.Tensor], teacher: torch.Tensor, *, weights: list[float], temperature: float
        ) -> torch.Tensor:
    """``sum_s w_s T^2 KL(softmax(teacher/T) || softmax(z_s/T))`` (the teacher is detached)."""
    t = temperature
    log_p = F.log_softmax(teacher.detach().float() / t, dim=1)
    total = logits[0].new_zeros(())
    for w, z in zip(weights, logits):
        if w:
            total = total + w * t * t * F.kl_div(F.log_softmax(z / t, dim=1), log_p, reduction="batchmean",
                                                 log_target=True)
    return total


class SupernetTrainer:
    """One sandwich step at a time over a :class:`SuperNet` (the loop is :func:`train_supernet`).

    The two extreme architectures are built once and kept; sampled ones are built per step.

    Args:
        supernet: trained in place.
        config: the recipe.
    """

    def __init__(self, supernet: SuperNet, *, config: SupernetConfig) -> None:
        validate_config(config)
        self.supernet = supernet
        self.config = config
        space = supernet.space
        self.criterion = MultiStageLoss(space.num_stages, stage_weights=config.stage_weights,
                                        distill_weight=config.distill_weight, temperature=config.temperature)
        self.optimizer = make_sgd(supernet.parameters(), lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
        self._extremes = {a: supernet.materialize(a) for a in (most_expensive(space), cheapest(space))}

    def view(self, arch: Architecture) -> MultiStageNet:
        """``arch`` as views of the shared weights (the extremes come from the cache)."""
        cached = self._extremes.get(arch)
        return cached if cached is not None else self.supernet.materialize(arch)

    def step(self, x: torch.Tensor, y: torch.Tensor, *, archs: list[Architecture], lr: float) -> tuple[float, int]:
        """Train ``archs`` (the first one is the in-place teacher) on one batch, then one SGD step.

        Returns:
            The summed loss over ``archs`` and the number of sub-network forward/backward passes.
        """
        cfg = self.config
        teacher = self.supernet.teacher
        with torch.no_grad():
            was = teacher.training
            teacher.eval()
            teacher_logits = teacher(x) if cfg.distill_weight > 0 else None
            teacher.train(was)

        def losses() -> Iterator[tuple[torch.Tensor, str]]:  # lazily: each is back-propagated before the next
            largest = None
            for k, arch in enumerate(archs):
                logits = self.view(arch)(x)
                loss = self.criterion(logits, y, teacher_logits)
                if k == 0:
                    largest = logits[-1].detach()
                elif cfg.inplace_distill > 0:
                    loss = loss + cfg.inplace_distill * _kd(logits, largest, weights=self.criterion.stage_weights,
                                                            temperature=cfg.temperature)
                yield loss, f"super-network, architecture {k + 1} of the step"

        total = float(optimizer_step(self.optimizer, lr=lr, losses=losses()))
        return total, len(archs)

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """One atomic safetensors file: weights, optimiser tensors, and ``meta`` + param groups as JSON."""
        opt = self.optimizer.state_dict()
        tensors = {f"weights/{k}": v.detach().contiguous().cpu() for k, v in self.supernet.state_dict().items()}
        for idx, state in opt["state"].items():
            for name, value in state.items():
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"Optimizer state {name} is not a tensor")  # SGD keeps momentum buffers only
                tensors[f"optimizer/{idx}/{name}"] = value.detach().contiguous().cpu()
        meta = {**meta, "param_groups": opt["param_groups"]}
        atomic_write_bytes(path, save_safetensors(tensors, metadata={"s2dnas": json.dumps(meta)}))

    def load(self, path: Path) -> dict[str, Any]:
        """Restore weights and optimiser state from :meth:`save`'s file; returns its metadata."""
        meta = _read_meta(path)
        try:
            tensors = load_safetensors(path.read_bytes())
        except (OSError, SafetensorError, ValueError) as err:
            raise CheckpointError(f"Checkpoint {path} is truncated or not a super-network checkpoint "
                                  f"({type(err).__name__}); delete it to start over") from None
        weights = {k[len("weights/"):]: v for k, v in tensors.items() if k.startswith("weights/")}
        device = next(self.supernet.parameters()).device
        self.supernet.load_state_dict(weights)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, idx, name = key.split("/", 2)
                state.setdefault(int(idx), {})[name] = value.to(device)
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        return meta


def train_supernet(supernet: SuperNet, train_data: Dataset, *, config: SupernetConfig,
                   out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                   progress: bool = True, device: torch.device | str = "cpu",
                   stop_after_epochs: int | None = None, context: Mapping[str, Any] | None = None,
                   log_epochs: bool = False) -> dict[str, Any]:
    """Train ``supernet`` in place with the sandwich rule (module docstring); returns the history.

    Args:
        supernet: the super-network (its :attr:`~SuperNet.teacher` is the distillation target).
        train_data: the training split.
        config: the recipe (the config's ``supernet`` section; ``batch_size``/``seed`` None mean
            ``data.batch_size``'s default/0, resolved configs set them).
        out_dir: where the per-epoch checkpoint and the weights go (None: nowhere).
        resume: continue from ``out_dir``'s checkpoint.
        overwrite: start over although ``out_dir`` holds a checkpoint.
        progress: show a progress bar per epoch.
        device: where to train.
        stop_after_epochs: train at most this many epochs in this call (the schedule still spans
            ``config.epochs``; a resume continues).
        context: what else produced the weights (e.g. the data split and the base model), as
            plain data: recorded in the metadata and part of the config hash.
        log_epochs: print one line per finished epoch (for runs without progress bars).

    Returns:
        ``{"epochs", "steps", "history": [{"epoch", "lr", "loss", "seconds"}], "config_hash",
        "seconds", "train_seconds"}`` (``seconds``: this call; ``train_seconds``: every epoch so
        far, resumes included).

    Raises:
        ConfigError: ``resume`` without ``out_dir``.
        RunDirError: ``out_dir`` holds a checkpoint and neither ``resume`` nor ``overwrite``.
        CheckpointError: the checkpoint is corrupt or was made with another configuration.
        TrainingError: a loss became NaN or infinite (the last checkpoint is kept).
    """
    if resume and out_dir is None:
        raise ConfigError("Expected out_dir when resume=True (the checkpoint lives there), but got None")
    validate_config(config)
    batch_size = config.batch_size if config.batch_size is not None else DataConfig.batch_size
    seed = config.seed if config.seed is not None else 0
    device = torch.device(device)
    supernet.to(device).train()
    supernet.teacher.to(device)
    trainer = SupernetTrainer(supernet, config=config)
    digest = config_hash(config, supernet, context)
    base_digest = weights_digest(supernet.teacher)  # not in the hash: checkpoints made before it still resume
    ckpt = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if ckpt is not None and ckpt.exists() and not resume and not overwrite:
        raise RunDirError(f"{ckpt.parent} already holds a super-network checkpoint; resume it (--resume) or "
                          "start over (--force)")
    if resume:
        assert ckpt is not None, "checked above"
        if not ckpt.is_file():
            raise CheckpointError(f"Cannot resume: {ckpt} does not exist; train without --resume first")
        meta = _read_meta(ckpt)
        if meta.get("kind") != _KIND:
            raise CheckpointError(f"{ckpt} is not a super-network training checkpoint; use another directory")
        _check_base(meta, ckpt, base_digest=base_digest)
        if meta.get("config_hash") != digest:
            raise CheckpointError(
                f"{ckpt} was made with another configuration (hash {meta.get('config_hash')}, this run's is "
                f"{digest}); resume with the same options and code version, or start over in a new directory")
        meta = trainer.load(ckpt)
        start_epoch, history = int(meta["epoch"]), list(meta["history"])
    elif ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)

    n_train = min(len(train_data), config.limit_train or len(train_data))
    steps_per_epoch = -(-n_train // batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    end = config.epochs if stop_after_epochs is None else min(config.epochs, start_epoch + stop_after_epochs)
    t0 = time.time()
    for epoch in range(start_epoch, end):
        t_epoch = time.time()
        epoch_seed = seed * 1000 + epoch
        seed_everything(epoch_seed)  # augmentation and dropout
        loader = make_loader(train_data, batch_size=batch_size, shuffle=True, seed=epoch_seed,
                             limit=config.limit_train)
        sampler = torch.Generator().manual_seed(epoch_seed * 7919 + 1)  # the sampled architectures
        loss_sum, seen, lr = 0.0, 0, config.lr
        bar = tqdm(loader, desc=f"supernet epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for i, (x, y) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            lr = cosine_lr(step, total_steps=total_steps, warmup_steps=warmup, base_lr=config.lr)
            archs = sandwich(supernet.space, num_sampled=config.num_sampled, generator=sampler)
            x, y = to_device(x, device, channels_last=False), y.to(device)
            loss, _ = trainer.step(x, y, archs=archs, lr=lr)
            loss_sum += loss * y.numel()
            seen += y.numel()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{lr:.4f}")
        history.append({"epoch": epoch + 1, "lr": lr, "loss": loss_sum / max(seen, 1),
                        "seconds": time.time() - t_epoch})
        line = (f"supernet epoch {epoch + 1}/{config.epochs}: loss {history[-1]['loss']:.4f}, "
                f"lr {lr:.4f}, {history[-1]['seconds']:.0f} s")
        _logger.info("%s", line)
        if log_epochs:
            print(line, flush=True)
        if ckpt is not None:
            meta = {"kind": _KIND, "epoch": epoch + 1, "epochs": config.epochs,
                    "step": (epoch + 1) * steps_per_epoch, "config": config_to_dict(config), "config_hash": digest,
                    "context": dict(context or {}), BASE_DIGEST_KEY: base_digest, "history": history,
                    "train_seconds": sum(h["seconds"] for h in history), "machine": machine_info()}
            trainer.save(ckpt, meta)
            supernet.save(ckpt.parent / WEIGHTS_NAME, metadata={k: v for k, v in meta.items() if k != "kind"})
    return {"epochs": len(history), "steps": len(history) * steps_per_epoch, "history": history,
            "config_hash": digest, "seconds": time.time() - t0,
            "train_seconds": sum(h["seconds"] for h in history)}


_SPLIT_KEYS = ("dataset", "val_size", "data_seed")


def load_supernet(supernet: SuperNet, directory: str | Path, *, data: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Load the trained weights of ``directory`` (``s2dnas supernet --out DIR``) into ``supernet``.

    Args:
        supernet: a super-network over the same space.
        directory: holds ``supernet.safetensors`` + ``supernet.json``.
        data: this run's data spec (``DataSplits.data_spec()``); the super-network must have been
            trained on the same train/val cut (else it has seen this run's val images).

    The super-network must also have been trained from the weights of ``supernet``'s base (its
    teacher), checked where it recorded their digest (:data:`BASE_DIGEST_KEY`).

    Returns:
        The metadata (config, config hash, epochs, training time, machine).

    Raises:
        CheckpointError: missing or unfinished weights, another space or model, another data split,
            other base weights.
    """
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"search.supernet: {path} does not exist; train one with "
                              f"s2dnas supernet --config FILE --out {directory}, or set search.supernet to null")
    meta = supernet.load(path)
    if meta.get("epochs") is not None and meta.get("epoch") != meta.get("epochs"):
        raise CheckpointError(f"{path} holds a super-network trained {meta.get('epoch')} of {meta.get('epochs')} "
                              f"epochs; finish it with s2dnas supernet ... --out {directory} --resume")
    theirs = (meta.get("context") or {}).get("data")
    if data is not None and theirs is not None:
        mine = {k: data.get(k) for k in _SPLIT_KEYS}
        if {k: theirs.get(k) for k in _SPLIT_KEYS} != mine:
            raise CheckpointError(f"{path} was trained on another train/val split "
                                  f"({', '.join(f'{k}={theirs.get(k)}' for k in _SPLIT_KEYS)}; this run: "
                                  f"{', '.join(f'{k}={v}' for k, v in mine.items())}), so it has seen other "
                                  "images than this run's training split; use the data options it was trained with")
    _check_base(meta, path, base_digest=weights_digest(supernet.teacher))
    return meta


def _check_base(meta: Mapping[str, Any], path: Path, *, base_digest: str) -> None:
    """Refuse weights or a checkpoint (``meta`` of ``path``) trained from another base than the one
    of ``base_digest`` (this run's teacher's); those made before the digest was recorded are not checked."""
    recorded = meta.get(BASE_DIGEST_KEY)
    if recorded is not None and recorded != base_digest:
        weights = ((meta.get("context") or {}).get("model") or {}).get("weights")
        raise CheckpointError(
            f"{path} was trained from other base weights than this run's ({weights or 'the shipped ones'}, digest "
            f"{recorded}; this run's base: digest {base_digest}), so it ranks architectures for that base; use the "
            f"base it was trained from (model.weights: {weights or 'null'}), or train one for this base in a new "
            "directory (s2dnas supernet --out NEW_DIR)")


def _read_meta(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads((handle.metadata() or {})["s2dnas"])
    except (OSError, SafetensorError, ValueError, KeyError) as err:
        raise CheckpointError(f"Checkpoint {path} is truncated or not a super-network checkpoint "
                              f"({type(err).__name__}); delete it to start over") from None
