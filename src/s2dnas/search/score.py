"""Scoring an architecture from a trained super-network, at the operating point the user asked for.

``score`` extracts the architecture (copies of its slices and its stage heads), recalibrates its
batch norms on seeded training batches, collects every stage's val logits once, chooses the exit
thresholds on val at the target, and turns the result into a reward.

Reward (:func:`reward_at`), with ``M_base`` the base model's MACs per input and ``M`` and ``a`` the
expected MACs and accuracy on val at the chosen thresholds:

* accuracy target ``a*`` (base val accuracy minus the tolerance):
  reached: ``M_base / M`` (the cost saving, > 0); not reached: ``a - a*`` (the negative gap,
  where ``a`` is the best accuracy any threshold setting gives), so <= 0;
* MACs budget ``B``: reached (``M <= B``): ``a`` (>= 0); not reached: ``-(M - B) / B`` (the
  relative excess of the cheapest setting, < 0).

So a candidate that reaches the target always scores above every one that does not, and those
are ordered by how far they are from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


from s2dnas.dynamic.calibrate import StageLogits, calibrate, collect_logits
from s2dnas.errors import ConfigError
from s2dnas.space import Architecture, MultiStageNet
from s2dnas.train.supernet import SuperNet, recalibrate

__all__ = ["Target", "Score", "reward_at", "calibrate_at", "score"]


@dataclass(frozen=True)
class Target:
    """The operating point: an accuracy to reach or a MACs budget per input (exactly one)."""

    accuracy: float | None = None
    macs_budget: float | None = None

    def __post_init__(self) -> None:
        if (self.accuracy is None) == (self.macs_budget is None):
            raise ConfigError("Expected exactly one of an accuracy target and a MACs budget, but got "
                              f"accuracy={self.accuracy!r}, macs_budget={self.macs_budget!r}")
        if self.accuracy is not None and not 0.0 <= self.accuracy <= 1.0:
            raise ConfigError(f"Expected an accuracy target in [0, 1], but got {self.accuracy!r}")
        if self.macs_budget is not None and not self.macs_budget > 0:
            raise ConfigError(f"Expected a MACs budget > 0, but got {self.macs_budget!r}")

    @classmethod
    def from_base(cls, *, base_accuracy: float, tolerance: float) -> Target:
        """The base model's val accuracy minus ``tolerance`` (never below 0)."""
        return cls(accuracy=max(0.0, base_accuracy - tolerance))


@dataclass(frozen=True)
class Score:
    """One scored architecture (val only)."""

    architecture: Architecture
    reward: float
    reached: bool
    accuracy: float
    expected_macs: float
    base_macs: int
    thresholds: tuple[float, ...]
    stage_accuracy: tuple[float, ...]
    stage_macs: tuple[int, ...]
    network: MultiStageNet | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (without the network)."""
        return {"architecture": self.architecture.to_dict(), "reward": self.reward, "reached": self.reached,
                "accuracy": self.accuracy, "expected_macs": self.expected_macs, "base_macs": self.base_macs,
                "macs_fraction": self.expected_macs / self.base_macs, "thresholds": list(self.thresholds),
                "stage_accuracy": list(self.stage_accuracy), "stage_macs": list(self.stage_macs)}


def reward_at(target: Target, *, reached: bool, accuracy: float, expected_macs: float, base_macs: int) -> float:
    """The reward of the module docstring."""
    if target.accuracy is not None:
        return base_macs / expected_macs if reached else min(0.0, accuracy - target.accuracy)
    assert target.macs_budget is not None
    budget = float(target.macs_budget)
    return accuracy if reached else -max(0.0, expected_macs - budget) / budget


def calibrate_at(stage_logits: StageLogits, *, stage_macs: Sequence[int], target: Target,
                 confidence: str = "max_softmax") -> tuple[tuple[float, ...], float, float, bool]:
    """Thresholds chosen on ``stage_logits`` at ``target``: ``(thresholds, accuracy, expected MACs,
    reached)``. The only call into the threshold calibration (swap it here)."""
    cal = calibrate(stage_logits, stage_macs=list(stage_macs), target_accuracy=target.accuracy,
                    macs_budget=target.macs_budget, confidence=confidence)
    return tuple(cal.thresholds), float(cal.accuracy), float(cal.expected_macs), bool(cal.feasible)


def score(supernet: SuperNet, arch: Architecture, *, val_data: Iterable[Any], bn_data: Iterable[Any],
          target: Target, bn_batches: int = 20, bn_seed: int = 0, confidence: str = "max_softmax",
          keep_network: bool = False) -> Score:
    """Score ``arch`` from ``supernet`` at ``target``.

    Args:
        supernet: the trained super-network.
        arch: an architecture of its space.
        val_data: the val loader (thresholds are chosen on it; nothing else is read for scoring).
        bn_data: a deterministically ordered training loader for the batch-norm recalibration.
        target: accuracy target or MACs budget.
        bn_batches: batches of ``bn_data`` the statistics are averaged over.
        bn_seed: seed of the recalibration's random augmentation.
        confidence: the exit confidence measure.
        keep_network: return the extracted, recalibrated network in :attr:`Score.network`.
    """
    net = supernet.extract(arch)
    recalibrate(net, bn_data, batches=bn_batches, seed=bn_seed)
    logits = collect_logits(net, val_data)
    stage_macs = net.stage_macs()
    thresholds, accuracy, macs, reached = calibrate_at(logits, stage_macs=stage_macs, target=target,
                                                       confidence=confidence)
    base_macs = supernet.space.base_macs()
    return Score(architecture=arch, reached=reached, accuracy=accuracy, expected_macs=macs, base_macs=base_macs,
                 reward=reward_at(target, reached=reached, accuracy=accuracy, expected_macs=macs,
                                  base_macs=base_macs),
                 thresholds=thresholds, stage_accuracy=tuple(logits.stage_accuracy()),
                 stage_macs=tuple(int(m) for m in stage_macs), network=net if keep_network else None)
