"""The exit policy: everything a dynamic network needs to route an input, as one value.

An :class:`ExitPolicy` holds the ``S - 1`` thresholds, the confidence measure they apply to, the
per-stage cost the calibration minimised (MACs by default, or any other unit such as measured
latency) and the calibration record (target, budget, how the thresholds scored, the curve) as
plain data. It is validated once, when it is made, by :meth:`ExitPolicy.validate`: the one
implementation of the threshold rules. The torch library (``s2dnas.dynamic``) re-exports it;
calibration makes it; ``DynamicNet``, save/load, export and :class:`~s2dnas_runtime.OnnxDynamicNet`
take it whole.

The rule it describes: stage 0 runs on every input; an input leaves at stage ``s < S-1`` when
``confidence(logits_s) >= thresholds[s]`` (compared in float32); stage ``S-1`` answers for the
rest. A threshold of 0 lets everyone leave; one above 1 lets nobody leave (confidences are in
``[0, 1]``).

Example:
    >>> policy = ExitPolicy(thresholds=(0.9, 0.8), confidence="entropy")
    >>> policy.num_stages
    3
    >>> ExitPolicy.from_dict(policy.to_dict()) == policy
    True
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s2dnas_runtime.errors import PolicyError

__all__ = ["CONFIDENCE_MEASURES", "NEVER_EXIT", "POLICY_FORMAT", "ExitPolicy", "validate_measure"]

CONFIDENCE_MEASURES: tuple[str, ...] = ("max_softmax", "entropy", "margin")
"""The confidence measures, defined here once (see :mod:`s2dnas_runtime.confidence`)."""

NEVER_EXIT = 2.0
"""A threshold no confidence reaches (confidences are in [0, 1]): nobody exits at that stage."""

POLICY_FORMAT = "s2dnas.policy/1"


def validate_measure(measure: Any) -> str:
    """Return ``measure`` if it is one of :data:`CONFIDENCE_MEASURES`, else raise :class:`PolicyError`."""
    if not isinstance(measure, str) or measure not in CONFIDENCE_MEASURES:
        raise PolicyError(f"Expected the confidence measure to be one of {', '.join(CONFIDENCE_MEASURES)}, but got "
                          f"{measure!r}; pick one of these", field="confidence")
    return measure


def _is_number(value: Any) -> bool:
    # bool is an int in Python, but True/False are never thresholds or costs (a JSON file holding
    # booleans is a mistake, not 1.0/0.0).
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool", "bool_")  # numpy's bool too


def _as_list(values: Any, what: str, field: str) -> list[Any]:
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):  # numpy arrays, torch tensors
        values = values.tolist()
        values = values if isinstance(values, list) else [values]
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise PolicyError(f"Expected {what} to be a list of numbers, but got {values!r}", field=field)
    return list(values)


@dataclass(frozen=True)
class ExitPolicy:
    """Thresholds, confidence measure, per-stage cost and calibration record of a dynamic network.

    Construction validates (see :meth:`validate`) and normalises: thresholds become a tuple of
    floats, the stage cost a tuple of numbers, the calibration record a JSON-safe dict copy.
    Changing anything means making a new policy (:meth:`with_thresholds`, ``dataclasses.replace``).

    Args:
        thresholds: ``S - 1`` numbers, finite and ``>= 0`` (above 1: nobody exits at that stage);
            never booleans.
        confidence: one of :data:`CONFIDENCE_MEASURES`.
        stage_cost: per stage, its own cost per input in ``cost_unit`` (what calibration
            minimised), or ``None`` when unknown.
        cost_unit: the unit of ``stage_cost``: ``"macs"`` (default) or e.g. ``"ms"``.
        calibration: the calibration record as plain JSON data (target, budget, accuracy,
            expected cost, exit fractions, curve, ...), or ``None``. It describes how these
            thresholds were chosen; routing never reads it.

    Raises:
        PolicyError: any field is invalid (one line naming the field and the fix).
    """

    thresholds: tuple[float, ...]
    confidence: str = "max_softmax"
    stage_cost: tuple[float, ...] | None = None
    cost_unit: str = "macs"
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", self._normal_thresholds(self.thresholds))
        if self.stage_cost is not None:
            values = _as_list(self.stage_cost, "`stage_cost`", "stage_cost")
            if not all(_is_number(v) for v in values):
                raise PolicyError(f"Expected `stage_cost` to be numbers, but got {values!r}", field="stage_cost")
            object.__setattr__(self, "stage_cost", tuple(
                int(v) if isinstance(v, numbers.Integral) else float(v) for v in values))
        if self.calibration is not None:
            if not isinstance(self.calibration, Mapping):
                raise PolicyError(f"Expected the calibration record to be a JSON object or None, but got "
                                  f"{type(self.calibration).__name__}", field="calibration")
            try:  # a private, JSON-safe copy: the record is data, and nobody else can change it
                record = json.loads(json.dumps(dict(self.calibration), allow_nan=False))
            except (TypeError, ValueError) as err:
                raise PolicyError(f"Expected the calibration record to be plain JSON data, but it is not ({err})",
                                  field="calibration") from None
            object.__setattr__(self, "calibration", record)
        self.validate()

    @staticmethod
    def _normal_thresholds(thresholds: Any) -> tuple[float, ...]:
        values = _as_list(thresholds, "`thresholds`", "thresholds")
        bad = [v for v in values if not _is_number(v)]
        if bad:
            raise PolicyError(
                f"Expected `thresholds` to be numbers, but got {values!r}"
                + ("; booleans are not thresholds: use 0 for 'everyone exits' and 2.0 for 'nobody exits'"
                   if any(_is_bool(v) for v in bad) else ""),
                field="thresholds")
        return tuple(float(v) for v in values)

    @property
    def num_stages(self) -> int:
        """S: one more than the number of thresholds."""
        return len(self.thresholds) + 1

    def validate(self, *, num_stages: int | None = None) -> None:
        """Check every field; with ``num_stages``, also that the policy fits a network of S stages.

        Raises:
            PolicyError: wrong count, a threshold that is NaN, infinite or negative, an unknown
                measure, a negative or non-finite cost, or a cost list of the wrong length.
        """
        values = list(self.thresholds)
        if num_stages is not None and len(values) != num_stages - 1:
            raise PolicyError(
                f"Expected {num_stages - 1} thresholds (one per stage except the last of {num_stages}), but got "
                f"{len(values)}: {values}; pass one value per early exit", field="thresholds")
        if any(math.isnan(t) or math.isinf(t) or t < 0 for t in values):
            raise PolicyError(
                f"Expected every threshold to be a finite number >= 0, but got {values}; use 0 for 'everyone "
                "exits here' and any value above 1 for 'nobody exits here'", field="thresholds")
        validate_measure(self.confidence)
        if self.stage_cost is not None:
            cost = list(self.stage_cost)
            if len(cost) != len(values) + 1:
                raise PolicyError(f"Expected {len(values) + 1} per-stage costs (one per stage), but got {len(cost)}: "
                                  f"{cost}", field="stage_cost")
            if any(not math.isfinite(c) or c < 0 for c in cost):
                raise PolicyError(f"Expected per-stage costs to be finite and >= 0, but got {cost}",
                                  field="stage_cost")
        if not isinstance(self.cost_unit, str) or not self.cost_unit:
            raise PolicyError(f"Expected `cost_unit` to be a non-empty string, but got {self.cost_unit!r}",
                              field="cost_unit")

    def with_thresholds(self, thresholds: Any) -> ExitPolicy:
        """A policy with other thresholds: same measure and cost, no calibration record.

        The record described how the old thresholds were chosen and scored; kept with new ones
        it would contradict them.
        """
        return dataclasses.replace(self, thresholds=thresholds, calibration=None)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable); :meth:`from_dict` reads it back."""
        return {"format": POLICY_FORMAT, "thresholds": list(self.thresholds), "confidence": self.confidence,
                "stage_cost": None if self.stage_cost is None else list(self.stage_cost),
                "cost_unit": self.cost_unit, "calibration": copy.deepcopy(self.calibration)}

    @classmethod
    def from_dict(cls, data: Any) -> ExitPolicy:
        """Inverse of :meth:`to_dict`.

        Raises:
            PolicyError: not an object, another format, missing thresholds, or any invalid field.
        """
        if not isinstance(data, Mapping):
            raise PolicyError(f"Expected an exit policy JSON object, but got {type(data).__name__}", field="thresholds")
        if data.get("format", POLICY_FORMAT) != POLICY_FORMAT:
            raise PolicyError(f"Expected exit policy format {POLICY_FORMAT!r}, but got {data.get('format')!r}",
                              field="thresholds")
        if "thresholds" not in data:
            raise PolicyError("Expected an exit policy with 'thresholds', but it has none", field="thresholds")
        unknown = sorted(set(data) - {"format", "thresholds", "confidence", "stage_cost", "cost_unit", "calibration"})
        if unknown:
            raise PolicyError(f"Expected exit policy fields format, thresholds, confidence, stage_cost, cost_unit, "
                              f"calibration, but got also {unknown}", field="thresholds")
        return cls(thresholds=data["thresholds"], confidence=data.get("confidence", "max_softmax"),
                   stage_cost=data.get("stage_cost"), cost_unit=data.get("cost_unit", "macs"),
                   calibration=data.get("calibration"))
