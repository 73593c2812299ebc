"""Training of the static base model: SGD + momentum, warm-up + cosine schedule, checkpoints."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from s2dnas import distributed as dist
from s2dnas._io import atomic_write_json
from s2dnas.config import BaseTrainConfig
from s2dnas.data import DataSplits, make_loader
from s2dnas.errors import CheckpointError, ConfigError, TrainingError
from s2dnas.train.checkpoint import check_model_identity, load_checkpoint, save_checkpoint, save_weights
from s2dnas.train.loops import (EvalResult, check_finite_weights, cosine_lr, evaluate, history_seconds, make_sgd,
                                seed_everything, to_device, train_step)
from s2dnas.train.multistage import MultiStageLoss

__all__ = ["BaseTrainConfig", "chance_accuracy", "train_base", "warn_if_chance"]

_logger = logging.getLogger(__name__)


def chance_accuracy(dataset: Any) -> float:
    """Accuracy of always answering the most frequent class of ``dataset`` (labels read without decoding)."""
    if hasattr(dataset, "labels"):
        labels = torch.as_tensor(dataset.labels)
    elif hasattr(dataset, "samples"):
        labels = torch.tensor([label for _, label in dataset.samples])
    else:
        labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    return float(torch.bincount(labels).max()) / len(labels) if len(labels) else 0.0


#: A base model whose val accuracy is within this of :func:`chance_accuracy` gets a warning.
CHANCE_MARGIN = 0.05


def warn_if_chance(*, val_accuracy: float, splits: DataSplits, advice: str) -> bool:
    """Log one warning when ``val_accuracy`` is within :data:`CHANCE_MARGIN` of :func:`chance_accuracy`
    on ``splits.val`` (the base model learnt nothing useful); ``advice`` ends it. True when it warned."""
    chance = chance_accuracy(splits.val)
    if val_accuracy > chance + CHANCE_MARGIN:
        return False
    _logger.warning("the base model's val accuracy %.1f%% is at chance level (%.1f%%: always the most frequent of "
                    "%d classes): it has learnt nothing useful, and a search on it is meaningless; %s",
                    100 * val_accuracy, 100 * chance, splits.num_classes, advice)
    return True


def train_base(model: nn.Module, splits: DataSplits, *, config: BaseTrainConfig, out_dir: str | Path,
               model_name: str, device: torch.device, resume: bool = False,
               progress: bool = True, distributed: bool = False,
               on_epoch: Callable[[dict[str, float]], None] | None = None,
               teacher: nn.Module | None = None, distillation: MultiStageLoss | None = None) -> dict[str, Any]:
    """Train ``model`` on ``splits.train``, validating every epoch; write checkpoints and metrics.

    Files in ``out_dir`` (created if missing): ``checkpoint.pt`` (each epoch, atomic, weights-only
    loadable), ``model.safetensors`` + ``model.json`` (final weights and metadata, with the data set,
    val cut and preprocessing under ``data``), ``metrics.json``. A final val accuracy at chance level
    (within :data:`CHANCE_MARGIN` of always answering the most frequent class) is logged as a warning.

    With ``distributed=True`` inside a torchrun job (see :mod:`s2dnas.distributed`), the model is
    wrapped in ``DistributedDataParallel``, ``config.batch_size`` is the global batch split over the
    ranks, metrics and val/test passes are reduced over the ranks, and only rank 0 shows progress,
    logs and writes files; every rank returns the same metrics. Without a process group it is the
    single-process loop.

    Args:
        on_epoch: called (rank 0) after every epoch with its record (epoch, train loss/accuracy, val
            accuracy/loss), e.g. to print one line per epoch without a progress bar.
        teacher: distil from this model's logits (on ``device``, in eval mode; it is not modified), with ``distillation``: the
            final training's loss on one stage, ``CE + alpha * T^2 * KL`` (the method benchmark's
            static baselines get the distillation our networks get). None: plain cross-entropy.
        distillation: the loss holding alpha and T (``MultiStageLoss(1, ...)``); only with ``teacher``.

    Returns:
        The metrics dict (history of train loss/accuracy and val accuracy, final val/test accuracy).

    Raises:
        ConfigError: ``splits`` has no val split; ``teacher`` without ``distillation`` (or the other way
            round), or with ``config.label_smoothing`` (the distillation loss has none).
    """
    if (teacher is None) != (distillation is None) or (teacher is not None and config.label_smoothing > 0):
        raise ConfigError("Expected a teacher and its distillation loss together (MultiStageLoss(1, ...)), without "
                          f"label smoothing, but got teacher={teacher is not None}, distillation="
                          f"{distillation is not None}, label_smoothing={config.label_smoothing}")
    if len(splits.val) == 0:
        raise ConfigError("Expected a validation split to train a base model on, but val is empty; "
                          "pass --val-size >= 1 (or drop it: 10% of train, at most 5000)")
    ddp = distributed and dist.is_distributed()
    main = not ddp or dist.is_main()
    progress = progress and main
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_sgd(model.parameters(), lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        state = load_checkpoint(ckpt_path, map_location=device)
        if state.get("model_name") != model_name:
            raise CheckpointError(
                f"Checkpoint {ckpt_path} is for model {state.get('model_name')!r}, not {model_name!r}; "
                "use the same --model or another --out"
            )
        check_model_identity(state["model"], model, source=str(ckpt_path))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        if BaseTrainConfig.from_dict(state["config"]) != config:
            _logger.warning("resuming with a recipe that differs from the checkpoint's")
    net = dist.wrap_ddp(model, device) if ddp else model  # `model` stays the unwrapped module (state dicts)
    train_loader_len = -(-min(len(splits.train), config.limit_train or len(splits.train)) // config.batch_size)
    total_steps = config.epochs * train_loader_len
    warmup_steps = int(config.warmup_epochs * train_loader_len)
    val_loader = make_loader(splits.val, batch_size=512)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    t_start = time.time()
    for epoch in range(start_epoch, config.epochs):
        t_epoch = time.time()
        # Each epoch's shuffling and augmentation depend only on (seed, epoch): resume replays exactly.
        if ddp:  # DistributedSampler; batch_size is the global batch (see dist.train_loader)
            seed_everything(dist.rank_seed(config.seed * 1000 + epoch))
            loader = dist.train_loader(splits.train, batch_size=config.batch_size, seed=config.seed * 1000,
                                       epoch=epoch, limit=config.limit_train)
        else:
            seed_everything(config.seed * 1000 + epoch)
            loader = make_loader(splits.train, batch_size=config.batch_size, shuffle=True,
                                 seed=config.seed * 1000 + epoch, limit=config.limit_train)
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        read_back = getattr(teacher, "seconds_read_back", None)  # a CachedTeacher's, before this epoch
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for i, (x, y) in enumerate(bar):
            step = epoch * train_loader_len + i
            x, y = to_device(x, device, channels_last=config.channels_last), y.to(device)
            lr = cosine_lr(step, total_steps=total_steps, warmup_steps=warmup_steps, base_lr=config.lr)
            loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = criterion
            if teacher is not None and distillation is not None:
                with torch.no_grad():
                    soft = teacher(x)
                loss_fn = lambda out, target: distillation([out], target, soft)  # noqa: E731
            loss, logits = train_step(net, x, y, optimizer=optimizer, loss_fn=loss_fn, lr=lr,
                                      where=f"epoch {epoch + 1}, step {i}")
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.numel()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if ddp:
            dist.average_buffers(model)  # the ranks' batch-norm statistics differ after the last step
            loss_sum, correct, seen = _reduce_sums(loss_sum, correct, seen)
            val = _evaluate_sharded(model, splits.val, device=device, channels_last=config.channels_last)
        else:
            val = evaluate(model, val_loader, device=device, channels_last=config.channels_last)
        # rank 0's clock on every rank: the ranks keep one history (the checkpoint holds rank 0's)
        seconds = dist.broadcast_object(time.time() - t_epoch) if ddp else time.time() - t_epoch
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "val_accuracy": val.accuracy, "val_loss": val.loss, "seconds": seconds})
        if read_back is not None:
            history[-1]["teacher_seconds_read_back"] = getattr(teacher, "seconds_read_back") - read_back
        if main:
            _logger.info("epoch %d: train loss %.4f, val acc %.4f", epoch + 1, loss_sum / seen, val.accuracy)
        if main and on_epoch is not None:
            on_epoch(history[-1])
        check_finite_weights(model, where=f"the end of epoch {epoch + 1}")  # never checkpoint NaN weights
        if main:  # the other ranks hold the same state; they wait so a resume finds the file
            save_checkpoint(ckpt_path, {
                "model_name": model_name, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1, "history": history, "config": config.to_dict(),
            })
        if ddp:
            dist.barrier()
    if ddp:
        test = _evaluate_sharded(model, splits.test, device=device, channels_last=config.channels_last)
    else:
        test = evaluate(model, make_loader(splits.test, batch_size=512), device=device,
                        channels_last=config.channels_last)
    val_acc = history[-1]["val_accuracy"] if history else float("nan")
    metrics = {
        "model": model_name, "dataset": splits.name, "num_classes": splits.num_classes,
        "in_channels": splits.in_channels, "input_size": list(splits.input_size),
        "val_accuracy": val_acc, "test_accuracy": test.accuracy, "history": history,
        "recipe": config.to_dict(), "seconds_this_run": time.time() - t_start,
        "train_seconds": history_seconds(history),
        "mean": list(splits.mean), "std": list(splits.std), "data": splits.data_spec(),
    }
    if main:
        warn_if_chance(val_accuracy=val_acc, splits=splits, advice="check the data, --epochs, --lr and the "
                       "preprocessing (--input-size, --augment, --normalize)")
    if main:
        save_weights(out_dir / "model.safetensors", model.state_dict(),
                     {k: v for k, v in metrics.items() if k != "history"})
        atomic_write_json(out_dir / "metrics.json", metrics)
    if ddp:
        dist.barrier()
    return metrics


def _reduce_sums(loss_sum: float, correct: int, seen: int) -> tuple[float, int, int]:
    """The epoch's train sums over every rank (each rank counted its own examples)."""
    total = dist.all_reduce_sum(torch.tensor([loss_sum, correct, seen], dtype=torch.float64))
    return float(total[0]), int(total[1]), int(total[2])


def _evaluate_sharded(model: nn.Module, dataset: Any, *, device: torch.device, channels_last: bool) -> EvalResult:
    """:func:`evaluate` over ``dataset`` split across the ranks, counts summed (exact; no padding)."""
    def counts(part: Any) -> list[float]:
        r = evaluate(model, make_loader(part, batch_size=512), device=device, channels_last=channels_last)
        return [round(r.accuracy * r.num_examples), r.loss * r.num_examples, r.num_examples]

    correct, loss_sum, total = dist.evaluate_sharded(counts, dataset, 3)
    if total == 0:
        raise TrainingError("Cannot evaluate on an empty split")
    return EvalResult(accuracy=correct / total, loss=loss_sum / total, num_examples=int(total))


