"""Multi-stage training (METHOD.md "Final training"): per-stage cross-entropy + distillation.

The same loop serves the final training of the chosen architecture (epochs, checkpoints, resume,
progress bars) and the brief training of search candidates (one epoch on a subset, no files, no
bars): everything that costs time per call is optional.

Example:
    >>> import torch
    >>> loss = MultiStageLoss(2, stage_weights=[1.0, 2.0], distill_weight=0.0)
    >>> logits = [torch.zeros(4, 3), torch.zeros(4, 3)]
    >>> round(float(loss(logits, torch.tensor([0, 1, 2, 0]))), 4)  # (1 + 2) * ln 3
    3.2958
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypedDict

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from s2dnas import distributed as dist
from s2dnas.config import DataConfig, TrainConfig, config_to_dict, validate_config
from s2dnas.data import DataSplits, make_loader
from s2dnas.errors import CheckpointError, ConfigError, TrainingError
from s2dnas.space import Architecture, MultiStageNet, Space
from s2dnas.train.checkpoint import (
    check_model_identity,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from s2dnas.train.loops import (check_finite_weights, cosine_lr, history_seconds, make_sgd, seed_everything, to_device,
                                train_step)

__all__ = [
    "MultiStageLoss",
    "MultiStageMetrics",
    "CHECKPOINT_NAME",
    "train_multistage",
    "evaluate_stages",
    "save_multistage",
    "load_multistage",
]

_logger = logging.getLogger(__name__)

#: File name of the per-epoch training checkpoint inside ``out_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
_KIND = "s2dnas.multistage-training/1"


class MultiStageLoss(nn.Module):
    """Weighted per-stage cross-entropy plus distillation from the base model's logits.

    ``loss = sum_s w_s * CE(z_s, y) + alpha * sum_s w_s * T^2 * KL(softmax(t / T) || softmax(z_s / T))``
    where ``z_s`` are stage ``s``'s logits and ``t`` the teacher's (Hinton et al.'s T^2 keeps the
    gradient scale of the soft terms independent of T). With ``alpha = 0`` or no teacher logits
    the distillation terms are skipped.

    Args:
        num_stages: S.
        stage_weights: w_s, one number >= 0 per stage (None = all 1.0).
        distill_weight: alpha.
        temperature: T > 0.

    Raises:
        ConfigError: wrong number of weights, negative weights, or T <= 0.
    """

    def __init__(self, num_stages: int, *, stage_weights: Sequence[float] | None = None,
                 distill_weight: float = 1.0, temperature: float = 4.0) -> None:
        super().__init__()
        weights = [1.0] * num_stages if stage_weights is None else [float(w) for w in stage_weights]
        problems = []
        if len(weights) != num_stages:
            problems.append(f"Expected one stage weight per stage ({num_stages}), but got {len(weights)}: {weights}")
        if weights and (min(weights) < 0 or sum(weights) <= 0):
            problems.append(f"Expected stage weights >= 0 with a positive sum, but got {weights}")
        if distill_weight < 0:
            problems.append(f"Expected distill_weight >= 0, but got {distill_weight}")
        if temperature <= 0:
            problems.append(f"Expected temperature > 0, but got {temperature}")
        if problems:
            raise ConfigError("; ".join(problems))
        self.num_stages = num_stages
        self.stage_weights = weights
        self.distill_weight = float(distill_weight)
        self.temperature = float(temperature)

    def forward(self, logits: Sequence[torch.Tensor], target: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Return the scalar loss.

        Args:
            logits: S tensors ``(B, K)``, one per stage.
            target: class indices ``(B,)``.
            teacher_logits: the base model's logits ``(B, K)`` (no gradient flows into them).
        """
        if len(logits) != self.num_stages:
            raise ConfigError(f"Expected {self.num_stages} stage logits, but got {len(logits)}")
        distill = teacher_logits is not None and self.distill_weight > 0
        if distill:
            t = self.temperature
            log_p_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
        total = logits[0].new_zeros(())
        for w, z in zip(self.stage_weights, logits):
            if w == 0:
                continue
            term = F.cross_entropy(z, target)
            if distill:
                kl = F.kl_div(F.log_softmax(z / t, dim=1), log_p_teacher, reduction="batchmean", log_target=True)
                term = term + self.distill_weight * t * t * kl
            total = total + w * term
        return total


