"""Cheap checks of an architecture file before any data is loaded or model built."""
from __future__ import annotations

from s2dnas.errors import InvalidArchitectureError
from s2dnas.space.architecture import Architecture

__all__ = ["check_architecture"]


def check_architecture(arch: Architecture, *, num_stages: int, ratio_grid: int) -> None:
    """Raise :class:`InvalidArchitectureError` when ``arch`` was made for another S or q."""
    if arch.num_stages != num_stages:
        raise InvalidArchitectureError(
            f"The architecture has {arch.num_stages} stages but the space has {num_stages}; "
            f"use --stages {arch.num_stages} or another architecture")
    if arch.ratio_grid != ratio_grid:
        raise InvalidArchitectureError(
            f"The architecture uses ratio grid q={arch.ratio_grid} but the space has q={ratio_grid}; "
            f"use --ratio-grid {arch.ratio_grid} or another architecture")
