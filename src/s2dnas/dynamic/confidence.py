"""Confidence measures that decide whether an input leaves at an exit.

Every measure maps the logits of one stage, ``(B, K)``, to one number per input in ``[0, 1]``,
where 1 means certain:

* ``"max_softmax"``: the largest softmax probability.
* ``"entropy"``: ``1 - H(p) / log K`` (1 for a one-hot ``p``, 0 for the uniform distribution).
* ``"margin"``: ``p_top1 - p_top2``.

An input leaves stage ``s`` when ``confidence >= threshold[s]``. The comparison is done in
float32 by every implementation (PyTorch executor, cached-logit evaluation, numpy runtime), so a
threshold means the same thing everywhere. :func:`confidence_np` is the numpy implementation of
the runtime (:mod:`s2dnas_runtime.confidence`, re-exported here): same formulas in float32, equal
to :func:`confidence` up to float rounding (~1e-7). The list of measures is defined once, in
:mod:`s2dnas_runtime.policy`.

Example:
    >>> import torch
    >>> confidence(torch.tensor([[0.0, 0.0], [10.0, -10.0]]), "max_softmax")
    tensor([0.5000, 1.0000])
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from s2dnas.dynamic.policy import CONFIDENCE_MEASURES, policy_errors
from s2dnas.errors import ConfigError
from s2dnas_runtime.confidence import confidence_np
from s2dnas_runtime.policy import validate_measure as _validate_measure

if TYPE_CHECKING:
    import torch

__all__ = ["CONFIDENCE_MEASURES", "confidence", "confidence_np", "validate_measure"]


def validate_measure(measure: str) -> None:
    """Raise :class:`ConfigError` unless ``measure`` is one of :data:`CONFIDENCE_MEASURES`."""
    with policy_errors():
        _validate_measure(measure)


def _check_logits_shape(ndim: int, shape: tuple[int, ...]) -> None:
    if ndim != 2 or shape[1] < 1:
        raise ConfigError(f"Expected logits of shape (B, K) with K >= 1, but got shape {shape}")


def confidence(logits: torch.Tensor, measure: str = "max_softmax") -> torch.Tensor:
    """Confidence of every input from its logits.

    Args:
        logits: ``(B, K)`` logits of one stage (any float dtype; computed in float32).
        measure: ``"max_softmax"``, ``"entropy"`` or ``"margin"``.

    Returns:
        ``(B,)`` float32 confidences in ``[0, 1]`` (1 = certain).

    Raises:
        ConfigError: unknown ``measure`` or logits not of shape ``(B, K)``.
    """
    import torch  # here, so the numpy twin works in a process that never imports torch

    validate_measure(measure)
    _check_logits_shape(logits.ndim, tuple(logits.shape))
    z = logits.float()
    k = z.shape[1]
    if measure == "max_softmax":
        return torch.softmax(z, dim=1).amax(dim=1).clamp_(0.0, 1.0)
    if k == 1:  # a single class is always certain
        return torch.ones(z.shape[0], dtype=torch.float32, device=z.device)
    if measure == "entropy":
        logp = torch.log_softmax(z, dim=1)
        h = -(logp.exp() * logp).sum(dim=1)
        return (1.0 - h / math.log(k)).clamp_(0.0, 1.0)
    top2 = torch.softmax(z, dim=1).topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]).clamp_(0.0, 1.0)