class MultiStageMetrics(TypedDict):
    """What :func:`train_multistage` returns."""

    epochs: int  # epochs completed so far (across resumes)
    # per epoch: epoch, lr, train_loss, train_accuracy[S], val_accuracy[S], seconds (and, with a
    # CachedTeacher, teacher_seconds_read_back)
    history: list[dict[str, Any]]
    val_accuracy: list[float] | None  # per stage after the last epoch (None when not evaluated)
    seconds: float  # wall time of this call
    train_seconds: float | None  # the epochs' seconds across resumes (None: an epoch from before they were kept)


@torch.no_grad()
def evaluate_stages(msnet: nn.Module, loader: DataLoader, *, device: torch.device | str,
                    channels_last: bool = False) -> list[float]:
    """Top-1 accuracy (0..1) of every stage over ``loader``, in one pass (eval mode).

    Raises:
        TrainingError: the loader is empty.
    """
    was_training = msnet.training
    msnet.eval()
    correct: list[int] = []
    total = 0
    try:
        for x, y in loader:
            x, y = to_device(x, torch.device(device), channels_last=channels_last), y.to(device)
            outs = msnet(x)
            if not correct:
                correct = [0] * len(outs)
            for s, z in enumerate(outs):
                correct[s] += int((z.argmax(1) == y).sum())
            total += y.numel()
    finally:
        msnet.train(was_training)
    if total == 0:
        raise TrainingError("Cannot evaluate on an empty split")
    return [c / total for c in correct]


def _teacher_for(msnet: nn.Module, teacher: nn.Module | None, config: TrainConfig) -> nn.Module | None:
    """The module whose logits are distilled, or None; never one that training would modify."""
    if teacher is None or config.distill_weight == 0:
        return None
    own = {p.data_ptr() for p in msnet.parameters()}
    if any(p.data_ptr() in own for p in teacher.parameters()):
        # Design choice: a one-shot super-network (Space.build(share_weights=True)) trains the base
        # weights themselves; distil from a frozen copy so the target does not drift.
        teacher = copy.deepcopy(teacher)
    return teacher


