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
cost-agnostic: it is given a per-stage cost vector (here the MACs).

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
_POLICY_FIELDS = ("format", "thresholds", "confidence", "stage_macs")  # in the policy, not its record


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
    """One point of the accuracy-vs-MACs curve: a threshold setting and how it scores."""

    expected_macs: float
    accuracy: float
    thresholds: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return {"expected_macs": self.expected_macs, "accuracy": self.accuracy, "thresholds": list(self.thresholds)}

    @classmethod
    def from_dict(cls, data: Any) -> CurvePoint:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(expected_macs=float(data["expected_macs"]), accuracy=float(data["accuracy"]),
                       thresholds=tuple(float(t) for t in data["thresholds"]))
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
        curve: the Pareto front (fewest MACs for each accuracy) over every setting scored,
            sorted by MACs.
        message: a one-line summary (says what was returned when infeasible).
        exact: True when the optimiser scored every candidate threshold combination.

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

    @property
    def policy(self) -> ExitPolicy:
        """The exit policy: these thresholds, measure and per-stage MACs, with this record."""
        record = {k: v for k, v in self.to_dict().items() if k not in _POLICY_FIELDS}
        return ExitPolicy(thresholds=self.thresholds, confidence=self.confidence,
                          stage_cost=self.stage_macs or None, cost_unit="macs", calibration=record)

    @classmethod
    def from_policy(cls, policy: ExitPolicy) -> Calibration | None:
        """The calibration a policy records (``None`` when it has no record).

        Raises:
            CalibrationError: the record is malformed.
        """
        if policy.calibration is None:
            return None
        return cls.from_dict({**policy.calibration, "thresholds": list(policy.thresholds),
                              "confidence": policy.confidence,
                              "stage_macs": list(policy.stage_cost) if policy.cost_unit == "macs" and
                              policy.stage_cost is not None else []})

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        return {
            "format": _FORMAT, "thresholds": list(self.thresholds), "confidence": self.confidence,
            "accuracy": self.accuracy, "expected_macs": self.expected_macs,
            "exit_fractions": list(self.exit_fractions), "feasible": self.feasible,
            "target_accuracy": self.target_accuracy, "macs_budget": self.macs_budget,
            "stage_macs": list(self.stage_macs), "num_examples": self.num_examples,
            "curve": [p.to_dict() for p in self.curve], "message": self.message, "exact": self.exact,
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
              grid: int | None = None) -> Calibration:
    """Choose the thresholds on the validation data (never the test split).

    Exactly one mode: **target** (``target_accuracy``, or ``base_accuracy - tolerance`` when only
    ``base_accuracy`` is given) picks the fewest expected MACs with accuracy ``>=`` the target;
    **budget** (``macs_budget``) picks the best accuracy with expected MACs ``<=`` the budget.
    Ties go to the higher accuracy (target mode) or the fewer MACs (budget mode).

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
    mode, target = _resolve_mode(target_accuracy=target_accuracy, macs_budget=macs_budget,
                                 base_accuracy=base_accuracy, tolerance=tolerance)
    if grid is not None and (not isinstance(grid, int) or isinstance(grid, bool) or grid < 2):
        raise CalibrationError(f"Expected `grid` to be None or an integer >= 2, but got {grid!r}")
    scorer = _Scorer(stage_logits, stage_macs, confidence)
    n = scorer.n
    # one optimiser for every stage count, given the per-stage cost vector (here: MACs)
    found = optimise_thresholds(
        scorer.conf.numpy(), scorer.correct.numpy(), [float(m) for m in stage_macs],
        min_correct=None if target is None else target * n - 1e-9,
        max_cost=None if macs_budget is None else float(macs_budget) * n + 1e-6, grid=grid)
    thresholds = found.thresholds
    point = evaluate_dynamic(stage_logits, ExitPolicy(thresholds=thresholds, confidence=confidence),
                             stage_macs=stage_macs)
    assert point["num_correct"] == found.correct and point["total_macs"] == round(found.cost), \
        "the optimiser and the scorer must agree on the chosen setting"
    feasible = found.feasible
    curve = [CurvePoint(expected_macs=c / n, accuracy=k / n, thresholds=t) for c, k, t in found.front]
    if mode == "target":
        goal = f"accuracy >= {target:.4f}"
        fallback = "the most accurate setting"
    else:
        goal = f"expected MACs <= {float(macs_budget):.6g}"
        fallback = "the cheapest setting"
    message = (f"{'Met' if feasible else 'No threshold setting meets'} {goal} on {n} calibration inputs"
               + ("" if feasible else f"; returned {fallback}") +
               f": accuracy {point['accuracy']:.4f}, {point['expected_macs']:.6g} MACs per input")
    if feasible:
        _logger.info("%s", message)
    else:
        _logger.warning("%s", message)
    return Calibration(
        thresholds=thresholds, confidence=confidence, accuracy=point["accuracy"],
        expected_macs=point["expected_macs"], exit_fractions=tuple(point["exit_fractions"]), feasible=feasible,
        target_accuracy=target, macs_budget=None if macs_budget is None else float(macs_budget),
        stage_macs=tuple(int(m) for m in stage_macs), num_examples=n, curve=tuple(curve), message=message,
        exact=found.exact,
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


def _resolve_mode(*, target_accuracy: float | None, macs_budget: float | None, base_accuracy: float | None,
                  tolerance: float) -> tuple[str, float | None]:
    if macs_budget is not None and (target_accuracy is not None or base_accuracy is not None):
        raise CalibrationError(
            "Expected exactly one mode, but got both a MACs budget and an accuracy target; pass either "
            "macs_budget or target_accuracy/base_accuracy"
        )
    if macs_budget is not None:
        if not isinstance(macs_budget, (int, float)) or math.isnan(macs_budget) or macs_budget <= 0:
            raise CalibrationError(f"Expected `macs_budget` > 0 (MACs per input), but got {macs_budget!r}")
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
