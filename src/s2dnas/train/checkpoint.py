"""Checkpoints that load without executing pickled code.

Training state goes through ``torch.save`` (written atomically) and is read back with
``torch.load(weights_only=True)``: only tensors, numbers, strings and containers. Final weights go
to safetensors with a JSON file of metadata beside them.
"""
from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from s2dnas._io import atomic_torch_save, atomic_write_bytes, atomic_write_json, check_state_dict, read_weights
from s2dnas.errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "save_weights", "load_weights", "check_state_dict",
           "check_model_identity", "hash_tensor", "weights_digest"]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (a kill leaves the previous file intact)."""
    atomic_torch_save(Path(path), state)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing, truncated, or holding objects other than plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; check the path or train first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refusing to load {path}: it is not a weights-only checkpoint ({_unpickling_detail(err)}; loading it "
            "would run pickled code); only load checkpoints written by s2dnas"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupt ({type(err).__name__}); delete it to start over, "
            "or restore a good copy"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"Expected a dict in checkpoint {path}, but got {type(state).__name__}")
    return state


def _unpickling_detail(err: Exception) -> str:
    """The useful part of torch's weights-only refusal (e.g. ``Unsupported global: GLOBAL io.open``), on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch highlights part of its message with ANSI codes
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    detail = found.group(1) if found else (text.strip().splitlines() or ["unpickling refused"])[0]
    return detail.split(" was not an allowed global")[0].strip()[:120]


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write ``state_dict`` as ``path`` (safetensors) and ``metadata`` as ``path`` with ``.json``.

    Each file is written atomically (temporary file, fsync, rename): a kill leaves the previous
    version of each file, never a partial one.
    """
    path = Path(path)
    data = save({k: v.detach().contiguous().cpu() for k, v in state_dict.items()})
    atomic_write_bytes(path, data)
    atomic_write_json(path.with_suffix(".json"), metadata)


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read weights written by :func:`save_weights` and their metadata (``{}`` when absent)."""
    return read_weights(path)


def check_model_identity(state_dict: dict[str, torch.Tensor], model: nn.Module, *, source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly ``model``'s keys and shapes."""
    problem = check_state_dict(state_dict, model.state_dict())
    if problem:
        raise CheckpointError(
            f"{source} was saved for another model ({problem}); pass the matching --model and class count"
        )


def hash_tensor(h: Any, tensor: torch.Tensor) -> None:
    """Feed ``tensor``'s values (not its layout or device) and its dtype and shape to the hash ``h``."""
    h.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
    h.update(tensor.detach().to("cpu").contiguous().flatten().view(torch.uint8).numpy())


def weights_digest(module: nn.Module) -> str:
    """16 hex digits of SHA-256 over ``module``'s parameter and buffer names and values: the same
    weights give the same digest on any device, other weights (a base retrained in place) another."""
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        h.update(f"{name};".encode())
        if isinstance(value, torch.Tensor):
            hash_tensor(h, value)
        else:  # a module's extra state (get_extra_state): anything picklable
            h.update(repr(value).encode())
    return h.hexdigest()[:16]