def train_multistage(msnet: MultiStageNet, splits: DataSplits, *, config: TrainConfig,
                     teacher: nn.Module | None, device: torch.device | str = "cpu",
                     out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
                     evaluate_val: bool = True, eval_batch_size: int = DataConfig.eval_batch_size,
                     stop_after_epochs: int | None = None, distributed: bool = False,
                     provenance: Mapping[str, str] | None = None) -> MultiStageMetrics:
    """Train ``msnet`` on ``splits.train`` with :class:`MultiStageLoss`, distilling from ``teacher``.

    Each epoch's shuffling and augmentation depend only on ``(seed, epoch)`` and the learning rate
    is a pure function of the step, so a run resumed from its checkpoint ends with exactly the
    state of an uninterrupted one.

    Args:
        msnet: the multi-stage network (weights inherited from the base); trained in place.
        splits: the data; ``train`` is trained on, ``val`` gives per-stage accuracy each epoch.
        config: the recipe. ``batch_size``/``seed`` None mean 128/0 (resolved configs set them).
        teacher: the base model; run in eval mode under ``no_grad`` and never modified (None or
            ``config.distill_weight == 0``: no distillation).
        device: where to train (``msnet`` and ``teacher`` are moved there).
        out_dir: when given, ``out_dir/checkpoint.pt`` is written atomically after every epoch
            (weights-only loadable: state dict, optimizer, epoch, history, config, architecture).
        resume: continue from ``out_dir/checkpoint.pt``.
        progress: show a tqdm bar per epoch (loss, per-stage train accuracy) and a line per epoch.
        evaluate_val: measure per-stage val accuracy after every epoch (off for search candidates
            that are scored by calibration anyway).
        eval_batch_size: batch size of the val passes.
        stop_after_epochs: train at most this many epochs in this call (the schedule still spans
            ``config.epochs``; resume continues).
        distributed: inside a torchrun job, train ``msnet`` with ``DistributedDataParallel`` over
            every rank (``batch_size`` is the global batch; metrics and val passes are reduced;
            only rank 0 shows progress, logs and writes the checkpoint; every rank loads it on
            resume). Off by default: a search candidate is trained by one rank on its own.
        provenance: stored in the checkpoint (:func:`s2dnas.config.provenance`: config hash and
            s2dnas version); a resume from a checkpoint of another ``config_hash`` is refused.

    Returns:
        :class:`MultiStageMetrics`.

    Raises:
        ConfigError: invalid ``config``, stage weights for another S, or ``resume`` without ``out_dir``.
        CheckpointError: the checkpoint is missing, corrupt, for another architecture or another
            configuration.
        TrainingError: the loss became NaN or infinite (the last checkpoint is left as it was).
    """
    validate_config(config)
    ddp = distributed and dist.is_distributed()
    main = not ddp or dist.is_main()
    if resume and out_dir is None:
        raise ConfigError("Expected out_dir when resume=True (the checkpoint lives there), but got None")
    run = _Run(config=config, device=torch.device(device), ddp=ddp, main=main, progress=progress and main,
               batch_size=config.batch_size if config.batch_size is not None else DataConfig.batch_size,
               seed=config.seed if config.seed is not None else 0, provenance=dict(provenance or {}))
    criterion = MultiStageLoss(msnet.num_stages, stage_weights=config.stage_weights,
                               distill_weight=config.distill_weight, temperature=config.temperature)
    teacher = _teacher_for(msnet, teacher, config)
    msnet.to(run.device)
    if config.channels_last:
        msnet.to(memory_format=torch.channels_last)
    teacher_was_training = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.to(run.device).eval()
    optimizer = _optimizer(msnet, config)
    arch = msnet.architecture.to_dict() if hasattr(msnet.architecture, "to_dict") else None
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume:
        assert ckpt_path is not None, "checked above"
        start_epoch, history = _restore(ckpt_path, msnet, optimizer, arch=arch, run=run)
    elif ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    # A stage of weight 0 contributes no loss, so its exit head gets no gradient; DDP must be told.
    net = dist.wrap_ddp(msnet, run.device, find_unused_parameters=0 in criterion.stage_weights) if ddp else msnet
    num_train = min(len(splits.train), config.limit_train or len(splits.train))
    run.steps_per_epoch = -(-num_train // run.batch_size)
    end_epoch = config.epochs if stop_after_epochs is None else min(config.epochs, start_epoch + stop_after_epochs)
    val_loader = make_loader(splits.val, batch_size=eval_batch_size) if evaluate_val else None
    t_start = time.time()
    try:
        for epoch in range(start_epoch, end_epoch):
            # 1. one pass over the (limited) training set; 2. per-stage val accuracy; 3. checkpoint
            t_epoch = time.time()
            entry = _train_epoch(net, msnet, _epoch_loader(splits, run, epoch), epoch=epoch, run=run,
                                 optimizer=optimizer, criterion=criterion, teacher=teacher)
            if val_loader is not None and ddp:
                entry["val_accuracy"] = _evaluate_stages_sharded(msnet, splits.val, batch_size=eval_batch_size,
                                                                 device=run.device, channels_last=config.channels_last)
            elif val_loader is not None:
                entry["val_accuracy"] = evaluate_stages(msnet, val_loader, device=run.device,
                                                        channels_last=config.channels_last)
            # rank 0's clock on every rank: the ranks keep one history (the checkpoint holds rank 0's);
            # the checkpoint's own writing is not in it
            entry["seconds"] = dist.broadcast_object(time.time() - t_epoch) if ddp else time.time() - t_epoch
            history.append(entry)
            _report_epoch(entry, run)
            if ckpt_path is not None:
                check_finite_weights(msnet, where=f"the end of epoch {epoch + 1}")  # never checkpoint NaN weights
            if ckpt_path is not None and main:  # the other ranks hold the same state
                save_checkpoint(ckpt_path, {
                    "kind": _KIND, "architecture": arch, "model": msnet.state_dict(),
                    "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "history": history,
                    "config": config_to_dict(config), **({"provenance": run.provenance} if run.provenance else {}),
                })
            if ddp:  # the others wait, so a resume on any rank finds the file
                dist.barrier()
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)
    val_acc = history[-1].get("val_accuracy") if history else None
    return MultiStageMetrics(epochs=len(history), history=history, val_accuracy=val_acc,
                             seconds=time.time() - t_start,
                             train_seconds=history_seconds(history))


