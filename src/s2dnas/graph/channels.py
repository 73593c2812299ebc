"""The analysis's vocabulary and result: channel dimensions, channel classes, mixing ops.

A tensor's channel dimension is a :class:`Dim`, a concatenation of :class:`Part` s; a part is a
range ``[lo, hi)`` of a channel *class* (a set of tied dimensions that share one partition), each
channel repeated ``repeat`` times (a flatten of ``(C, H, W)`` expands each channel into ``H*W``
features). :class:`GraphAnalysis` is what :func:`s2dnas.graph.analyze` returns and what
:mod:`s2dnas.space.build` slices the weights by.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from torch import fx, nn

__all__ = ["Part", "Dim", "ChannelClass", "MixingOp", "ParamSlice", "GraphAnalysis", "get_attr", "INPUT", "OUTPUT"]

INPUT = -1  # class id of the image input (never split)
OUTPUT = -2  # class id of the logits (never split)


@dataclass(frozen=True)
class Part:
    """Channels ``[lo, hi)`` of class ``cls``, each repeated ``repeat`` times (flattened spatial).
    ``hi == -1`` means the end of the class."""

    cls: int
    repeat: int = 1
    lo: int = 0
    hi: int = -1


@dataclass(frozen=True)
class Dim:
    """A channel dimension as a concatenation of parts."""

    parts: tuple[Part, ...]

    @property
    def is_input(self) -> bool:
        return len(self.parts) == 1 and self.parts[0].cls == INPUT

    @property
    def has_input(self) -> bool:
        """Whether some of its channels are the image's (concatenated with features)."""
        return any(p.cls == INPUT for p in self.parts)


@dataclass
class ChannelClass:
    """A set of tied channel dimensions that share one partition across stages."""

    id: int
    size: int
    granularity: int = 1  # a stage's slice is a whole number of these (groups of grouped convs)
    group: int = 0  # the split group whose ratios cut this class
    producers: list[str] = field(default_factory=list)  # node names of mixing ops writing it
    norms: list[str] = field(default_factory=list)  # batch norms reading exactly this class
    segments: tuple[tuple[int, int], ...] = ()  # ranges that slices/splits cut it into, each partitioned
    offsets: dict[str, int] = field(default_factory=dict)  # producer / norm node -> where it sits in its channels


@dataclass(frozen=True)
class MixingOp:
    """A dense conv or a linear layer: reads ``in_dim`` and writes class ``out_cls``."""

    node: str
    target: str
    in_dim: Dim
    out_cls: int
    group: int
    is_head: bool
    out_dim: Dim | None = None  # the classes it writes (several when a tie cut its output)


@dataclass(frozen=True)
class ParamSlice:
    """A parameter used outside a module (a layer scale): sliced along ``axis`` by ``dim``."""

    target: str
    dim: Dim
    axis: int


@dataclass
class GraphAnalysis:
    """Result of :func:`analyze`: the traced graph with a channel dimension per tensor node.

    ``targets`` maps each mixing or channel-wise node to the module it slices (a functional batch
    or layer norm slices the norm module that owns its parameters); ``rewrites`` lists the nodes
    a stage computes with its own channel counts; ``dropped`` the bookkeeping nodes a stage omits.
    """

    graph_module: fx.GraphModule
    dims: dict[str, Dim]
    classes: dict[int, ChannelClass]
    mixing: dict[str, MixingOp]
    channelwise: dict[str, Dim]  # BN / LN / depthwise / grouped conv node -> the dimension it slices
    shapes: dict[str, tuple[int, ...]]
    num_groups: int
    head: str
    input_shape: tuple[int, ...]
    output: str = ""  # the node whose value the model returns (the head, or pooled/flattened from it)
    axes: dict[str, int] = field(default_factory=dict)  # node -> its channel axis
    targets: dict[str, str] = field(default_factory=dict)
    params: dict[str, ParamSlice] = field(default_factory=dict)  # get_attr node -> slice
    rewrites: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()

    def dim_size(self, dim: Dim) -> int:
        """Number of channels (features) of ``dim``."""
        return sum(self.part_channels(p) * p.repeat for p in dim.parts)

    def class_size(self, cls: int) -> int:
        """Channels of class ``cls`` (the image's channels for the input class)."""
        if cls == INPUT:
            return self.input_shape[0]
        if cls == OUTPUT:
            return self.shapes[self.head][self.axes.get(self.head, 1)]
        return self.classes[cls].size

    def part_channels(self, part: Part) -> int:
        """Channels of ``part`` (before repetition)."""
        return (self.class_size(part.cls) if part.hi < 0 else part.hi) - part.lo

    def signature(self) -> str:
        """A short fingerprint of the split structure: architectures carry it to detect misuse."""
        text = repr((self.input_shape, self.num_groups,
                     sorted((c.id, c.size, c.granularity, c.group) for c in self.classes.values()),
                     sorted((m.node, m.group, m.is_head) for m in self.mixing.values())))
        if any(len(c.segments) > 1 for c in self.classes.values()):  # unchanged for models without cuts
            text += repr(sorted((c.id, c.segments) for c in self.classes.values()))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def get_attr(root: nn.Module, target: str) -> Any:
    """The attribute a ``get_attr`` node reads."""
    return functools.reduce(getattr, target.split("."), root)
