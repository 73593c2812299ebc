"""Device selection shared by every command: ``auto`` picks CUDA when present."""
from __future__ import annotations

import torch

from s2dnas.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"Expected device 'auto', 'cpu' or 'cuda[:N]', but got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {name!r} was requested but CUDA is not available; use --device cpu")
    return device
