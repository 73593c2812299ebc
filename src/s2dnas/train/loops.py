"""Pieces shared by every training loop: schedule, evaluation, the NaN guard, epoch seeding."""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from s2dnas.errors import TrainingError

__all__ = ["EvalResult", "make_sgd", "cosine_lr", "evaluate", "check_finite", "check_finite_weights", "history_seconds",
           "read_back_seconds", "seed_everything", "to_device", "optimizer_step", "train_step", "reestimate_batch_norm",
           "reestimate_batch_norm_seeded"]


@dataclass(frozen=True)
class EvalResult:
    """Accuracy (0..1), mean cross-entropy and number of examples of one evaluation."""

    accuracy: float
    loss: float
    num_examples: int


def make_sgd(params: Iterable[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
             ) -> torch.optim.SGD:
    """SGD (Nesterov when momentum > 0) with weight decay on weights only, not on BN or biases."""
    params = list(params)
    return torch.optim.SGD([{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=momentum > 0)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (called at each epoch start so resumed runs replay exactly)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def cosine_lr(step: int, *, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up then cosine decay to zero; a pure function of the step (resumable)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def to_device(x: torch.Tensor, device: torch.device, *, channels_last: bool) -> torch.Tensor:
    """Move an image batch to ``device``, in channels-last layout when asked."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def check_finite(loss: torch.Tensor, *, where: str) -> None:
    """Raise :class:`TrainingError` when the loss is NaN or infinite."""
    if not torch.isfinite(loss):
        raise TrainingError(
            f"Loss became {loss.item()} at {where}; training stopped and the last good checkpoint is kept "
            "(that of the last completed epoch, if any). Expected a finite loss: lower the learning rate (--lr), "
            "then resume with --resume (or start over with --force)"
        )


def optimizer_step(optimizer: torch.optim.Optimizer, *, lr: float,
                   losses: Iterable[tuple[torch.Tensor, str]]) -> torch.Tensor:
    """The one optimiser step of every training loop (base, multi-stage, super-network).

    Sets the learning rate, clears the gradients, then for each ``(loss, where)`` of ``losses``
    stops on a NaN or infinite loss *before* anything is updated (so no bad step reaches a
    checkpoint) and back-propagates it; the gradients add up, then one update.

    Args:
        optimizer: its every parameter group gets ``lr``.
        lr: the learning rate of this step (a pure function of the step: resumable).
        losses: the step's losses, each with where it was made (named in the NaN error:
            ``"epoch 3, step 17"``). Pass a generator to back-propagate each loss before the next
            is computed, so only one graph is alive at a time (the super-network's sandwich).

    Returns:
        The summed loss (detached).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total: torch.Tensor | None = None
    for loss, where in losses:
        check_finite(loss, where=where)
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    if total is None:
        raise ValueError("optimizer_step needs at least one loss")
    optimizer.step()
    return total


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, optimizer: torch.optim.Optimizer,
               loss_fn: Callable[[Any, torch.Tensor], torch.Tensor], lr: float, where: str) -> tuple[torch.Tensor, Any]:
    """:func:`optimizer_step` on one forward pass (the base and multi-stage loops).

    Args:
        model: the network in training mode (possibly DDP-wrapped).
        x: the input batch, already on the device.
        y: the labels, on the device.
        optimizer: its every parameter group gets ``lr``.
        loss_fn: ``(outputs, y) -> scalar loss`` (distillation terms close over the teacher's logits).
        lr: the learning rate of this step.
        where: named in the NaN error (``"epoch 3, step 17"``).

    Returns:
        The loss (detached) and the model's outputs (for accuracy counts).
    """
    outputs = model(x)
    loss = optimizer_step(optimizer, lr=lr, losses=[(loss_fn(outputs, y), where)])
    return loss, outputs


def history_seconds(history: list[dict[str, Any]]) -> float | None:
    """A training's epochs' seconds summed across resumes (the history comes back from the
    checkpoint); None when an epoch predates their recording."""
    return float(sum(h["seconds"] for h in history)) if all("seconds" in h for h in history) else None


def read_back_seconds(history: list[dict[str, Any]]) -> float:
    """What the teacher passes a training's epochs read from the cache took when they were computed
    (:class:`~s2dnas.train.teacher.CachedTeacher`; 0 without one): added to its seconds, how long it
    would have taken alone."""
    return float(sum(h.get("teacher_seconds_read_back", 0.0) for h in history))


@torch.no_grad()
def check_finite_weights(model: nn.Module, *, where: str) -> None:
    """Raise :class:`TrainingError` when a parameter or floating-point buffer is NaN or infinite.

    Called before a checkpoint is written: the last optimizer step of an epoch can blow the
    weights up although every loss was finite, and such a checkpoint must not replace the last good one.
    """
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingError(
                f"Weights became NaN or infinite ({name}) at {where}; training stopped and the last good checkpoint "
                "is kept (that of the last completed epoch, if any). Expected finite weights: lower the learning "
                "rate (--lr), then resume with --resume (or start over with --force)"
            )


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, device: torch.device,
             channels_last: bool = False) -> EvalResult:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``loader`` (eval mode)."""
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    try:
        for x, y in loader:
            x, y = to_device(x, device, channels_last=channels_last), y.to(device)
            logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise TrainingError("Cannot evaluate on an empty split")
    return EvalResult(accuracy=correct / total, loss=loss_sum / total, num_examples=total)


@torch.no_grad()
def reestimate_batch_norm(net: nn.Module, loader: DataLoader, *, batches: int, device: torch.device) -> None:
    """Replace every batch norm's running statistics by their average over ``batches`` batches.

    Used where running statistics are stale for the weights: slices of a shared super-network,
    or a network after a few dozen training steps (cumulative average, momentum None). Norms that
    stay in eval mode when ``net.train()`` is called (a frozen part) keep their statistics.
    """
    was_training = net.training
    net.train()
    # only the norms that train: a network may keep some in eval mode (a frozen trunk), and their
    # statistics must survive (a reset one would stay at mean 0, variance 1)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    try:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            net(x.to(device))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        net.train(was_training)


def reestimate_batch_norm_seeded(net: nn.Module, dataset: Any, *, batch_size: int, batches: int, seed: int,
                                 device: torch.device) -> None:
    """:func:`reestimate_batch_norm` on ``batches`` shuffled training batches that depend only on
    ``seed``: the shuffling is seeded and the augmentation draws from a seeded, forked RNG, so the
    statistics are the same whatever ran before (a resumed run, another candidate first)."""
    from s2dnas.data import make_loader

    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reestimate_batch_norm(net, loader, batches=batches, device=device)