@dataclass
class _Run:
    """What every part of one :func:`train_multistage` call needs (resolved once)."""

    config: TrainConfig
    device: torch.device
    ddp: bool
    main: bool
    progress: bool
    batch_size: int
    seed: int
    provenance: dict[str, str]
    steps_per_epoch: int = 0


def _optimizer(msnet: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    params = [p for p in msnet.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("Expected a network with trainable parameters, but it has none (a network built with "
                          "share_weights=True keeps them in the base model; build it with share_weights=False)")
    return make_sgd(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _restore(ckpt_path: Path, msnet: nn.Module, optimizer: torch.optim.Optimizer, *, arch: dict[str, Any] | None,
             run: _Run) -> tuple[int, list[dict[str, Any]]]:
    """Load the checkpoint into ``msnet`` and ``optimizer``; return the epochs done and the history."""
    state = load_checkpoint(ckpt_path, map_location=run.device)
    if state.get("kind") != _KIND:
        raise CheckpointError(f"{ckpt_path} is not a multi-stage training checkpoint; use another --out")
    if state.get("architecture") != arch:
        raise CheckpointError(f"{ckpt_path} was written for another architecture; resume with the same "
                              "--arch or start over with --force")
    theirs = (state.get("provenance") or {}).get("config_hash")
    mine = run.provenance.get("config_hash")
    if theirs is not None and mine is not None and theirs != mine:
        raise CheckpointError(f"{ckpt_path} was written by another configuration (config hash {theirs}, this run's "
                              f"{mine}); resume with the config that started it, or start over with --force")
    check_model_identity(state["model"], msnet, source=str(ckpt_path))
    msnet.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("config") != config_to_dict(run.config):
        _logger.warning("resuming with a training config that differs from the checkpoint's")
    return int(state["epoch"]), list(state["history"])


def _epoch_loader(splits: DataSplits, run: _Run, epoch: int) -> DataLoader:
    """This epoch's (this rank's) training batches; shuffling, augmentation and dropout depend only on (seed, epoch)."""
    config, seed = run.config, run.seed
    if run.ddp:  # DistributedSampler; batch_size is the global batch (see dist.train_loader)
        seed_everything(dist.rank_seed(seed * 1000 + epoch))
        return dist.train_loader(splits.train, batch_size=run.batch_size, seed=seed * 1000, epoch=epoch,
                                 limit=config.limit_train)
    seed_everything(seed * 1000 + epoch)
    return make_loader(splits.train, batch_size=run.batch_size, shuffle=True, seed=seed * 1000 + epoch,
                       limit=config.limit_train)


def _train_epoch(net: nn.Module, msnet: MultiStageNet, loader: DataLoader, *, epoch: int, run: _Run,
                 optimizer: torch.optim.Optimizer, criterion: MultiStageLoss,
                 teacher: nn.Module | None) -> dict[str, Any]:
    """One epoch of training steps; the history entry (loss and per-stage accuracy, over every rank)."""
    config = run.config
    total_steps = config.epochs * run.steps_per_epoch
    warmup_steps = int(config.warmup_epochs * run.steps_per_epoch)
    net.train()
    loss_sum, seen, lr = 0.0, 0, config.lr
    correct = [0] * msnet.num_stages
    read_back = getattr(teacher, "seconds_read_back", None)  # a CachedTeacher's, before this epoch
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not run.progress, leave=False)
    for i, (x, y) in enumerate(bar):
        lr = cosine_lr(epoch * run.steps_per_epoch + i, total_steps=total_steps, warmup_steps=warmup_steps,
                       base_lr=config.lr)
        x, y = to_device(x, run.device, channels_last=config.channels_last), y.to(run.device)
        teacher_logits = None
        if teacher is not None:  # eval mode, no graph
            with torch.no_grad():
                teacher_logits = teacher(x)
        loss, logits = train_step(net, x, y, optimizer=optimizer, lr=lr, where=f"epoch {epoch + 1}, step {i}",
                                  loss_fn=lambda z, t: criterion(z, t, teacher_logits))  # noqa: B023 - used at once
        loss_sum += loss.item() * y.numel()
        seen += y.numel()
        for s, z in enumerate(logits):
            correct[s] += int((z.detach().argmax(1) == y).sum())
        if run.progress:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc="/".join(f"{c / seen:.3f}" for c in correct))
    if run.ddp:
        dist.average_buffers(msnet)  # the ranks' batch-norm statistics differ after the last step
        total = dist.all_reduce_sum(torch.tensor([loss_sum, seen, *correct], dtype=torch.float64))
        loss_sum, seen, correct = float(total[0]), int(total[1]), [int(c) for c in total[2:]]
    entry = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(seen, 1),
             "train_accuracy": [c / max(seen, 1) for c in correct]}
    if read_back is not None:
        entry["teacher_seconds_read_back"] = getattr(teacher, "seconds_read_back") - read_back
    return entry


