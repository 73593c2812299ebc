"""Recipe of the static base model's training (``s2dnas train-base``): one frozen dataclass.

It lives with the other config dataclasses (every default in one place); unlike the sections of
:class:`~s2dnas.config.RunConfig` it is checked when constructed, since ``train-base`` builds it
from flags, not from a YAML file.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from s2dnas.errors import ConfigError

__all__ = ["BaseTrainConfig"]


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
