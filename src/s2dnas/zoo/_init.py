"""Helpers shared by the zoo's CIFAR builders: layer widths and weight initialisation."""
from __future__ import annotations

import math
import numbers

from torch import nn

from s2dnas.errors import ConfigError

__all__ = ["init_weights", "scaled_widths"]


def scaled_widths(widths: tuple[int, ...], width_mult: float) -> tuple[int, ...]:
    """``widths`` times ``width_mult``, rounded to the nearest integer and at least 1.

    Raises:
        ConfigError: ``width_mult`` is not a finite positive number.
    """
    if (not isinstance(width_mult, numbers.Real) or isinstance(width_mult, bool) or not math.isfinite(width_mult)
            or not width_mult > 0):
        raise ConfigError(f"Expected `width_mult` to be a finite number > 0, but got {width_mult!r}; pass e.g. "
                          "0.5, 0.75 or 1.0")
    return tuple(max(1, round(w * width_mult)) for w in widths)


def init_weights(model: nn.Module, *, linear: bool = True) -> None:
    """Kaiming-normal convs (fan-out, ReLU gain), unit BN; with ``linear``, small-normal linear
    layers with zero biases (else PyTorch's default linear initialisation is kept)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear:
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
