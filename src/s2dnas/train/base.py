"""Training of the static base model: SGD + momentum, warm-up + cosine schedule, checkpoints."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from s2dnas._io import atomic_write_json
from s2dnas.data import DataSplits, make_loader
from s2dnas.errors import CheckpointError, ConfigError
from s2dnas.train.checkpoint import check_model_identity, load_checkpoint, save_checkpoint, save_weights
from s2dnas.train.loops import check_finite, cosine_lr, evaluate, seed_everything, to_device

__all__ = ["BaseTrainConfig", "train_base"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseTrainConfig:
    """Recipe of the base model's training."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    channels_last: bool = True
    limit_train: int | None = None  # use only the first N training examples (smoke runs)

    def __post_init__(self) -> None:
        errors = []
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "warmup_epochs", "label_smoothing"):
            if getattr(self, name) < 0:
                errors.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            errors.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.limit_train is not None and self.limit_train < 1:
            errors.append(f"limit_train must be >= 1, got {self.limit_train}")
        if errors:
            raise ConfigError("Invalid base training config: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (stored in checkpoints and metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseTrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def train_base(model: nn.Module, splits: DataSplits, *, config: BaseTrainConfig, out_dir: str | Path,
               model_name: str, device: torch.device, resume: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """Train ``model`` on ``splits.train``, validating every epoch; write checkpoints and metrics.

    Files in ``out_dir``: ``checkpoint.pt`` (each epoch, atomic, weights-only loadable),
    ``model.safetensors`` + ``model.json`` (final weights and metadata), ``metrics.json``.

    Returns:
        The metrics dict (history of train loss/accuracy and val accuracy, final val/test accuracy).
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    params_decay = [p for p in model.parameters() if p.ndim > 1]
    params_no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": params_decay, "weight_decay": config.weight_decay},
         {"params": params_no_decay, "weight_decay": 0.0}],
        lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
    )
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
    train_loader_len = -(-min(len(splits.train), config.limit_train or len(splits.train)) // config.batch_size)
    total_steps = config.epochs * train_loader_len
    warmup_steps = int(config.warmup_epochs * train_loader_len)
    val_loader = make_loader(splits.val, batch_size=512)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    t_start = time.time()
    for epoch in range(start_epoch, config.epochs):
        # Each epoch's shuffling and augmentation depend only on (seed, epoch): resume replays exactly.
        seed_everything(config.seed * 1000 + epoch)
        loader = make_loader(splits.train, batch_size=config.batch_size, shuffle=True,
                             seed=config.seed * 1000 + epoch, limit=config.limit_train)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for i, (x, y) in enumerate(bar):
            step = epoch * train_loader_len + i
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps=total_steps, warmup_steps=warmup_steps, base_lr=config.lr)
            x, y = to_device(x, device, channels_last=config.channels_last), y.to(device)
            logits = model(x)
            loss = criterion(logits, y)
            check_finite(loss, where=f"epoch {epoch + 1}, step {i}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.numel()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        val = evaluate(model, val_loader, device=device, channels_last=config.channels_last)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "val_accuracy": val.accuracy, "val_loss": val.loss})
        _logger.info("epoch %d: train loss %.4f, val acc %.4f", epoch + 1, loss_sum / seen, val.accuracy)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: train loss {loss_sum / seen:.4f} "
                       f"acc {correct / seen:.4f} | val acc {val.accuracy:.4f}")
        save_checkpoint(ckpt_path, {
            "model_name": model_name, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1, "history": history, "config": config.to_dict(),
        })
    test = evaluate(model, make_loader(splits.test, batch_size=512), device=device,
                    channels_last=config.channels_last)
    val_acc = history[-1]["val_accuracy"] if history else float("nan")
    metrics = {
        "model": model_name, "dataset": splits.name, "num_classes": splits.num_classes,
        "in_channels": splits.in_channels, "input_size": list(splits.input_size),
        "val_accuracy": val_acc, "test_accuracy": test.accuracy, "history": history,
        "recipe": config.to_dict(), "seconds_this_run": time.time() - t_start,
        "mean": list(splits.mean), "std": list(splits.std),
    }
    save_weights(out_dir / "model.safetensors", model.state_dict(), {k: v for k, v in metrics.items() if k != "history"})
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


