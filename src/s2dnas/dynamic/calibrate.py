"""Choosing the exit thresholds on cached logits of the validation split.

One pass over the data (:func:`collect_logits`) stores every stage's logits; every candidate
threshold setting is then scored from those logits alone, in a vectorised way, with the same code
that :func:`evaluate_dynamic` uses for one setting. Two modes (METHOD.md "Dynamic inference"):

* **target**: the fewest expected MACs with accuracy ``>= target_accuracy`` (default:
  ``base_accuracy - tolerance``);
* **budget**: the best accuracy with expected MACs ``<= macs_budget`` (MACs per input).

Expected MACs = ``sum_s (fraction of inputs reaching stage s) * stage_macs[s]``, where
``stage_macs[s]`` is stage ``s``'s own MACs per input (features reused from earlier stages are not
counted again). Multiplied by the number of inputs it is an exact integer, equal to the MACs the
:class:`~s2dnas.dynamic.executor.DynamicNet` executes on the same inputs.

The thresholds are chosen by :func:`s2dnas.dynamic.optimise.optimise_thresholds`: one optimiser
for every stage count, exact over every candidate threshold (one per distinct outcome, drawn from
the sorted confidences) while ``(outer combinations) x N`` stays within
:data:`~s2dnas.dynamic.optimise.EXACT_CELLS`, else over a thinned grid (``exact=False``). It is
cost-agnostic: it is given a per-stage cost vector, the MACs by default, or any other per-stage
cost per input with its unit (``stage_cost=(costs, unit)``, the output of a cost hook such as
:class:`s2dnas.cost.latency.LatencyStageCost`, milliseconds per input): the modes then read
"fewest expected cost" and "expected cost ``<= cost_budget``", and MACs are still reported.

The result, :class:`Calibration`, reports how the chosen setting scores; what travels on (to
:class:`~s2dnas.dynamic.DynamicNet`, save, export, the runtime) is its :attr:`Calibration.policy`,
one :class:`~s2dnas_runtime.ExitPolicy`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from s2dnas.dynamic.confidence import confidence as _confidence
from s2dnas.dynamic.confidence import validate_measure
from s2dnas.dynamic.executor import route
from s2dnas.dynamic.optimise import optimise_thresholds
from s2dnas.dynamic.policy import NEVER_EXIT, ExitPolicy, as_policy
from s2dnas.errors import CalibrationError, DataError
from s2dnas.space.multistage import MultiStageNet

__all__ = [
    "NEVER_EXIT",
    "StageLogits",
    "CurvePoint",
    "Calibration",
    "collect_logits",
    "calibrate",
    "evaluate_dynamic",
    "oracle",
    "pareto_front",
]

_logger = logging.getLogger(__name__)

_FORMAT = "s2dnas.calibration/1"
_MAX_CELLS = 4_000_000  # settings x inputs scored per chunk (bounds memory to a few tens of MB)
_POLICY_FIELDS = ("format", "thresholds", "confidence", "stage_cost", "cost_unit")  # in the policy, not its record


# -- cached logits ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageLogits:
    """Every stage's logits on a data split (one pass), kept on the CPU.

    Attributes:
        logits: ``(S, N, K)`` float32 logits.
        labels: ``(N,)`` int64 labels.
    """

    logits: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.logits.ndim != 3 or self.labels.ndim != 1 or self.logits.shape[1] != self.labels.shape[0]:
            raise CalibrationError(
                f"Expected logits (S, N, K) and labels (N,), but got {tuple(self.logits.shape)} and "
                f"{tuple(self.labels.shape)}"
            )

    @property
    def num_stages(self) -> int:
        """S."""
        return int(self.logits.shape[0])

    @property
    def num_examples(self) -> int:
        """N."""
        return int(self.logits.shape[1])

    def correct(self) -> torch.Tensor:
        """``(S, N)`` bool: whether each stage classifies each input correctly."""
        return self.logits.argmax(dim=2) == self.labels.unsqueeze(0)

    def stage_accuracy(self) -> list[float]:
        """Accuracy of each stage alone (every input answered by that stage)."""
        return self.correct().double().mean(dim=1).tolist()


def collect_logits(msnet: MultiStageNet, loader: Iterable[Any], *,
                   device: torch.device | str | None = None) -> StageLogits:
    """Run every stage on every input of ``loader`` once and keep the logits.

    Args:
        msnet: the multi-stage network (run in eval mode; its mode is restored afterwards).
        loader: an iterable of ``(images, labels)`` batches, e.g. a DataLoader over the val split.
        device: where to run (default: the network's device).

    Returns:
        The :class:`StageLogits` of the whole loader, on the CPU.

    Raises:
        DataError: the loader is empty, yields something else than ``(images, labels)``, or labels
            are outside ``0..K-1``.
    """
    if device is None:
        device = next(msnet.parameters()).device
    device = torch.device(device)
    was_training = msnet.training
    msnet.eval()
    logits: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            for batch in loader:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise DataError(
                        f"Expected the loader to yield (images, labels) batches, but got {type(batch).__name__}"
                    )
                x, y = batch
                out = msnet(x.to(device, non_blocking=True))
                logits.append(torch.stack(out).float().cpu())
                labels.append(torch.as_tensor(y).reshape(-1).to(torch.int64).cpu())
    finally:
        msnet.train(was_training)
    if not logits:
        raise DataError("Expected a non-empty loader of (images, labels), but got no batches")
    result = StageLogits(logits=torch.cat(logits, dim=1), labels=torch.cat(labels))
    k = result.logits.shape[2]
    if result.labels.min() < 0 or result.labels.max() >= k:
        raise DataError(
            f"Expected labels in 0..{k - 1} (the model has {k} classes), but got labels from "
            f"{int(result.labels.min())} to {int(result.labels.max())}; use the dataset the model was trained on"
        )
    return result


# -- scoring ------------------------------------------------------------------------------------
class _Scorer:
    """Scores threshold settings on cached logits: the one code path of calibrate and evaluate."""

    def __init__(self, stage_logits: StageLogits, stage_macs: Sequence[int], measure: str) -> None:
        validate_measure(measure)
        if len(stage_macs) != stage_logits.num_stages:
            raise CalibrationError(
                f"Expected {stage_logits.num_stages} per-stage MACs (one per stage), but got {len(stage_macs)}; "
                "pass msnet.stage_macs()"
            )
        if any(int(m) < 0 for m in stage_macs):
            raise CalibrationError(f"Expected per-stage MACs >= 0, but got {list(stage_macs)}")
        self.n = stage_logits.num_examples
        self.num_stages = stage_logits.num_stages
        if self.n == 0:
            raise CalibrationError("Expected cached logits of at least one input, but got none")
        self.conf = torch.stack([_confidence(z, measure) for z in stage_logits.logits[:-1]]) \
            if self.num_stages > 1 else torch.zeros(0, self.n)
        self.correct = stage_logits.correct()  # (S, N)
        self.stage_macs = torch.tensor([int(m) for m in stage_macs], dtype=torch.int64)

    def score(self, settings: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score ``(P, S-1)`` settings.

        Returns:
            ``correct (P,)``, ``exit_counts (P, S)`` and ``total_macs (P,)``, all int64 and exact.
        """
        p, s_count = settings.shape[0], self.num_stages
        chunk = max(1, _MAX_CELLS // self.n)
        correct, counts = [], []
        cols = torch.arange(self.n)
        for start in range(0, p, chunk):
            exit_stage = route(self.conf, settings[start : start + chunk])  # (P_c, N)
            correct.append(self.correct[exit_stage, cols].sum(dim=1))
            counts.append(torch.stack([(exit_stage == s).sum(dim=1) for s in range(s_count)], dim=1))
        exit_counts = torch.cat(counts)  # (P, S)
        # Inputs reaching stage s = those exiting at s or later.
        reached = exit_counts.flip(1).cumsum(1).flip(1)
        total_macs = (reached * self.stage_macs).sum(dim=1)
        return torch.cat(correct).numpy(), exit_counts.numpy(), total_macs.numpy()


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurvePoint:
    """One point of the accuracy-vs-cost curve: a threshold setting and how it scores.

    ``expected_cost`` is the expected cost in the calibration's ``cost_unit`` when that is not
    MACs (e.g. milliseconds per input), else ``None``.
    """

    expected_macs: float
    accuracy: float
    thresholds: tuple[float, ...]
    expected_cost: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        out = {"expected_macs": self.expected_macs, "accuracy": self.accuracy, "thresholds": list(self.thresholds)}
        if self.expected_cost is not None:
            out["expected_cost"] = self.expected_cost
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CurvePoint:
        """Inverse of :meth:`to_dict`."""
        try:
            cost = data.get("expected_cost")
            return cls(expected_macs=float(data["expected_macs"]), accuracy=float(data["accuracy"]),
                       thresholds=tuple(float(t) for t in data["thresholds"]),
                       expected_cost=None if cost is None else float(cost))
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(
                f"Expected a curve point with expected_macs, accuracy and thresholds, but got {data!r}"
            ) from None


@dataclass(frozen=True)
class Calibration:
    """The chosen thresholds, how they score on the calibration data, and the whole curve.

    Attributes:
        thresholds: ``S-1`` thresholds.
        confidence: the confidence measure.
        accuracy: accuracy of the rule with these thresholds on the calibration data.
        expected_macs: average MACs per input on the calibration data.
        exit_fractions: per stage, the fraction of inputs that leave there (sums to 1).
        feasible: False when no setting met the target (then the most accurate setting is
            returned) or the budget (then the cheapest).
        target_accuracy: the accuracy target (target mode), else ``None``.
        macs_budget: the MACs budget per input (budget mode), else ``None``.
        stage_macs: per stage, its own MACs per input.
        num_examples: N, the number of calibration inputs.
        curve: the Pareto front (least cost for each accuracy) over every setting scored,
            sorted by cost.
        message: a one-line summary (says what was returned when infeasible).
        exact: True when the optimiser scored every candidate threshold combination.
        stage_cost: per stage, the cost per input that was minimised, when not MACs (else empty).
        cost_unit: its unit: ``"macs"`` (then ``stage_macs`` was minimised) or e.g. ``"ms"``.
        expected_cost: expected cost per input in ``cost_unit`` (equals ``expected_macs`` for MACs).
        cost_budget: the budget per input in ``cost_unit`` (budget mode with another cost), else ``None``.

    What travels on is :attr:`policy`, which holds the thresholds, measure and stage cost and the
    rest of this record as plain data; :meth:`from_policy` reads it back.
    """

    thresholds: tuple[float, ...]
    confidence: str
    accuracy: float
    expected_macs: float
    exit_fractions: tuple[float, ...]
    feasible: bool
    target_accuracy: float | None
    macs_budget: float | None
    stage_macs: tuple[int, ...] = ()
    num_examples: int = 0
    curve: tuple[CurvePoint, ...] = field(default=())
    message: str = ""
    exact: bool = True
    stage_cost: tuple[float, ...] = ()
    cost_unit: str = "macs"
    expected_cost: float | None = None
    cost_budget: float | None = None

    @property
    def policy(self) -> ExitPolicy:
        """The exit policy: these thresholds, measure and the per-stage cost minimised (MACs or
        another unit), with this record (which keeps the per-stage MACs when they were not the cost)."""
        macs = self.cost_unit == "macs"
        record = {k: v for k, v in self.to_dict().items()
                  if k not in _POLICY_FIELDS and not (macs and k == "stage_macs")}
        cost = self.stage_macs if macs else self.stage_cost
        return ExitPolicy(thresholds=self.thresholds, confidence=self.confidence,
                          stage_cost=cost or None, cost_unit=self.cost_unit, calibration=record)

    @classmethod
    def from_policy(cls, policy: ExitPolicy) -> Calibration | None:
        """The calibration a policy records (``None`` when it has no record).

        Raises:
            CalibrationError: the record is malformed.
        """
        if policy.calibration is None:
            return None
        macs = policy.cost_unit == "macs"
        cost = [] if policy.stage_cost is None else list(policy.stage_cost)
        return cls.from_dict({**policy.calibration, "thresholds": list(policy.thresholds),
                              "confidence": policy.confidence, "cost_unit": policy.cost_unit,
                              "stage_cost": [] if macs else cost,
                              "stage_macs": cost if macs else policy.calibration.get("stage_macs", [])})

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        return {
            "format": _FORMAT, "thresholds": list(self.thresholds), "confidence": self.confidence,
            "accuracy": self.accuracy, "expected_macs": self.expected_macs,
            "exit_fractions": list(self.exit_fractions), "feasible": self.feasible,
            "target_accuracy": self.target_accuracy, "macs_budget": self.macs_budget,
            "stage_macs": list(self.stage_macs), "num_examples": self.num_examples,
            "curve": [p.to_dict() for p in self.curve], "message": self.message, "exact": self.exact,
            "stage_cost": list(self.stage_cost), "cost_unit": self.cost_unit,
            "expected_cost": self.expected_cost, "cost_budget": self.cost_budget,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Inverse of :meth:`to_dict`.

        Raises:
            CalibrationError: not a dict, wrong format, or missing/ill-typed fields.
        """
        if not isinstance(data, dict):
            raise CalibrationError(f"Expected a calibration JSON object, but got {type(data).__name__}")
        if data.get("format", _FORMAT) != _FORMAT:
            raise CalibrationError(f"Expected calibration format {_FORMAT!r}, but got {data.get('format')!r}")
        try:
            opt = lambda key: None if data.get(key) is None else float(data[key])  # noqa: E731
            return cls(
                thresholds=tuple(float(t) for t in data["thresholds"]), confidence=str(data["confidence"]),
                accuracy=float(data["accuracy"]), expected_macs=float(data["expected_macs"]),
                exit_fractions=tuple(float(f) for f in data["exit_fractions"]), feasible=bool(data["feasible"]),
                target_accuracy=opt("target_accuracy"), macs_budget=opt("macs_budget"),
                stage_macs=tuple(int(m) for m in data.get("stage_macs", ())),
                num_examples=int(data.get("num_examples", 0)),
                curve=tuple(CurvePoint.from_dict(p) for p in data.get("curve", ())),
                message=str(data.get("message", "")), exact=bool(data.get("exact", True)),
                stage_cost=tuple(float(c) for c in data.get("stage_cost", ())),
                cost_unit=str(data.get("cost_unit", "macs")), expected_cost=opt("expected_cost"),
                cost_budget=opt("cost_budget"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(
                f"Expected a calibration with thresholds, confidence, accuracy, expected_macs, exit_fractions "
                f"and feasible, but got a malformed one ({type(err).__name__}: {err})"
            ) from None


# -- public functions ---------------------------------------------------------------------------
def evaluate_dynamic(stage_logits: StageLogits, policy: ExitPolicy | Sequence[float], *,
                     stage_macs: Sequence[int]) -> dict[str, Any]:
    """Apply the exit rule of ``policy`` to cached logits.

    Args:
        stage_logits: from :func:`collect_logits`.
        policy: the exit policy (or ``S-1`` thresholds, max-softmax confidence).
        stage_macs: per stage, its own MACs per input.

    Returns:
        ``accuracy``, ``num_correct``, ``expected_macs`` (per input), ``total_macs`` (exact integer over all
        inputs), ``exit_fractions`` and ``exit_counts`` (per stage), ``num_examples``,
        ``thresholds``, ``confidence``.

    Raises:
        CalibrationError: invalid thresholds or per-stage MACs.
    """
    policy = as_policy(policy, num_stages=stage_logits.num_stages)
    values = policy.thresholds
    scorer = _Scorer(stage_logits, stage_macs, policy.confidence)
    correct, counts, total = scorer.score(torch.tensor([values], dtype=torch.float32).reshape(1, -1))
    n = scorer.n
    return {
        "accuracy": int(correct[0]) / n,
        "num_correct": int(correct[0]),
        "expected_macs": int(total[0]) / n,
        "total_macs": int(total[0]),
        "exit_fractions": [int(c) / n for c in counts[0]],
        "exit_counts": [int(c) for c in counts[0]],
        "num_examples": n,
        "thresholds": list(values),
        "confidence": policy.confidence,
    }


def oracle(stage_logits: StageLogits, stage_macs: Sequence[int]) -> dict[str, Any]:
    """The best any exit rule could do: each input leaves at the first stage that gets it right.

    Inputs no stage classifies correctly go to the last stage.

    Args:
        stage_logits: from :func:`collect_logits`.
        stage_macs: per stage, its own MACs per input.

    Returns:
        ``accuracy``, ``expected_macs``, ``total_macs``, ``exit_fractions``, ``exit_counts``.
    """
    correct = stage_logits.correct()  # (S, N)
    s_count, n = correct.shape
    if len(stage_macs) != s_count:
        raise CalibrationError(f"Expected {s_count} per-stage MACs, but got {len(stage_macs)}")
    any_correct = correct.any(dim=0)
    first = torch.where(any_correct, correct.int().argmax(dim=0), torch.full((n,), s_count - 1))
    counts = torch.bincount(first, minlength=s_count)
    reached = counts.flip(0).cumsum(0).flip(0)
    total = int((reached * torch.tensor([int(m) for m in stage_macs])).sum())
    return {
        "accuracy": int(any_correct.sum()) / n,
        "expected_macs": total / n,
        "total_macs": total,
        "exit_fractions": (counts.double() / n).tolist(),
        "exit_counts": counts.tolist(),
    }


def pareto_front(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """The points no other point beats on both MACs (fewer) and accuracy (higher), by MACs."""
    ordered = sorted(points, key=lambda p: (p.expected_macs, -p.accuracy))
    front: list[CurvePoint] = []
    for p in ordered:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def calibrate(msnet_or_stage_logits: MultiStageNet | StageLogits, loader: Iterable[Any] | None = None, *,
              stage_macs: Sequence[int] | None = None, target_accuracy: float | None = None,
              macs_budget: float | None = None, base_accuracy: float | None = None, tolerance: float = 0.001,
              confidence: str = "max_softmax", device: torch.device | str | None = None,
              grid: int | None = None, stage_cost: tuple[Sequence[float], str] | None = None,
              cost_budget: float | None = None, warn: bool = True) -> Calibration:
    """Choose the thresholds on the validation data (never the test split).

    Exactly one mode: **target** (``target_accuracy``, or ``base_accuracy - tolerance`` when only
    ``base_accuracy`` is given) picks the fewest expected MACs with accuracy ``>=`` the target;
    **budget** (``macs_budget``) picks the best accuracy with expected MACs ``<=`` the budget.
    Ties go to the higher accuracy (target mode) or the fewer MACs (budget mode). With
    ``stage_cost=(costs, unit)`` the same is done with that cost in place of MACs (budget:
    ``cost_budget``, in ``unit`` per input); MACs are still counted and reported.

    Args:
        msnet_or_stage_logits: a :class:`~s2dnas.space.MultiStageNet` (then ``loader`` is run
            once) or :class:`StageLogits` already collected (then ``loader`` must be ``None``).
        loader: the validation loader, yielding ``(images, labels)``. There is deliberately no
            split name: only the data given here is ever read.
        stage_macs: per stage, its own MACs per input (default: ``msnet.stage_macs()``).
        target_accuracy: accuracy to reach, in ``[0, 1]``.
        macs_budget: MACs per input not to exceed.
        base_accuracy: the static base model's validation accuracy (default target source).
        tolerance: how much below ``base_accuracy`` the default target is.
        confidence: ``"max_softmax"``, ``"entropy"`` or ``"margin"``.
        device: where to run the network (default: its device).
        grid: at most this many candidate thresholds per stage but the last early one (``None``,
            the default: every candidate, exact, within :data:`~s2dnas.dynamic.optimise.EXACT_CELLS`).
        stage_cost: ``(costs, unit)`` from a cost hook (``S`` costs per input, ``>= 0``): minimise
            that instead of MACs; ``None`` (default) minimises ``stage_macs``.
        cost_budget: budget mode with ``stage_cost``: expected cost per input in its unit not to exceed.
        warn: log a missed target or budget as a warning (``False``: at INFO, e.g. for the search's
            candidates, where a miss is an ordinary outcome that the reward records).

    Returns:
        The :class:`Calibration` (its ``.policy`` is the :class:`~s2dnas_runtime.ExitPolicy`). When nothing meets the target it is the most accurate setting,
        when nothing fits the budget the cheapest one, with ``feasible=False`` (and a warning).

    Raises:
        CalibrationError: both or neither mode, bad values, a split name or a loader given where it
            does not belong.
        ConfigError: unknown confidence measure.
    """
    validate_measure(confidence)
    stage_logits, stage_macs = _resolve_inputs(msnet_or_stage_logits, loader, stage_macs=stage_macs, device=device)
    costs, unit = _resolve_cost(stage_cost, stage_macs=stage_macs)
    if cost_budget is not None and unit == "macs" and stage_cost is None:
        raise CalibrationError("Expected `stage_cost=(costs, unit)` with `cost_budget` (the budget is in that "
                               "cost's unit), but got none; pass macs_budget for a MACs budget")
    if macs_budget is not None and cost_budget is not None:
        raise CalibrationError("Expected one budget, but got both macs_budget and cost_budget; pass one of them")
    if macs_budget is not None and unit != "macs":
        raise CalibrationError(f"Expected `cost_budget` (in {unit} per input) with a {unit} stage cost, but got "
                               "macs_budget; the thresholds minimise the stage cost given")
    budget = macs_budget if cost_budget is None else cost_budget
    mode, target = _resolve_mode(target_accuracy=target_accuracy, macs_budget=budget, base_accuracy=base_accuracy,
                                 tolerance=tolerance, budget_name=None if cost_budget is None else "cost_budget")
    if grid is not None and (not isinstance(grid, int) or isinstance(grid, bool) or grid < 2):
        raise CalibrationError(f"Expected `grid` to be None or an integer >= 2, but got {grid!r}")
    scorer = _Scorer(stage_logits, stage_macs, confidence)
    n = scorer.n
    # one optimiser for every stage count, given the per-stage cost vector (MACs or e.g. ms)
    found = optimise_thresholds(
        scorer.conf.numpy(), scorer.correct.numpy(), costs,
        min_correct=None if target is None else target * n - 1e-9,
        max_cost=None if budget is None else float(budget) * n * (1 + 1e-12) + 1e-6, grid=grid)
    thresholds = found.thresholds
    point = evaluate_dynamic(stage_logits, ExitPolicy(thresholds=thresholds, confidence=confidence),
                             stage_macs=stage_macs)
    reach = np.cumsum([n] + [-c for c in point["exit_counts"][:-1]])  # inputs reaching each stage
    assert point["num_correct"] == found.correct and math.isclose(
        float(np.dot(reach, costs)), found.cost, rel_tol=1e-9, abs_tol=1e-6), \
        "the optimiser and the scorer must agree on the chosen setting"
    feasible = found.feasible
    front_macs = [0] * len(found.front)
    if unit == "macs":
        front_macs = [c for c, _, _ in found.front]
    elif found.front:  # the front is over the other cost: count each point's MACs too
        front_macs = scorer.score(torch.tensor([t for _, _, t in found.front], dtype=torch.float32))[2].tolist()
    curve = [CurvePoint(expected_macs=m / n, accuracy=k / n, thresholds=t,
                        expected_cost=None if unit == "macs" else c / n)
             for m, (c, k, t) in zip(front_macs, found.front)]
    what = "MACs" if unit == "macs" else f"{unit} (expected cost)"
    if mode == "target":
        goal = f"accuracy >= {target:.4f}"
        fallback = "the most accurate setting"
    else:
        goal = f"expected {what} <= {float(budget):.6g}"
        fallback = "the cheapest setting"
    spent = "" if unit == "macs" else f", {found.cost / n:.6g} {unit}"
    message = (f"{'Met' if feasible else 'No threshold setting meets'} {goal} on {n} calibration inputs"
               + ("" if feasible else f"; returned {fallback}") +
               f": accuracy {point['accuracy']:.4f}, {point['expected_macs']:.6g} MACs per input{spent}")
    _logger.log(logging.WARNING if warn and not feasible else logging.INFO, "%s", message)
    return Calibration(
        thresholds=thresholds, confidence=confidence, accuracy=point["accuracy"],
        expected_macs=point["expected_macs"], exit_fractions=tuple(point["exit_fractions"]), feasible=feasible,
        target_accuracy=target, macs_budget=None if macs_budget is None else float(macs_budget),
        stage_macs=tuple(int(m) for m in stage_macs), num_examples=n, curve=tuple(curve), message=message,
        exact=found.exact, stage_cost=() if unit == "macs" else tuple(costs), cost_unit=unit,
        expected_cost=found.cost / n, cost_budget=None if cost_budget is None else float(cost_budget),
    )


# -- internals ----------------------------------------------------------------------------------
def _resolve_inputs(source: Any, loader: Any, *, stage_macs: Sequence[int] | None,
                    device: torch.device | str | None) -> tuple[StageLogits, list[int]]:
    if isinstance(loader, (str, bytes)) or isinstance(source, (str, bytes)):
        raise CalibrationError(
            f"Expected a DataLoader over the validation split, but got the string {loader if loader else source!r}; "
            "calibrate takes data, never a split name: pass make_loader(splits.val, ...)"
        )
    if isinstance(source, StageLogits):
        if loader is not None:
            raise CalibrationError(
                "Expected no loader with cached StageLogits, but got one; pass either a network and a loader "
                "or StageLogits alone"
            )
        if stage_macs is None:
            raise CalibrationError(
                "Expected `stage_macs` with cached StageLogits, but got None; pass stage_macs=msnet.stage_macs()"
            )
        return source, [int(m) for m in stage_macs]
    if isinstance(source, MultiStageNet):
        if loader is None:
            raise CalibrationError(
                "Expected a validation loader with a MultiStageNet, but got None; pass make_loader(splits.val, ...)"
            )
        macs = [int(m) for m in (source.stage_macs() if stage_macs is None else stage_macs)]
        return collect_logits(source, loader, device=device), macs
    raise CalibrationError(
        f"Expected a MultiStageNet or StageLogits, but got {type(source).__name__}; pass the network built by "
        "Space.build or the output of collect_logits"
    )


def _resolve_cost(stage_cost: Any, *, stage_macs: Sequence[int]) -> tuple[list[float], str]:
    """The per-stage cost vector the optimiser minimises and its unit (default: the MACs)."""
    if stage_cost is None:
        return [float(m) for m in stage_macs], "macs"
    try:
        costs, unit = stage_cost
        costs = [float(c) for c in costs]
    except (TypeError, ValueError):
        raise CalibrationError(f"Expected `stage_cost` to be (costs, unit), the output of a stage-cost hook, but "
                               f"got {stage_cost!r}") from None
    if len(costs) != len(stage_macs) or not all(math.isfinite(c) and c >= 0 for c in costs):
        raise CalibrationError(f"Expected {len(stage_macs)} per-stage costs, finite and >= 0, but got {costs}")
    if not isinstance(unit, str) or not unit:
        raise CalibrationError(f"Expected the stage cost's unit to be a non-empty string, but got {unit!r}")
    return costs, unit


def _resolve_mode(*, target_accuracy: float | None, macs_budget: float | None, base_accuracy: float | None,
                  tolerance: float, budget_name: str | None = None) -> tuple[str, float | None]:
    name = "macs_budget" if budget_name is None else budget_name
    if macs_budget is not None and (target_accuracy is not None or base_accuracy is not None):
        raise CalibrationError(
            "Expected exactly one mode, but got both a budget and an accuracy target; pass either "
            f"{name} or target_accuracy/base_accuracy"
        )
    if macs_budget is not None:
        if not isinstance(macs_budget, (int, float)) or math.isnan(macs_budget) or macs_budget <= 0:
            unit = "MACs" if budget_name is None else "the stage cost's unit"
            raise CalibrationError(f"Expected `{name}` > 0 ({unit} per input), but got {macs_budget!r}")
        return "budget", None
    if target_accuracy is None:
        if base_accuracy is None:
            raise CalibrationError(
                "Expected target_accuracy, base_accuracy or macs_budget, but got none; pass the base model's "
                "validation accuracy as base_accuracy (the default target is base_accuracy - tolerance)"
            )
        if not 0.0 <= float(base_accuracy) <= 1.0 or not 0.0 <= float(tolerance) <= 1.0:
            raise CalibrationError(
                f"Expected base_accuracy and tolerance in [0, 1], but got {base_accuracy!r} and {tolerance!r}"
            )
        target_accuracy = max(0.0, float(base_accuracy) - float(tolerance))
    if not isinstance(target_accuracy, (int, float)) or not 0.0 <= float(target_accuracy) <= 1.0:
        raise CalibrationError(
            f"Expected `target_accuracy` in [0, 1] (a fraction, not a percentage), but got {target_accuracy!r}"
        )
    return "target", float(target_accuracy)
