"""Confidence measures in numpy and the exit rule on precomputed logits.

Every measure maps the logits of one stage, ``(B, K)``, to one number per input in ``[0, 1]``,
where 1 means certain:

* ``"max_softmax"``: the largest softmax probability.
* ``"entropy"``: ``1 - H(p) / log K`` (1 for a one-hot ``p``, 0 for the uniform distribution).
* ``"margin"``: ``p_top1 - p_top2``.

This is the one numpy implementation (``s2dnas.dynamic.confidence_np`` is this function); the
PyTorch executor uses ``s2dnas.dynamic.confidence``, the same float32 formulas, and a test checks
that the two agree to float rounding (~1e-7).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from s2dnas_runtime.errors import PolicyError
from s2dnas_runtime.policy import ExitPolicy, validate_measure

__all__ = ["confidence_np", "exit_rule"]


def confidence_np(logits: np.ndarray, measure: str = "max_softmax") -> np.ndarray:
    """Confidence of every row of ``logits`` in ``[0, 1]``; higher means "exit now".

    Args:
        logits: ``(B, K)`` scores.
        measure: one of :data:`~s2dnas_runtime.policy.CONFIDENCE_MEASURES`.

    Returns:
        ``(B,)`` float32 confidences.

    Raises:
        PolicyError: unknown measure or logits not of shape ``(B, K)``.
    """
    validate_measure(measure)
    z = np.asarray(logits, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] < 1:
        raise PolicyError(f"Expected logits of shape (B, K) with K >= 1, but got shape {z.shape}", field="confidence")
    k = z.shape[1]
    if z.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    # Stable softmax: shift by the row max so exp never overflows.
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    if measure == "max_softmax":
        return np.clip((e / total).max(axis=1), 0.0, 1.0).astype(np.float32)
    if k == 1:  # a single class is always certain
        return np.ones(z.shape[0], dtype=np.float32)
    if measure == "entropy":
        log_p = shifted - np.log(total)
        entropy = -(np.exp(log_p) * log_p).sum(axis=1)  # p -> 0 gives 0 * finite = 0, never NaN
        return np.clip(1.0 - entropy / np.float32(math.log(k)), 0.0, 1.0).astype(np.float32)
    p = e / total
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return np.clip(top2[:, 0] - top2[:, 1], 0.0, 1.0).astype(np.float32)


def exit_rule(stage_logits: Sequence[np.ndarray], policy: ExitPolicy) -> tuple[np.ndarray, np.ndarray]:
    """The reference routing rule on precomputed logits of every stage (all stages run).

    Each input takes the first stage ``s < S-1`` whose confidence is ``>= thresholds[s]``, the
    last stage otherwise. :meth:`OnnxDynamicNet.predict` must agree with it.

    Args:
        stage_logits: ``S`` arrays ``(B, K)``.
        policy: the exit policy (``S - 1`` thresholds).

    Returns:
        ``(logits (B, K), exit_stage (B,))`` with 0-based exit stages.

    Raises:
        PolicyError: the policy is for another number of stages.
    """
    num_stages = len(stage_logits)
    policy.validate(num_stages=num_stages)
    batch = stage_logits[0].shape[0]
    exit_stage = np.full(batch, num_stages - 1, dtype=np.int64)
    undecided = np.ones(batch, dtype=bool)
    for s in range(num_stages - 1):
        leave = undecided & (confidence_np(stage_logits[s], policy.confidence) >= np.float32(policy.thresholds[s]))
        exit_stage[leave] = s
        undecided &= ~leave
    stacked = np.stack([np.asarray(lg) for lg in stage_logits])  # (S, B, K)
    return stacked[exit_stage, np.arange(batch)], exit_stage
