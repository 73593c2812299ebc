"""The operating point that thresholds are calibrated to, resolved once from the config.

The search's rewards and the final calibration must aim at the same thing: either an accuracy
target (``calibration.target_accuracy``, or the base model's val accuracy minus
``calibration.tolerance``) or a MACs budget (``calibration.macs_budget``, a fraction of the base
model's MACs, turned into MACs here and nowhere else) or, with ``calibration.cost: latency``, a
latency budget (``calibration.latency_budget``, a fraction of the base model's measured
milliseconds per input, turned into milliseconds here). :func:`resolve_target` is that one rule.

Example:
    >>> from s2dnas.config import CalibrationConfig
    >>> resolve_target(CalibrationConfig(tolerance=0.01), base_val_accuracy=0.9, base_macs=1000)
    CalibrationTarget(target_accuracy=0.89, macs_budget=None, latency_budget=None)
    >>> resolve_target(CalibrationConfig(macs_budget=0.25), base_val_accuracy=0.9, base_macs=1000)
    CalibrationTarget(target_accuracy=None, macs_budget=250.0, latency_budget=None)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s2dnas.config.schema import CalibrationConfig
from s2dnas.errors import ConfigError

__all__ = ["CalibrationTarget", "resolve_target", "reference_target"]


@dataclass(frozen=True)
class CalibrationTarget:
    """Exactly one of an accuracy target (0..1), a MACs budget (MACs per input, absolute) and a
    latency budget (milliseconds per input, absolute, in the unit of the latency cost hook)."""

    target_accuracy: float | None = None
    macs_budget: float | None = None
    latency_budget: float | None = None

    def __post_init__(self) -> None:
        assert [self.target_accuracy, self.macs_budget, self.latency_budget].count(None) == 2, \
            f"exactly one of target_accuracy, macs_budget and latency_budget, got {self}"

    @property
    def budget_mode(self) -> bool:
        """True when the thresholds buy the best accuracy within a budget (MACs or latency)."""
        return self.macs_budget is not None or self.latency_budget is not None

    def calibrate_kwargs(self) -> dict[str, Any]:
        """The mode keywords of :func:`s2dnas.dynamic.calibrate` (``target_accuracy=``, ``macs_budget=``
        or ``cost_budget=``; a latency budget also needs ``stage_cost=`` in milliseconds)."""
        if self.latency_budget is not None:
            return {"target_accuracy": None, "cost_budget": self.latency_budget}
        return {"target_accuracy": self.target_accuracy, "macs_budget": self.macs_budget}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (kept in results.json)."""
        return {"target_accuracy": self.target_accuracy, "macs_budget": self.macs_budget,
                "latency_budget_ms": self.latency_budget}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CalibrationTarget":
        """The target :meth:`to_dict` wrote (e.g. read back from a run's files)."""
        return cls(target_accuracy=data["target_accuracy"], macs_budget=data["macs_budget"],
                   latency_budget=data["latency_budget_ms"])


def resolve_target(calibration: CalibrationConfig, *, base_val_accuracy: float, base_macs: float,
                   base_latency_ms: float | None = None) -> CalibrationTarget:
    """The calibration target of a run: a MACs (or latency) budget when one is set, else an accuracy.

    Args:
        calibration: the config section (validated: at most one of target_accuracy and the budgets).
        base_val_accuracy: the base model's val accuracy (the target is it minus the tolerance
            when ``target_accuracy`` is None).
        base_macs: the base model's MACs per input (the budget is a fraction of it).
        base_latency_ms: the base model's measured milliseconds per input at the deployment
            batch (needed only with ``calibration.latency_budget``).
    """
    if calibration.latency_budget is not None:
        assert base_latency_ms is not None and base_latency_ms > 0, "a latency budget needs the base's latency"
        return CalibrationTarget(latency_budget=calibration.latency_budget * base_latency_ms)
    if calibration.macs_budget is not None:
        return CalibrationTarget(macs_budget=calibration.macs_budget * base_macs)
    if calibration.target_accuracy is not None:
        return CalibrationTarget(target_accuracy=calibration.target_accuracy)
    return CalibrationTarget(target_accuracy=base_val_accuracy - calibration.tolerance)


def reference_target(target: CalibrationTarget, *, reference_accuracy: float,
                     base_val_accuracy: float) -> CalibrationTarget:
    """The search's accuracy target under ``search.target_from: reference``: the run's target moved by
    ``reference_accuracy - base_val_accuracy``, so it sits as far under the reference (the space's most
    expensive architecture, scored like a candidate) as the run's sits under the base (kept in [0, 1]).

    Briefly trained candidates, or candidates taken from a super-network, may all fall short of the
    run's target; the ``macs_saving`` reward then ranks them by accuracy alone and never sees their
    MACs. Moved, the target is one the scorer can reach.

    Example:
        >>> reference_target(CalibrationTarget(target_accuracy=0.93), reference_accuracy=0.85,
        ...                  base_val_accuracy=0.94).target_accuracy  # doctest: +ELLIPSIS
        0.84...
    """
    if target.target_accuracy is None:
        raise ConfigError(f"Expected an accuracy target to move, but got {target} (a budget has no target to "
                          "move: set search.target_from=run)")
    moved = target.target_accuracy + reference_accuracy - base_val_accuracy
    return CalibrationTarget(target_accuracy=min(1.0, max(0.0, moved)))  # an accuracy, whatever the inputs