def _report_epoch(entry: dict[str, Any], run: _Run) -> None:
    """Log the epoch (rank 0) and print its line under the progress bars."""
    if run.main:
        _logger.info("epoch %d: train loss %.4f, val acc %s", entry["epoch"], entry["train_loss"],
                     entry.get("val_accuracy"))
    if run.progress:
        val = entry.get("val_accuracy")
        tqdm.write(f"epoch {entry['epoch']}/{run.config.epochs}: train loss {entry['train_loss']:.4f} | "
                   f"train acc {'/'.join(f'{a:.4f}' for a in entry['train_accuracy'])}"
                   + (f" | val acc {'/'.join(f'{a:.4f}' for a in val)}" if val else ""))


def _evaluate_stages_sharded(msnet: nn.Module, dataset: Any, *, batch_size: int, device: torch.device,
                             channels_last: bool) -> list[float]:
    """:func:`evaluate_stages` over ``dataset`` split across the ranks, counts summed (exact)."""
    num_stages = int(getattr(msnet, "num_stages"))

    def counts(part: Any) -> list[float]:
        acc = evaluate_stages(msnet, make_loader(part, batch_size=batch_size), device=device,
                              channels_last=channels_last)
        return [round(a * len(part)) for a in acc] + [len(part)]

    *correct, total = dist.evaluate_sharded(counts, dataset, num_stages + 1)
    if total == 0:
        raise TrainingError("Cannot evaluate on an empty split")
    return [c / total for c in correct]


def save_multistage(path: str | Path, msnet: MultiStageNet, *, metadata: dict[str, Any]) -> None:
    """Write ``msnet``'s weights as safetensors and ``metadata`` (+ its architecture) beside them.

    Args:
        path: the ``.safetensors`` file; the JSON goes to the same path with ``.json``.
        msnet: the trained network.
        metadata: JSON-serialisable facts to keep (accuracies, MACs, config).
    """
    arch = msnet.architecture.to_dict() if hasattr(msnet.architecture, "to_dict") else None
    save_weights(path, msnet.state_dict(), {**metadata, "architecture": arch,
                                            "input_shape": list(msnet.input_shape)})


def load_multistage(path: str | Path, space: Space) -> MultiStageNet:
    """Rebuild a network saved by :func:`save_multistage` over ``space`` and load its weights.

    Raises:
        CheckpointError: missing/corrupt files, no architecture in the metadata, or weights for
            another network.
        InvalidArchitectureError: the saved architecture does not belong to ``space``.
    """
    tensors, meta = load_weights(path)
    if not isinstance(meta.get("architecture"), dict):
        raise CheckpointError(f"{Path(path).with_suffix('.json')} has no `architecture`; expected the metadata "
                              "written by s2dnas train")
    arch = Architecture.from_dict(meta["architecture"])
    msnet = space.build(arch)
    check_model_identity(tensors, msnet, source=str(path))
    msnet.load_state_dict(tensors)
    return msnet
