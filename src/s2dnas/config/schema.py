"""Typed configuration of the pipeline: one frozen dataclass per step, nested in :class:`RunConfig`.

Every dataclass has ``validate() -> list[str]``, which returns *every* problem with its dotted
path (``"search.budget must be >= 1, got 0"``) instead of stopping at the first one; constructing
a config never raises, so a whole file can be checked at once. Fields left ``None`` where the
docstring says "None = ..." are filled from other fields by
:func:`s2dnas.config.resolve_config` (the loader does it), so a dumped config holds the values
that actually ran.

Example:
    >>> cfg = RunConfig(search=SearchConfig(budget=0), train=TrainConfig(lr=-1.0))
    >>> cfg.validate()
    ['train.lr must be > 0, got -1.0', 'search.budget must be >= 1, got 0']
"""
from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from s2dnas_runtime.policy import CONFIDENCE_MEASURES

__all__ = [
    "DataConfig",
    "ModelConfig",
    "SpaceConfig",
    "TrainConfig",
    "CalibrationConfig",
    "SearchConfig",
    "SupernetConfig",
    "RunConfig",
    "SECTIONS",
    "REMOVED_KEYS",
    "DEFAULT_BUDGETS",
    "FINAL_INITS",
    "CONFIDENCES",
    "CALIBRATION_COSTS",
    "STRATEGIES",
    "CONTROLLERS",
    "REWARDS",
    "IMPORTANCES",
    "check_types",
    "conform",
    "searches_at_random",
]

#: calibration.confidence choices: the runtime's one list (the exit rule is defined there).
CONFIDENCES = CONFIDENCE_MEASURES
STRATEGIES = ("rl", "random", "oneshot")
CONTROLLERS = ("lstm", "factorized", "random")
FINAL_INITS = ("supernet", "inherited")
#: ``search.supernet`` value naming the super-network shipped for the shipped base weights
SHIPPED_SUPERNET = "shipped"


def searches_at_random(*, strategy: str | None, controller: str | None) -> bool:
    """Whether a search of this ``strategy`` and ``controller`` samples architectures uniformly at
    random (``strategy: random``, or any strategy with ``controller: random``): the one rule for
    the runner (which controller to build) and for reports (a random search is a control, not ours)."""
    return strategy == "random" or controller == "random"


#: search.budget by strategy when the config leaves it null: a candidate scored from the trained
#: super-network costs seconds, one trained briefly from inherited weights about a minute.
DEFAULT_BUDGETS = {"oneshot": 200, "rl": 20, "random": 20}
#: Keys that no longer exist -> the one line a config that still sets them gets.
REMOVED_KEYS = {
    "search.target": "search.target was removed: candidates are scored at the run's calibration target "
                     "(base val accuracy minus calibration.tolerance, calibration.target_accuracy or "
                     "calibration.macs_budget), the same one the final network is calibrated to; delete the key",
    "search.supernet_epochs": "search.supernet_epochs was removed: the super-network recipe is the `supernet` "
                              "section; use supernet.epochs",
}
REWARDS = ("macs_saving", "accuracy_in_budget", "tradeoff")
TARGETS_FROM = ("run", "reference")
CALIBRATION_COSTS = ("macs", "latency")
IMPORTANCES = ("bn", "l1", "none")
_BUILTIN_DATASETS = ("fashion-mnist", "cifar10", "cifar100")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_GROUPS_RE = re.compile(r"^resolution(:[1-9]\d*)?$")


# -- type checking ------------------------------------------------------------------------------
def _describe(hint: Any) -> str:
    """Human name of a type hint: ``int``, ``float``, ``list of float``, ``int or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a) for a in rest) + " or null"
    if origin is tuple:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(args[0], str(args[0]))
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural}"
        return f"a list of {len(args)} {plural}"
    if is_dataclass(hint):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """Return ``(True, converted)`` if ``value`` fits ``hint``, else ``(False, None)``.

    Conversions: an int where a float is expected becomes a float; a list becomes a tuple; a
    string that spells a number (``"1e-3"``, which YAML 1.1 leaves a string) is accepted where a
    float is expected. Booleans are never numbers and numbers never strings.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if args and type(None) in args and origin is not tuple:
        if value is None:
            return True, None
        rest = [a for a in args if a is not type(None)]
        for arm in rest:
            ok, out = conform(value, arm)
            if ok:
                return True, out
        return False, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, (int, float)):
            return math.isfinite(value), float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return True, float(value)
        return False, None
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, None
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return False, None
        out = []
        for item, arm in zip(value, items):
            ok, conv = conform(item, arm)
            if not ok:
                return False, None
            out.append(conv)
        return True, tuple(out)
    return True, value  # nested dataclasses are checked by the loader


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_types(obj: Any) -> tuple[list[str], set[str]]:
    """Type-check the scalar fields of one config dataclass (not nested sections).

    Returns:
        The problems (``"<path> must be <type>, got <value>"``) and the names of well-typed fields.
    """
    problems, ok = [], set()
    hints = _hints(type(obj))
    for f in fields(obj):
        hint = hints[f.name]
        if is_dataclass(hint):
            continue
        value = getattr(obj, f.name)
        good, _ = conform(value, hint)
        if good:
            ok.add(f.name)
        else:
            problems.append(f"{_path(obj, f.name)} must be {_describe(hint)}, got {value!r}")
    return problems, ok


