"""Checkpoints that load without executing pickled code.

Training state goes through ``torch.save`` (written atomically) and is read back with
``torch.load(weights_only=True)``: only tensors, numbers, strings and containers. Final weights go
to safetensors with a JSON file of metadata beside them.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from s2dnas._io import atomic_torch_save, atomic_write_json
from s2dnas.errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "save_weights", "load_weights", "check_model_identity"]


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
            f"Refusing to load {path}: it is not a weights-only checkpoint (it would run pickled code: "
            f"{str(err).splitlines()[0][:120]}); only load checkpoints written by s2dnas"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupt ({type(err).__name__}); delete it to start over, "
            "or restore a good copy"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"Expected a dict in checkpoint {path}, but got {type(state).__name__}")
    return state


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write ``state_dict`` as ``path`` (safetensors) and ``metadata`` as ``path`` with ``.json``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp))
    tmp.replace(path)
    atomic_write_json(path.with_suffix(".json"), metadata)


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read weights written by :func:`save_weights` and their metadata (``{}`` when absent)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist; check the path")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"Weights file {path} is truncated or not safetensors ({err}); replace it") from None
    meta_path = path.with_suffix(".json")
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"Metadata {meta_path} is not valid JSON ({err}); replace it") from None
    return tensors, meta


def check_model_identity(state_dict: dict[str, torch.Tensor], model: nn.Module, *, source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly ``model``'s keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            detail.append(f"{k} has shape {tuple(state_dict[k].shape)}, expected {tuple(own[k].shape)}")
        raise CheckpointError(
            f"{source} was saved for another model ({'; '.join(detail)}); pass the matching --model and class count"
        )
