"""One-shot mode: train a weight-sharing super-network over the whole space once.

Every few steps a new architecture is sampled uniformly and its stages are built as *views* of
the super-network's parameters (``Space.build(..., share_weights=True)``), so each step trains the
slices that architecture uses, with the multi-stage loss and distillation from the frozen base.
A candidate is then scored without its own training (``OneShotEvaluator``), after its batch-norm
statistics are re-estimated.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from s2dnas.config import TrainConfig
from s2dnas.data import DataSplits, make_loader
from s2dnas.space import Space
from s2dnas.space.factory import build_space, space_config
from s2dnas.train.loops import cosine_lr, make_sgd, seed_everything, to_device, train_step
from s2dnas.train.multistage import MultiStageLoss

__all__ = ["build_supernet_space", "train_supernet"]

_logger = logging.getLogger(__name__)


def build_supernet_space(space: Space) -> Space:
    """A copy of ``space`` over a private copy of its base model: the super-network's weights."""
    model = copy.deepcopy(space.model)
    for p in model.parameters():  # the base may be frozen (it is the distillation teacher)
        p.requires_grad_(True)
    return build_space(model, config=space_config(space), input_shape=space.input_shape,
                       model_name=space.model_name)


def train_supernet(space: Space, splits: DataSplits, *, config: TrainConfig, teacher: nn.Module, epochs: int,
                   device: torch.device, resample_every: int = 4, seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Train ``space.model`` as a super-network (in place); returns a small history.

    Args:
        space: a space built over the super-network's model (see :func:`build_supernet_space`).
        splits: the data (train only).
        config: optimiser, loss weights, temperature, ``limit_train``.
        teacher: the frozen base model (distillation target).
        epochs: passes over the (limited) training set.
        device: where to train.
        resample_every: steps between two sampled architectures (building one costs tens of ms).
        seed: seed of the architecture sampler and the data order.
        progress: show a progress bar.
    """
    model = space.model.to(device)
    teacher = teacher.to(device).eval()
    model.train()
    optimizer = make_sgd(model.parameters(), lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    criterion = MultiStageLoss(space.num_stages, stage_weights=config.stage_weights,
                               distill_weight=config.distill_weight, temperature=config.temperature)
    generator = torch.Generator().manual_seed(seed)
    n_train = min(len(splits.train), config.limit_train or len(splits.train))
    batch_size = config.batch_size or 128
    steps_per_epoch = -(-n_train // batch_size)
    total = epochs * steps_per_epoch
    history = []
    start = time.time()
    step = 0
    net = None
    for epoch in range(epochs):
        seed_everything(seed * 1000 + epoch)
        loader = make_loader(splits.train, batch_size=batch_size, shuffle=True, seed=seed * 1000 + epoch,
                             limit=config.limit_train)
        loss_sum, seen = 0.0, 0
        bar = tqdm(loader, desc=f"supernet {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for x, y in bar:
            if step % resample_every == 0 or net is None:
                net = space.build(space.sample(generator), share_weights=True).to(device)
            x, y = to_device(x, device, channels_last=False), y.to(device)
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss, _ = train_step(net, x, y, optimizer=optimizer, where=f"super-network step {step}",
                                 loss_fn=lambda z, t: criterion(z, t, teacher_logits),  # noqa: B023 - used at once
                                 lr=cosine_lr(step, total_steps=total, warmup_steps=0, base_lr=config.lr))
            loss_sum += loss.item() * y.numel()
            seen += y.numel()
            step += 1
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1)})
        _logger.info("supernet epoch %d: loss %.4f", epoch + 1, loss_sum / max(seen, 1))
    return {"history": history, "seconds": time.time() - start, "steps": step}
