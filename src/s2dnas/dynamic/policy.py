"""The exit policy on the torch side: :class:`ExitPolicy` and its errors as ``s2dnas`` errors.

:class:`~s2dnas_runtime.policy.ExitPolicy` is defined once, in the torch-free runtime (the torch
library depends on the runtime, never the reverse) and re-exported here. Its validation raises
:class:`s2dnas_runtime.PolicyError`; at the library's boundaries :func:`as_policy` turns that into
the typed ``s2dnas`` errors (:class:`~s2dnas.errors.ConfigError` for the confidence measure,
:class:`~s2dnas.errors.CalibrationError` for everything else), so ``except S2DNASError`` keeps
catching every user error.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from s2dnas.errors import CalibrationError, ConfigError, S2DNASError
from s2dnas_runtime.errors import PolicyError
from s2dnas_runtime.policy import CONFIDENCE_MEASURES, NEVER_EXIT, ExitPolicy

__all__ = ["CONFIDENCE_MEASURES", "NEVER_EXIT", "ExitPolicy", "PolicyError", "as_policy", "policy_errors"]


def _translate(err: PolicyError) -> S2DNASError:
    kind = ConfigError if err.field == "confidence" else CalibrationError
    return kind(str(err))


@contextmanager
def policy_errors() -> Iterator[None]:
    """Re-raise a :class:`PolicyError` inside the block as the matching ``s2dnas`` error."""
    try:
        yield
    except PolicyError as err:
        raise _translate(err) from None


def as_policy(policy: ExitPolicy | Sequence[float] | Any, *, num_stages: int) -> ExitPolicy:
    """``policy`` checked against a network of ``num_stages`` stages.

    Args:
        policy: an :class:`ExitPolicy`, or ``S - 1`` thresholds as a shorthand for
            ``ExitPolicy(thresholds=...)`` (max-softmax confidence, no cost, no calibration).
        num_stages: S.

    Raises:
        CalibrationError: wrong number of thresholds, or invalid ones.
        ConfigError: unknown confidence measure.
    """
    with policy_errors():
        if not isinstance(policy, ExitPolicy):
            policy = ExitPolicy(thresholds=policy)
        policy.validate(num_stages=num_stages)
    return policy
