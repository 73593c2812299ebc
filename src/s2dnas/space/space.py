"""The space of multi-stage networks made from one base model by split and concat.

Example:
    >>> import torch
    >>> from s2dnas.zoo import create_model
    >>> space = Space(create_model("resnet20", num_classes=10), input_shape=(3, 32, 32))
    >>> space.num_groups, [d.name for d in space.decisions]
    (3, ['split.g1', 'split.g2', 'split.g3', 'concat.s2', 'concat.s3'])
    >>> net = space.build(space.default_architecture())
    >>> [tuple(t.shape) for t in net(torch.zeros(2, 3, 32, 32))]
    [(2, 10), (2, 10), (2, 10)]
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from s2dnas.errors import ConfigError, InvalidArchitectureError, TransformError
from s2dnas.graph.analysis import ChannelClass, GraphAnalysis, analyze
from s2dnas.space.decision import Decision, check_sample
from s2dnas.space.architecture import Architecture, default_split
from s2dnas.space.build import StagePlan, build_stage, cache_key, concat_feeds
from s2dnas.space.multistage import MultiStageNet

__all__ = ["Space", "compositions"]

IMPORTANCE = ("bn", "l1", "none")


def compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """All ways to write ``total`` as ``parts`` positive integers, in lexicographic order."""
    out = []
    for cuts in itertools.combinations(range(1, total), parts - 1):
        bounds = (0, *cuts, total)
        out.append(tuple(b - a for a, b in zip(bounds, bounds[1:])))
    return out


class Space:
    """Multi-stage networks made from ``model`` by the split and concat transformations.

    Args:
        model: the trained base CNN (not modified; stages copy slices of its weights).
        input_shape: ``(C, H, W)`` of one input.
        num_stages: S.
        ratio_grid: q; split ratios are multiples of ``1/q``.
        groups: ``"resolution"`` (one group per spatial resolution) or ``"resolution:N"`` (each
            resolution group cut into N consecutive groups of layers).
        importance: channel order before cutting: ``"bn"`` (|BN gamma|, else filter L1 norm),
            ``"l1"`` (filter L1 norm) or ``"none"`` (stage 1 takes the first channels).
        model_name: recorded in architectures, informational.
        channel_multiple: m; every stage's slice of a channel dimension is a multiple of ``m``
            channels (so the smallest slice is ``m``), the last stage taking any remainder. A
            dimension too narrow to give every stage ``m`` channels uses the largest of ``m``,
            ``m//2``, ... that fits (ResNet-20's 16-channel layers get slices of 4 with ``m=8``
            and S=3). Thin slices run their MACs slowly; see docs/design.md "Granularity".

    Raises:
        UnsupportedModelError: the graph has a node that cannot be split.
        ConfigError: invalid options.
    """

    def __init__(self, model: nn.Module, *, input_shape: tuple[int, int, int], num_stages: int = 3,
                 ratio_grid: int = 8, groups: str = "resolution", importance: str = "bn",
                 model_name: str | None = None, channel_multiple: int = 1) -> None:
        problems = []
        if not isinstance(channel_multiple, int) or isinstance(channel_multiple, bool) or channel_multiple < 1:
            problems.append(f"channel_multiple must be an integer >= 1, got {channel_multiple!r}")
        if not isinstance(num_stages, int) or num_stages < 1:
            problems.append(f"num_stages must be an integer >= 1, got {num_stages!r}")
        elif not isinstance(ratio_grid, int) or ratio_grid < num_stages:
            problems.append(f"ratio_grid must be an integer >= num_stages ({num_stages}), got {ratio_grid!r}")
        if importance not in IMPORTANCE:
            problems.append(f"importance must be one of {IMPORTANCE}, got {importance!r}")
        sub = _parse_groups(groups, problems)
        if len(tuple(input_shape)) != 3:
            problems.append(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        if problems:
            raise ConfigError("Invalid space options: " + "; ".join(problems))
        self.model = model
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_stages = num_stages
        self.ratio_grid = ratio_grid
        self.groups = groups
        self.importance = importance
        self.model_name = model_name
        self.channel_multiple = channel_multiple
        self.analysis: GraphAnalysis = analyze(model, input_shape=self.input_shape)
        self._op_group = self._assign_groups(sub)
        self.num_groups = max(self._op_group.values(), default=0) + 1
        for cls in self.analysis.classes.values():
            cls.group = self._op_group[cls.producers[0]]
            # Narrower than S channels: refuse. Fewer whole groups (or fewer channels in a range that a
            # slice cuts) than stages: degrade, the stages that would get less than a group get none.
            if cls.size < num_stages:
                raise TransformError(
                    f"A channel dimension of {cls.size} channels (written by {cls.producers[0]!r}) cannot be "
                    f"split into {num_stages} stages; use fewer stages"
                )
        self._modules = dict(self.analysis.graph_module.named_modules())
        self._targets = {n.name: str(n.target) for n in self.analysis.graph_module.graph.nodes}
        self._scores = {cid: self._importance(cls) for cid, cls in self.analysis.classes.items()}
        # Per group, the splits that build distinct networks: with coarse slices (channel_multiple)
        # several ratios round to the same channel bounds (ResNet-20's 16-channel layers cut in
        # 4-channel steps have 3 distinct splits for S=3, not 21). Each class of equal splits is
        # represented by the member whose ratios are closest to the shares it really gives (then
        # the hand-picked split, which names a group without channels, then the first in
        # lexicographic order); the controllers choose among representatives only, so no budget is
        # spent on a network twice under two names.
        self._choices: list[tuple[tuple[int, ...], ...]] = []
        self._canonical: list[dict[tuple[int, ...], tuple[int, ...]]] = []
        hand = _hand_picked(num_stages, ratio_grid)
        for g in range(self.num_groups):
            members: dict[Any, list[tuple[int, ...]]] = {}
            for parts in compositions(ratio_grid, num_stages):
                members.setdefault(self._group_bounds(g, parts), []).append(parts)
            reps = [min(same, key=lambda parts, b=bounds: (_misfit(parts, b, ratio_grid), parts != hand, parts))
                    for bounds, same in members.items()]
            self._choices.append(tuple(reps))
            self._canonical.append({parts: rep for rep, same in zip(reps, members.values()) for parts in same})
        # Likewise concat positions that make a stage read the same ops (a group holding only the
        # input stem or only the classifier): one choice each, named by the smallest position,
        # or by G ("never") when it is equivalent to never.
        by_ops: dict[frozenset[str], list[int]] = {}
        for position in range(self.num_groups + 1):
            by_ops.setdefault(self._concat_ops(position), []).append(position)
        self._concat_canonical = {p: (self.num_groups if self.num_groups in same else same[0])
                                  for same in by_ops.values() for p in same}
        self._concat_choices = tuple(sorted(set(self._concat_canonical.values())))

    # -- decisions ----------------------------------------------------------------------------
    @property
    def decisions(self) -> list[Decision]:
        """The decisions a controller makes: each group's split, then each stage's concat position."""
        out = [Decision(f"split.g{g + 1}", self._choices[g]) for g in range(self.num_groups)]
        out += [Decision(f"concat.s{s + 1}", self._concat_choices) for s in range(1, self.num_stages)]
        return out

    def size(self) -> int:
        """Number of distinct networks in the space (splits that build the same network count once)."""
        return math.prod(len(c) for c in self._choices) * len(self._concat_choices) ** (self.num_stages - 1)

    @property
    def signature(self) -> str:
        """Fingerprint of this space (model structure, input shape, groups, S, q)."""
        tail = f"-m{self.channel_multiple}" if self.channel_multiple != 1 else ""  # m=1 keeps old signatures
        return f"{self.analysis.signature()}-g{self.num_groups}-s{self.num_stages}-q{self.ratio_grid}{tail}"

    def architecture(self, *, splits: Any, concat: Any) -> Architecture:
        """An architecture of this space from explicit splits (one per group, or one for all)."""
        splits = tuple(tuple(g) for g in splits)
        if len(splits) == 1 and self.num_groups > 1:
            splits = splits * self.num_groups
        return Architecture(num_stages=self.num_stages, ratio_grid=self.ratio_grid, splits=splits,
                            concat=tuple(concat), signature=self.signature, model=self.model_name)

    def default_architecture(self) -> Architecture:
        """METHOD.md's hand-picked point: split 1/4, 1/4, 1/2 (for S=3) everywhere, full concat."""
        return self.architecture(splits=[default_split(self.num_stages, self.ratio_grid)],
                                 concat=[0] * (self.num_stages - 1))

    def from_sample(self, sample: dict[str, int]) -> Architecture:
        """The architecture a controller's sample picks."""
        problem = check_sample(self.decisions, sample)
        if problem:
            raise InvalidArchitectureError(problem)
        splits = [self._choices[g][sample[f"split.g{g + 1}"]] for g in range(self.num_groups)]
        concat = [self._concat_choices[sample[f"concat.s{s + 1}"]] for s in range(1, self.num_stages)]
        return self.architecture(splits=splits, concat=concat)

    def to_sample(self, arch: Architecture) -> dict[str, int]:
        """The sample that picks ``arch``'s network (inverse of :meth:`from_sample` up to :meth:`canonical`)."""
        arch = self.canonical(arch)
        sample = {f"split.g{g + 1}": self._choices[g].index(p) for g, p in enumerate(arch.splits)}
        sample.update({f"concat.s{s + 2}": self._concat_choices.index(p) for s, p in enumerate(arch.concat)})
        return sample

    def canonical(self, arch: Architecture) -> Architecture:
        """``arch`` with each split and concat position replaced by the representative that builds the
        same network (the choices :attr:`decisions` offer).

        Two architectures build the same network exactly when their canonical forms are equal.
        """
        self.validate_architecture(arch)
        splits = [self._canonical[g][tuple(p)] for g, p in enumerate(arch.splits)]
        return self.architecture(splits=splits, concat=[self._concat_canonical[p] for p in arch.concat])

    def sample(self, generator: torch.Generator | None = None) -> Architecture:
        """A uniformly random architecture."""
        pick = {d.name: int(torch.randint(d.size, (1,), generator=generator)) for d in self.decisions}
        return self.from_sample(pick)

    def validate_architecture(self, arch: Architecture) -> None:
        """Raise :class:`InvalidArchitectureError` unless ``arch`` belongs to this space."""
        if not isinstance(arch, Architecture):
            raise InvalidArchitectureError(f"Expected an Architecture, but got {type(arch).__name__}")
        if arch.num_stages != self.num_stages:
            raise InvalidArchitectureError(
                f"The architecture has {arch.num_stages} stages but the space has {self.num_stages}; "
                f"use --stages {arch.num_stages} or another architecture")
        made_for = f" (model {arch.model!r})" if arch.model else ""
        this = f" of {self.model_name!r}" if self.model_name else ""
        fix = (f"use the model it was made for, or make one for this model with "
               f"'s2dnas space --model {self.model_name} --arch-out FILE' (or a search)" if self.model_name
               else "use the model it was made for, or make one for this model (s2dnas space --arch-out, or a search)")
        if arch.ratio_grid != self.ratio_grid:
            raise InvalidArchitectureError(
                f"Expected an architecture on ratio grid q={self.ratio_grid} (the space's), but it has "
                f"ratio_grid={arch.ratio_grid}; use --ratio-grid {arch.ratio_grid} or rewrite its splits")
        if arch.num_groups != self.num_groups:
            raise InvalidArchitectureError(
                f"Expected an architecture with {self.num_groups} split group(s), as the space{this} has, but the "
                f"architecture{made_for} has {arch.num_groups}: it was made for another model or grouping; {fix}")
        if arch.signature is not None and arch.signature != self.signature:
            of = f"model {arch.model!r}, " if arch.model else ""
            raise InvalidArchitectureError(
                f"Expected an architecture of this space{this} (signature {self.signature}), but it was made for "
                f"another model or input shape ({of}signature {arch.signature}); {fix}")

    # -- building -----------------------------------------------------------------------------
    def stage_indices(self, arch: Architecture) -> list[dict[int, torch.Tensor]]:
        """Per stage, the base channel indices of every class that the stage computes."""
        per_stage: list[dict[int, torch.Tensor]] = [{} for _ in range(self.num_stages)]
        for cid, cls in self.analysis.classes.items():
            g = cls.granularity
            chosen: list[list[torch.Tensor]] = [[] for _ in range(self.num_stages)]
            for (lo, hi), bounds in zip(self._segments(cls), self._segment_bounds(cls, arch.splits[cls.group])):
                order = torch.argsort(-self._scores[cid][lo // g:hi // g], stable=True) + lo // g
                for s in range(self.num_stages):
                    chosen[s].append(order[bounds[s]:bounds[s + 1]])
            for s in range(self.num_stages):
                units_s = torch.sort(torch.cat(chosen[s])).values
                per_stage[s][cid] = (units_s[:, None] * g + torch.arange(g)[None, :]).reshape(-1)
        return per_stage

    def build(self, arch: Architecture | None = None, *, share_weights: bool = False) -> MultiStageNet:
        """Build the multi-stage network of ``arch`` with weights inherited from the base model.

        Args:
            arch: the architecture (default: :meth:`default_architecture`).
            share_weights: slice the base parameters at every call instead of copying them (the
                one-shot super-network; batch norms then always use batch statistics).
        """
        arch = self.default_architecture() if arch is None else arch
        self.validate_architecture(arch)
        indices = tuple(self.stage_indices(arch))
        concat_ops = [frozenset()] + [self._concat_ops(p) for p in arch.concat]
        stages, reads, writes, macs = [], [], [], []
        for s in range(self.num_stages):
            exports = tuple(concat_feeds(self.analysis, set().union(*concat_ops[s + 1:])))
            plan = StagePlan(stage=s, class_indices=indices, concat_ops=concat_ops[s], exports=exports)
            gm, stage_reads, stage_macs = build_stage(self.analysis, plan, share_weights=share_weights)
            stages.append(gm)
            reads.append(stage_reads)
            writes.append([cache_key(n, s) for n in exports])
            macs.append(stage_macs)
        net = MultiStageNet(stages, reads=reads, writes=writes, architecture=arch,
                            input_shape=self.input_shape, analytic_macs=macs)
        if not share_weights:
            net.train(self.model.training)
        return net

    def base_macs(self) -> int:
        """MACs per input of the base model by the analytic formula (equals one stage with S=1)."""
        from s2dnas.space.build import _macs

        modules = dict(self.analysis.graph_module.named_modules())
        return sum(_macs(modules[self.analysis.targets[n.name]], self.analysis.shapes[n.name])
                   for n in self.analysis.graph_module.graph.nodes
                   if n.name in self.analysis.mixing or n.name in self.analysis.channelwise)

    # -- internals ----------------------------------------------------------------------------
    def _concat_ops(self, position: int) -> frozenset[str]:
        """The mixing ops whose inputs include earlier stages' features when a stage concatenates
        from group ``position`` on (the classifier always; the input stem never: earlier stages'
        copies of the image would be read twice)."""
        return frozenset(name for name, op in self.analysis.mixing.items()
                         if not op.in_dim.has_input and (op.is_head or self._op_group[name] >= position))

    def _segments(self, cls: ChannelClass) -> list[tuple[int, int]]:
        """The channel ranges of ``cls`` that are shared out separately."""
        return _merge_small(cls.segments or ((0, cls.size),), cls.granularity * self.num_stages)

    def _segment_bounds(self, cls: ChannelClass, parts: tuple[int, ...]) -> list[list[int]]:
        """Per range of ``cls``, where the stages' shares begin and end, in units, for the split ``parts``."""
        out = []
        for lo, hi in self._segments(cls):
            units = (hi - lo) // cls.granularity
            # Cut in coarse steps of k units (channel_multiple channels' worth), then map back;
            # the last stage takes the remainder when k does not divide the range.
            k = self._coarse_units(units, cls.granularity)
            out.append([b * k for b in _bounds(units // k, parts, self.ratio_grid)[:-1]] + [units])
        return out

    def _group_bounds(self, group: int, parts: tuple[int, ...]) -> tuple[Any, ...]:
        """What the split ``parts`` of ``group`` decides: every class's bounds (equal = same network)."""
        return tuple((cid, tuple(map(tuple, self._segment_bounds(cls, parts))))
                     for cid, cls in self.analysis.classes.items() if cls.group == group)

    def _coarse_units(self, units: int, granularity: int) -> int:
        """Granularity units per slice step of a range of ``units`` units: ``channel_multiple``
        channels, halved until S fit."""
        k = max(1, -(-self.channel_multiple // granularity))  # ceil: whole granularity units
        while k > 1 and units // k < self.num_stages:
            k //= 2
        return k

    def _assign_groups(self, sub: int) -> dict[str, int]:
        ops = [name for name, op in self.analysis.mixing.items()]
        by_res: dict[int, list[str]] = {}
        for name in ops:
            by_res.setdefault(self.analysis.mixing[name].group, []).append(name)
        out, base = {}, 0
        for res in sorted(by_res):
            names = by_res[res]
            n = min(sub, len(names))
            for i, name in enumerate(names):
                out[name] = base + i * n // len(names)
            base += n
        return out

    def _importance(self, cls: ChannelClass) -> torch.Tensor:
        """Score per unit (a unit is ``granularity`` channels); higher goes to earlier stages."""
        modules, target = self._modules, self._targets
        score = torch.zeros(cls.size)
        if self.importance == "none":
            return -torch.arange(cls.size // cls.granularity, dtype=torch.float)  # keep natural order
        with torch.no_grad():
            if self.importance == "bn" and cls.norms:
                for name in cls.norms:
                    bn = modules[self.analysis.targets[name]]
                    if bn.affine:
                        at = cls.offsets.get(name, 0)
                        score += bn.weight.detach()[at:at + cls.size].abs().float().cpu()
            if not score.any():
                for name in cls.producers:
                    at = cls.offsets.get(name, 0)
                    w = modules[self.analysis.targets[name]].weight.detach()[at:at + cls.size].float().cpu()
                    norm = w.abs().reshape(w.shape[0], -1).sum(1)
                    score += norm / norm.mean().clamp_min(1e-12)
        return score.reshape(-1, cls.granularity).sum(1)


def _merge_small(segments: tuple[tuple[int, int], ...], least: int) -> list[tuple[int, int]]:
    """Join neighbouring ranges until each holds ``least`` channels (or one range is left): a slice
    of a slice of a shuffled tensor can cut a class into ranges too narrow to share out."""
    merged: list[tuple[int, int]] = []
    for lo, hi in segments:
        if merged and merged[-1][1] - merged[-1][0] < least:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    if len(merged) > 1 and merged[-1][1] - merged[-1][0] < least:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


def _bounds(units: int, parts: tuple[int, ...], ratio_grid: int) -> list[int]:
    """Where the stages' shares of ``units`` units begin and end, following ``parts / ratio_grid``.

    Every stage gets at least one unit when there are enough; otherwise (fewer whole groups than
    stages) the first stage gets one and stages whose share rounds to nothing get none.
    """
    stages = len(parts)
    bounds, acc = [0], 0
    for s, p in enumerate(parts[:-1]):
        acc += p
        if units >= stages:
            lo, hi = bounds[-1] + 1, units - (stages - 1 - s)
        else:
            lo, hi = (1 if s == 0 else bounds[-1]), units
        bounds.append(min(max(round(units * acc / ratio_grid), lo), hi))
    bounds.append(units)
    return bounds


def _hand_picked(num_stages: int, ratio_grid: int) -> tuple[int, ...] | None:
    try:
        return default_split(num_stages, ratio_grid)
    except InvalidArchitectureError:  # a grid too coarse for it
        return None


def _misfit(parts: tuple[int, ...], group_bounds: tuple[Any, ...], ratio_grid: int) -> float:
    """How far the ratios ``parts / ratio_grid`` are from the shares a group's bounds really give."""
    total = 0.0
    for _, segments in group_bounds:
        for bounds in segments:
            units = bounds[-1]
            total += sum((p / ratio_grid - (hi - lo) / units) ** 2 for p, lo, hi in zip(parts, bounds, bounds[1:]))
    return total


def _parse_groups(groups: str, problems: list[str]) -> int:
    if groups == "resolution":
        return 1
    if isinstance(groups, str) and groups.startswith("resolution:"):
        tail = groups.split(":", 1)[1]
        if tail.isdigit() and int(tail) >= 1:
            return int(tail)
    problems.append(f"groups must be 'resolution' or 'resolution:N' with N >= 1, got {groups!r}")
    return 1
