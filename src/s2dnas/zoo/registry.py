"""Model registry: ``register_model``, ``list_models`` and ``create_model``.

Names are lowercase and equal to the builder's name. Besides registered names, ``create_model``
accepts ``torchvision:<name>`` (a torchvision classification builder) and
``package.module:factory`` (a user's own model).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from s2dnas.errors import UnknownModelError

__all__ = ["register_model", "list_models", "is_registered"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; a duplicate name raises ``ValueError``."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"Model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Return the sorted names of the registered models."""
    return sorted(_MODELS)


def is_registered(name: str) -> bool:
    """Return whether ``name`` is a registered model."""
    return name in _MODELS


def get_builder(name: str) -> Callable[..., nn.Module]:
    """Return the builder of a registered model or raise :class:`UnknownModelError`."""
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"Unknown model {name!r}: expected one of {', '.join(list_models())}, "
            "'torchvision:<name>' or 'package.module:factory'"
        ) from None