def _path(obj: Any, name: str) -> str:
    prefix = getattr(obj, "_SECTION", "")
    return f"{prefix}.{name}" if prefix else name


class _Checker:
    """Range checks over the well-typed fields of one config (ill-typed ones are already reported)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.problems, self.ok = check_types(obj)

    def _get(self, name: str) -> tuple[bool, Any]:
        return name in self.ok, getattr(self.obj, name)

    def add(self, name: str, message: str) -> None:
        self.problems.append(f"{_path(self.obj, name)} {message}")

    def at_least(self, name: str, low: float, *, optional: bool = False) -> None:
        good, v = self._get(name)
        if good and not (optional and v is None) and v < low:
            self.add(name, f"must be >= {low}, got {v}")

    def positive(self, name: str, *, optional: bool = False) -> None:
        good, v = self._get(name)
        if good and not (optional and v is None) and not v > 0:
            self.add(name, f"must be > 0, got {v}")

    def in_range(self, name: str, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False, optional: bool = False) -> None:
        good, v = self._get(name)
        if not good or (optional and v is None):
            return
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        if not (above and below):
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            self.add(name, f"must be in {interval}, got {v}")

    def one_of(self, name: str, options: tuple[str, ...]) -> None:
        good, v = self._get(name)
        if good and v not in options:
            self.add(name, f"must be one of {', '.join(options)}; got {v!r}")

    def matches(self, name: str, pattern: re.Pattern[str], expected: str) -> None:
        good, v = self._get(name)
        if good and not pattern.match(v):
            self.add(name, f"must be {expected}, got {v!r}")


# -- sections -----------------------------------------------------------------------------------

def _check_recipe(c: _Checker) -> None:
    """The checks of a multi-stage training recipe (final training and super-network alike)."""
    c.at_least("epochs", 1)
    c.positive("lr")
    c.in_range("momentum", 0.0, 1.0, high_open=True)
    c.at_least("weight_decay", 0.0)
    c.at_least("warmup_epochs", 0.0)
    c.at_least("batch_size", 1, optional=True)
    good, weights = c._get("stage_weights")
    if good and weights is not None:
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            c.add("stage_weights", f"must be one number >= 0 per stage with a positive sum, got {list(weights)}")
    c.at_least("distill_weight", 0.0)
    c.positive("temperature")
    c.at_least("seed", 0, optional=True)
    c.at_least("limit_train", 1, optional=True)

@dataclass(frozen=True)
class DataConfig:
    """Dataset, its validation split, and loader batch sizes.

    Attributes:
        dataset: ``fashion-mnist``, ``cifar10``, ``cifar100`` or ``imagefolder:<root>``.
        data_dir: folder holding the dataset files (None: ``$S2DNAS_DATA``, then the usual places).
        val_size: images held out of the training set for validation (thresholds, rewards); None: the
            base model's (stored by train-base), else 10% of train, at most 5000.
        seed: seed of the train/val cut.
        batch_size: training batch size of every step that does not set its own.
        eval_batch_size: batch size of evaluation passes (val, test, calibration).
    """

    _SECTION: ClassVar[str] = "data"

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_size: int | None = None
    seed: int = 0
    batch_size: int = 128
    eval_batch_size: int = 512

    def validate(self) -> list[str]:
        """Return every problem of this section (empty when valid)."""
        c = _Checker(self)
        good, name = c._get("dataset")
        if good and not (name in _BUILTIN_DATASETS or (name.startswith("imagefolder:") and len(name) > 12)):
            c.add("dataset", f"must be one of {', '.join(_BUILTIN_DATASETS)} or imagefolder:<root>; got {name!r}")
        c.at_least("val_size", 1, optional=True)
        c.at_least("seed", 0)
        c.at_least("batch_size", 1)
        c.at_least("eval_batch_size", 1)
        return c.problems


@dataclass(frozen=True)
class ModelConfig:
    """The trained base model.

    Attributes:
        name: zoo name (``resnet20``), ``torchvision:<name>`` or ``package.module:factory``.
        pretrained: load the weights shipped with s2dnas for this model, dataset shape and class
            count (ignored when ``weights`` is set).
        weights: path of a ``model.safetensors`` written by ``s2dnas train-base`` (takes
            precedence over ``pretrained``).
        input_shape: ``[C, H, W]`` of one input; None = taken from the dataset. ``space`` builds
            at this shape; ``train``, ``run`` and ``supernet`` refuse it unless it is the shape of
            the base model's data (images are resized by ``--input-size`` at ``train-base``).
    """

    _SECTION: ClassVar[str] = "model"

    name: str = "resnet20"
    pretrained: bool = True
    weights: str | None = None
    input_shape: tuple[int, int, int] | None = None

    def validate(self) -> list[str]:
        """Return every problem of this section (empty when valid)."""
        c = _Checker(self)
        good, name = c._get("name")
        if good and not name.strip():
            c.add("name", "must be a model name, got an empty string")
        good, weights = c._get("weights")
        if good and weights is not None and not weights.strip():
            c.add("weights", "must be a path or null, got an empty string")
        good, shape = c._get("input_shape")
        if good and shape is not None and min(shape) < 1:
            c.add("input_shape", f"must be [C, H, W] of positive integers, got {list(shape)}")
        return c.problems


@dataclass(frozen=True)
class SpaceConfig:
    """The split/concat space (METHOD.md "Split", "Concat").

    Attributes:
        num_stages: S, the number of stages.
        ratio_grid: q; split sizes are multiples of 1/q of a group's channels (q >= S).
        groups: ``resolution`` (one split decision per spatial resolution) or ``resolution:N``
            (each resolution cut into N groups).
        importance: channel order before cutting: ``bn`` (|BN gamma|), ``l1`` (filter L1 norm)
            or ``none``.
        channel_multiple: every stage's slice is a multiple of this many channels (the smallest
            slice); 8 by measurement (docs/design.md "Granularity"); 1 is METHOD.md's grid.
    """

    _SECTION: ClassVar[str] = "space"

    num_stages: int = 3
    ratio_grid: int = 8
    groups: str = "resolution"
    importance: str = "bn"
    channel_multiple: int = 8

    def validate(self) -> list[str]:
        """Return every problem of this section (empty when valid)."""
        c = _Checker(self)
        c.at_least("num_stages", 1)
        c.at_least("channel_multiple", 1)
        good_s, stages = c._get("num_stages")
        good_q, grid = c._get("ratio_grid")
        if good_q and good_s and stages >= 1 and grid < stages:
            c.add("ratio_grid", f"must be >= space.num_stages ({stages}), got {grid}")
        elif good_q and grid < 1:
            c.add("ratio_grid", f"must be >= 1, got {grid}")
        c.matches("groups", _GROUPS_RE, "'resolution' or 'resolution:N' with N >= 1")
        c.one_of("importance", IMPORTANCES)
        return c.problems


@dataclass(frozen=True)
class TrainConfig:
    """Multi-stage training (METHOD.md "Final training"): per-stage CE + distillation from the base.

    Attributes:
        epochs: epochs of ``s2dnas train`` (and of final training unless ``final_epochs`` is set).
        lr: peak learning rate of SGD (linear warm-up, then cosine decay to zero).
        momentum: SGD momentum (Nesterov when > 0).
        weight_decay: L2 on conv/linear weights (not on BN or biases).
        batch_size: None = ``data.batch_size``.
        stage_weights: w_s of each stage's loss terms; None = all 1.0, else S numbers.
        distill_weight: alpha, the weight of the distillation terms (0 = plain CE).
        temperature: T of the distillation softmax.
        warmup_epochs: epochs of linear learning-rate warm-up (fractions allowed).
        seed: seed of shuffling and augmentation; None = the run's ``seed``.
        channels_last: run in channels-last memory format.
        limit_train: train on the first N training examples only (None = all).
    """

    _SECTION: ClassVar[str] = "train"

    epochs: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int | None = None
    stage_weights: tuple[float, ...] | None = None
    distill_weight: float = 1.0
    temperature: float = 4.0
    warmup_epochs: float = 0.0
    seed: int | None = None
    channels_last: bool = False
    limit_train: int | None = None

    def validate(self) -> list[str]:
        """Return every problem of this section (empty when valid)."""
        c = _Checker(self)
        _check_recipe(c)
        return c.problems


@dataclass(frozen=True)
class CalibrationConfig:
    """Threshold calibration on the validation split (METHOD.md "Dynamic inference").

    Attributes:
        confidence: ``max_softmax``, ``entropy`` or ``margin``.
        target_accuracy: fewest expected MACs at val accuracy >= this; None = the base model's
            val accuracy minus ``tolerance``.
        tolerance: slack below the base model's accuracy when ``target_accuracy`` is None.
        macs_budget: instead, the best accuracy at expected MACs <= this fraction of the base
            model's MACs (exclusive with ``target_accuracy``; needs ``cost: macs``).
        cost: what the thresholds minimise (and the search's reward counts): ``macs`` or
            ``latency`` (per-stage seconds measured on the run's device at ``latency_batch``,
            cached per machine; MACs are reported too).
        latency_budget: with ``cost: latency``, instead of an accuracy target, the best accuracy
            at expected latency <= this fraction of the base model's measured latency
            (exclusive with ``target_accuracy``).
        latency_batch: the deployment batch size the stages are timed at (1: an input's latency
            is then exactly the sum of the stages it runs; docs/design.md "Latency calibration").
    """

    _SECTION: ClassVar[str] = "calibration"

    confidence: str = "max_softmax"
    target_accuracy: float | None = None
    tolerance: float = 0.001
    macs_budget: float | None = None
    cost: str = "macs"
    latency_budget: float | None = None
    latency_batch: int = 1

    def validate(self) -> list[str]:
        """Return every problem of this section (empty when valid)."""
        c = _Checker(self)
        c.one_of("confidence", CONFIDENCES)
        c.in_range("target_accuracy", 0.0, 1.0, low_open=True, optional=True)
        c.in_range("tolerance", 0.0, 1.0, high_open=True)
        c.in_range("macs_budget", 0.0, 1.0, low_open=True, optional=True)
        c.one_of("cost", CALIBRATION_COSTS)
        c.in_range("latency_budget", 0.0, 1.0, low_open=True, optional=True)
        c.at_least("latency_batch", 1)
        if {"target_accuracy", "macs_budget"} <= c.ok and None not in (self.target_accuracy, self.macs_budget):
            c.add("macs_budget", "and calibration.target_accuracy are exclusive; set one of them to null")
        if {"target_accuracy", "latency_budget"} <= c.ok and None not in (self.target_accuracy, self.latency_budget):
            c.add("latency_budget", "and calibration.target_accuracy are exclusive; set one of them to null")
        if {"cost", "macs_budget"} <= c.ok and self.cost == "latency" and self.macs_budget is not None:
            c.add("macs_budget", "is a MACs budget, but calibration.cost is latency; set calibration.latency_budget "
                                 "(a fraction of the base model's measured latency) instead")
        if {"cost", "latency_budget"} <= c.ok and self.cost == "macs" and self.latency_budget is not None:
            c.add("latency_budget", "needs calibration.cost: latency (the thresholds then minimise measured "
                                    "latency); set it, or use calibration.macs_budget")
        return c.problems


@dataclass(frozen=True)
class SearchConfig:
    """Architecture search (METHOD.md "Search").

    Attributes:
        strategy: ``oneshot`` (candidates scored from the super-network trained once, see the
            ``supernet`` section), ``rl`` (candidates trained briefly), both searched by the
            ``controller`` (REINFORCE by default), or ``random`` (random search over briefly
            trained candidates).
        budget: number of candidates evaluated; None = 200 for ``oneshot`` (a candidate costs
            seconds), 20 for ``rl``/``random`` (a candidate is trained briefly).
        controller: ``lstm`` (REINFORCE, decisions emitted in turn), ``factorized`` (REINFORCE,
            independent decisions) or ``random`` (distinct uniform samples: with ``oneshot``,
            random search over the super-network's scores, the control for its controller;
            ``strategy: random`` is ``rl`` with this controller; the REINFORCE settings below
            are then unused).
        candidate_epochs: epochs of each candidate's brief training (``rl``, ``random``).
        candidate_limit_train: training examples per candidate epoch (None = all).
        reward: ``macs_saving`` (base MACs / expected MACs at the accuracy target),
            ``accuracy_in_budget`` (needs ``calibration.macs_budget``) or ``tradeoff``.
        target_from: the accuracy target the candidates are scored at: ``run`` (the run's, as the
            final calibration's) or ``reference`` (the run's, moved by how far the space's most
            expensive architecture, scored like a candidate, is from the base: what the scorer can
            reach, METHOD.md's "a target relative to what brief training can reach"; needs an
            accuracy target). The final network is calibrated at the run's target either way.
        tradeoff_weight: weight of the MAC term of the ``tradeoff`` reward.
        seed: seed of the controller; None = the run's ``seed``.
        max_invalid: stop after this many invalid or failed candidates in a row.
        supernet: directory of a trained super-network (``s2dnas supernet --out DIR``) to score
            candidates with instead of training one (None: ``s2dnas run`` trains it first);
            ``shipped``: the one shipped with s2dnas for the shipped base weights (the demo's).
        bn_batches: training batches every candidate's batch-norm statistics are re-estimated
            on before it is scored.
        controller_lr: Adam learning rate of the controller (None = its default).
        entropy_weight: weight of the controller's entropy bonus.
        baseline_decay: decay of the moving-average reward baseline.
        normalize_advantage: divide the controller's advantages by their running spread, so
            that the entropy bonus weighs the same whatever the reward's units (accuracy gaps of
            ~0.01 below the target, MAC savings above it).
    """

    _SECTION: ClassVar[str] = "search"

    strategy: str = "rl"
    budget: int | None = None
    controller: str = "lstm"
    candidate_epochs: int = 1
    candidate_limit_train: int | None = None
    reward: str = "macs_saving"
    target_from: str = "run"
    tradeoff_weight: float = 0.5
    seed: int | None = None
    max_invalid: int = 5
    supernet: str | None = None
    bn_batches: int = 8
    controller_lr: float | None = None
    entropy_weight: float = 1e-3
    baseline_decay: float = 0.9
    normalize_advantage: bool = False

    @property
    def at_random(self) -> bool:
        """True when architectures are sampled at random rather than by REINFORCE (:func:`searches_at_random`)."""
        return searches_at_random(strategy=self.strategy, controller=self.controller)

    def validate(self) -> list[str]:
        """Return every problem of this section (empty when valid)."""
        c = _Checker(self)
        c.one_of("strategy", STRATEGIES)
        c.at_least("budget", 1, optional=True)
        c.one_of("controller", CONTROLLERS)
        c.at_least("candidate_epochs", 1)
        c.at_least("candidate_limit_train", 1, optional=True)
        c.one_of("reward", REWARDS)
        c.one_of("target_from", TARGETS_FROM)
        c.at_least("tradeoff_weight", 0.0)
        c.at_least("seed", 0, optional=True)
        c.at_least("max_invalid", 1)
        good, path = c._get("supernet")
        if good and path is not None and not path.strip():
            c.add("supernet", "must be the directory of a trained super-network or null, got an empty string")
        c.at_least("bn_batches", 1)
        c.positive("controller_lr", optional=True)
        c.at_least("entropy_weight", 0.0)
        c.in_range("baseline_decay", 0.0, 1.0, high_open=True)
        return c.problems


@dataclass(frozen=True)
class SupernetConfig:
    """The super-network, trained once (issue 12; BigNAS, slimmable networks): every step trains
    the most expensive and the cheapest architecture of the space and ``num_sampled`` uniform
    samples on the same batch, with distillation from the base model.

    Attributes:
        epochs: passes over the (limited) training set; the learning-rate schedule spans them.
        lr: peak SGD learning rate (linear warm-up, then cosine decay to zero).
        momentum: SGD momentum (Nesterov when > 0).
        weight_decay: L2 on conv/linear weights (not on BN or biases).
        warmup_epochs: epochs of linear warm-up (fractions allowed).
        batch_size: images per step (every architecture of the step sees the same batch);
            None = ``data.batch_size``.
        num_sampled: N, architectures sampled uniformly per step besides the two extremes.
        stage_weights: w_s of each stage's loss terms; None = all 1.0, else S numbers.
        distill_weight: weight of the distillation from the base model (0 = none).
        temperature: T of every distillation softmax.
        inplace_distill: weight of the distillation of every other architecture of the step from
            the most expensive one's last stage (0 = off).
        limit_train: train on the first N training examples only (None = all).
        seed: seed of shuffling, augmentation and the sampled architectures; None = the run's ``seed``.
    """

    _SECTION: ClassVar[str] = "supernet"

    epochs: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    batch_size: int | None = None
    num_sampled: int = 2
    stage_weights: tuple[float, ...] | None = None
    distill_weight: float = 1.0
    temperature: float = 4.0
    inplace_distill: float = 0.0
    limit_train: int | None = None
    seed: int | None = None

    def validate(self) -> list[str]:
        """Return every problem of this section (empty when valid)."""
        c = _Checker(self)
        _check_recipe(c)
        c.at_least("num_sampled", 0)
        c.at_least("inplace_distill", 0.0)
        return c.problems


@dataclass(frozen=True)
class RunConfig:
    """The whole pipeline of ``s2dnas run``: base model -> search -> final training -> calibration.

    Attributes:
        out: run directory (``--out``); None in the library.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of every step whose own ``seed`` is None.
        final_epochs: epochs of the chosen architecture's final training; None = ``train.epochs``.
        final_init: weights the final training starts from: ``supernet`` (the chosen
            architecture extracted from the super-network, its per-stage heads included) or
            ``inherited`` (sliced from the base model); None = ``supernet`` for the ``oneshot``
            strategy, ``inherited`` otherwise.
        data, model, space, train, calibration, search, supernet: the steps' sections.
    """

    _SECTION: ClassVar[str] = ""

    out: str | None = None
    device: str = "auto"
    seed: int = 0
    final_epochs: int | None = None
    final_init: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)

    @property
    def needs_supernet(self) -> bool:
        """True when the run scores candidates from a super-network or starts the final training from one."""
        return self.search.strategy == "oneshot" or self.final_init == "supernet"

    def validate(self) -> list[str]:
        """Return every problem of the run and its sections, including cross-section ones."""
        c = _Checker(self)
        c.matches("device", _DEVICE_RE, "auto, cpu, cuda or cuda:N")
        c.at_least("seed", 0)
        c.at_least("final_epochs", 1, optional=True)
        good, init = c._get("final_init")
        if good and init is not None and init not in FINAL_INITS:
            c.add("final_init", f"must be one of {', '.join(FINAL_INITS)} or null; got {init!r}")
        problems = c.problems
        sections = {name: getattr(self, name) for name in SECTIONS}
        for name, section in sections.items():
            if not isinstance(section, SECTIONS[name]):
                problems.append(f"{name} must be a {SECTIONS[name].__name__}, got {type(section).__name__}")
                return problems
            problems += section.validate()
        # Cross-section checks, only where both sides are well typed.
        weights, stages = self.train.stage_weights, self.space.num_stages
        if (isinstance(weights, tuple) and isinstance(stages, int) and not isinstance(stages, bool)
                and weights and len(weights) != stages):
            problems.append(f"train.stage_weights must have one number per stage (space.num_stages={stages}), "
                            f"got {len(weights)}: {list(weights)}")
        weights = self.supernet.stage_weights
        if (isinstance(weights, tuple) and isinstance(stages, int) and not isinstance(stages, bool)
                and weights and len(weights) != stages):
            problems.append(f"supernet.stage_weights must have one number per stage (space.num_stages={stages}), "
                            f"got {len(weights)}: {list(weights)}")
        if self.search.supernet is not None and self.final_init is not None and not self.needs_supernet:
            problems.append("search.supernet is set, but neither search.strategy=oneshot nor final_init=supernet "
                            "uses a super-network; set one of them or set search.supernet to null")
        cal = self.calibration
        budget = cal.macs_budget if cal.latency_budget is None else cal.latency_budget
        name = "calibration.macs_budget" if cal.latency_budget is None else "calibration.latency_budget"
        if self.search.reward == "accuracy_in_budget" and budget is None:
            problems.append("search.reward=accuracy_in_budget needs calibration.macs_budget (a fraction of the "
                            "base model's MACs, e.g. 0.3) or, with calibration.cost: latency, "
                            "calibration.latency_budget")
        if self.search.reward == "macs_saving" and budget is not None:
            problems.append(f"search.reward=macs_saving calibrates to an accuracy target, but {name} "
                            "is set; set it to null or use search.reward=accuracy_in_budget")
        if self.search.target_from == "reference" and budget is not None:
            problems.append(f"search.target_from=reference moves an accuracy target, but {name} is set; "
                            "set search.target_from=run or set it to null")
        return problems


#: Section name in :class:`RunConfig` -> its dataclass.
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "space": SpaceConfig,
    "train": TrainConfig,
    "calibration": CalibrationConfig,
    "search": SearchConfig,
    "supernet": SupernetConfig,
}
