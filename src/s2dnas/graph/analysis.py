"""Graph analysis of any CNN: which channel dimensions can be split, and which are tied.

The model is traced with torch.fx and its shapes propagated on an example input. Every tensor in
the graph gets a :class:`Dim` describing its channel dimension (dim 1, or the last dim of a
channels-last tensor) as a concatenation of *parts*; a part is a range ``[lo, hi)`` of a channel
*class* (a union-find set of dimensions that must share one partition), each channel repeated
``repeat`` times (a flatten of ``(C, H, W)`` expands each channel into ``H*W`` features). Rules (METHOD.md, "Split"):

- a dense conv or a linear layer (a *mixing* op) starts a new class for its output;
- batch norm, layer norm over channels, activations, pooling, dropout keep the dimension;
- ``add``/``mul`` (residual adds, squeeze-and-excitation gates, layer scales) tie their inputs';
- depthwise and grouped convs tie their input and output (whole groups stay together);
- ``cat`` along channels makes a composite dimension of its inputs'; ``split``/``chunk`` and
  channel slices ``t[:, a:b]`` take ranges of it (the classes they cut are partitioned per range);
- ``flatten`` (or ``view(B, -1)``) repeats each channel ``H*W`` times;
- a channel shuffle (``view(B, g, C/g, H, W)``, ``transpose(1, 2)``, ``view(B, C, H, W)``, or
  ``F.channel_shuffle``) permutes the channels: a stage gathers its own in the shuffled order;
- ``permute`` between channels-first and channels-last keeps the dimension on its new axis.

Each node that a stage must compute differently (its channel count appears in its arguments)
gets a *rewrite* that :mod:`s2dnas.space.build` applies with the stage's own sizes. The image
input and the logits are never split. Anything else raises
:class:`~s2dnas.errors.UnsupportedModelError` naming the node and the rewrite that would help.
"""
from __future__ import annotations

import functools
import hashlib
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from s2dnas.errors import UnsupportedModelError

__all__ = ["Part", "Dim", "ChannelClass", "MixingOp", "GraphAnalysis", "analyze", "trace", "INPUT", "OUTPUT"]

INPUT = -1  # class id of the image input (never split)
OUTPUT = -2  # class id of the logits (never split)

_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.PReLU, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.AlphaDropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d,
    nn.ReflectionPad2d, nn.ReplicationPad2d,
)
_PASS_FUNCTIONS = {
    F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.sigmoid,
    F.tanh, F.mish, F.softplus, torch.relu, torch.sigmoid, torch.tanh, F.dropout, F.dropout2d,
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.clamp, torch.clip,
    F.interpolate, F.pad, torch.abs, torch.exp, torch.neg, F.hardtanh, F.relu_,
}
try:  # torchvision's stochastic depth drops whole samples: it keeps the channel layout
    from torchvision.ops import stochastic_depth as _stochastic_depth

    _PASS_FUNCTIONS.add(_stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass
_PASS_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "contiguous",
                 "clone", "float", "abs", "exp", "neg", "hardtanh", "hardtanh_", "detach", "type_as"}
_ELEMENTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                          operator.isub, operator.truediv, operator.itruediv, torch.add, torch.mul,
                          torch.sub, torch.div}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_SPLIT_FUNCTIONS = {torch.split, torch.chunk}
_CAT_FUNCTIONS = {torch.cat, torch.concat}
_PERMUTE_FUNCTIONS = {torch.permute, torch.transpose}
_TORCHVISION_PASS_NAMES = {"StochasticDepth"}  # per-sample drop, identity in eval: keeps channels
_SUPPORTED = ("Supported: Conv2d (dense, depthwise, grouped), Linear (also channels-last), BatchNorm, LayerNorm "
              "over channels, activations, pooling, dropout, add/mul (residuals, SE gates, layer scales), "
              "cat/split/chunk/slices along channels, flatten, squeeze/unsqueeze, permute to channels-last, "
              "channel shuffle")


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


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; a failure raises :class:`UnsupportedModelError`."""
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - fx raises many kinds for data-dependent control flow
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise UnsupportedModelError(
            f"Cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {first[:300]}). "
            "Make it traceable: the forward must not branch or loop on tensor values (use torch.where, "
            "torch.clamp or fixed sizes instead of if/for on tensors); code hidden in a leaf module or a "
            "torch.fx.wrap function traces, but the analysis splits only operations it knows and then refuses "
            "that node by name, so prefer rewriting it"
        ) from None


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def add(self, x: int) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        self.parent[drop] = keep
        return keep


def _unsupported(node: fx.Node, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"Cannot split node {node.name!r} ({node.op} {_target_name(node)}): {why}. "
                                 f"{_SUPPORTED}")


def _target_name(node: fx.Node) -> str:
    t = node.target
    return getattr(t, "__name__", None) or str(t)


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


@dataclass
class _Grouped:
    """A ``(B, g, C/g, H, W)`` view of a channel dimension (the middle of a channel shuffle)."""

    dim: Dim  # of the (B, C, H, W) tensor it views
    groups: int
    transposed: bool


@dataclass
class _ParamState:
    """A parameter (or a reshape of one) that is not a module's input."""

    target: str
    raw_shape: tuple[int, ...]


class _Analyzer:
    """One pass over the traced graph in topological order."""

    def __init__(self, gm: fx.GraphModule, input_shape: tuple[int, ...], model: nn.Module) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.model_modules = dict(model.named_modules())  # owners of parameters read by get_attr
        self.input_shape = input_shape
        self.uf = _UnionFind()
        self.sizes: dict[int, int] = {}
        self.granularity: dict[int, int] = {}
        self.cuts: dict[int, set[int]] = {}  # soft cuts (slices): ranges shared out separately
        self.children: dict[int, list[tuple[int, int, int]]] = {}  # hard cuts (ties): root -> sub-classes
        self.dims: dict[str, Dim] = {}
        self.axes: dict[str, int] = {}
        self.seqs: dict[str, list[Dim]] = {}
        self.grouped: dict[str, _Grouped] = {}
        self.param_states: dict[str, _ParamState] = {}
        self.param_uses: dict[str, tuple[Dim, int]] = {}  # attr target -> (dim, raw axis)
        self.param_nodes: dict[str, list[str]] = {}  # attr target -> get_attr nodes
        self.rewrites: dict[str, tuple[Any, ...]] = {}
        self.dropped: set[str] = set()
        self.targets: dict[str, str] = {}
        self.mixing_raw: list[tuple[fx.Node, Dim, int]] = []
        self.channelwise_raw: list[tuple[fx.Node, Dim]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.next_id = 0

    # -- helpers ---------------------------------------------------------------------------
    def new_class(self, size: int) -> int:
        cid = self.next_id
        self.next_id += 1
        self.uf.add(cid)
        self.sizes[cid] = size
        self.granularity[cid] = 1
        self.cuts[cid] = set()
        return cid

    def size_of(self, cls: int) -> int:
        if cls == INPUT:
            return self.input_shape[0]
        return self.sizes[self.uf.find(cls)]

    def hi(self, part: Part) -> int:
        return self.size_of(part.cls) if part.hi < 0 else part.hi

    def features(self, dim: Dim) -> int:
        return sum((self.hi(p) - p.lo) * p.repeat for p in dim.parts)

    def shape(self, node: Any) -> tuple[int, ...] | None:
        if not isinstance(node, fx.Node):
            return None
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            return None
        return tuple(meta.shape)

    def tracked(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and arg.name in self.dims

    def set(self, node: fx.Node, dim: Dim, axis: int) -> None:
        self.dims[node.name] = dim
        self.axes[node.name] = axis

    def input_of(self, node: fx.Node, arg: Any) -> tuple[Dim, int]:
        if self.tracked(arg):
            return self.dims[arg.name], self.axes[arg.name]
        if isinstance(arg, fx.Node) and (arg.name in self.seqs or arg.name in self.grouped):
            raise _unsupported(node, f"its input {arg.name!r} is a tuple of tensors or a channel-shuffle view")
        raise _unsupported(node, "its input is not a tensor the analysis follows")

    def expand(self, part: Part) -> list[Part]:
        """``part`` as ranges of leaf classes (classes that ties have not cut further)."""
        hi = self.hi(part)
        root = part.cls if part.cls < 0 else self.uf.find(part.cls)
        if root < 0 or root not in self.children:
            return [Part(root, part.repeat, part.lo, hi)]
        out: list[Part] = []
        for child, lo, chi in self.children[root]:
            a, b = max(lo, part.lo), min(chi, hi)
            if a < b:
                out.extend(self.expand(Part(child, part.repeat, a - lo, b - lo)))
        return out

    def cut(self, cls: int, at: int, node: fx.Node) -> None:
        """Split class ``cls`` at channel ``at`` into two sub-classes (a tie needs the ranges whole)."""
        root = self.uf.find(cls)
        size = self.sizes[root]
        if at <= 0 or at >= size:
            return
        if root in self.children:
            for child, lo, hi in self.children[root]:
                if lo < at < hi:
                    self.cut(child, at - lo, node)
            return
        g = self.granularity[root]
        if at % g:
            raise _unsupported(node, f"it ties channels across a group of a grouped conv (groups of {g})")
        first, second = self.new_class(at), self.new_class(size - at)
        self.granularity[first] = self.granularity[second] = g
        self.cuts[first] = {c for c in self.cuts[root] if 0 < c < at}
        self.cuts[second] = {c - at for c in self.cuts[root] if at < c < size}
        self.children[root] = [(first, 0, at), (second, at, size)]

    def soft_cut(self, cls: int, at: int) -> None:
        """Record that a slice begins or ends at channel ``at`` of ``cls`` (ranges shared out apart)."""
        root = self.uf.find(cls)
        for child, lo, hi in self.children.get(root, ()):
            if lo < at < hi:
                self.soft_cut(child, at - lo)
                return
        if root not in self.children and 0 < at < self.sizes[root]:
            self.cuts[root].add(at)

    def leaves(self, dim: Dim) -> list[Part]:
        return [q for p in dim.parts for q in self.expand(p)]

    def tie(self, a: Dim, b: Dim, node: fx.Node) -> Dim:
        if a == b:
            return a
        if a.has_input or b.has_input:
            raise _unsupported(node, "it combines the image input with features channel by channel; add a "
                                     "conv before combining")
        if self.features(a) != self.features(b):
            raise _unsupported(node, "it combines tensors of different widths")
        for _ in range(64):  # cut both sides until their ranges line up as whole leaf classes
            pa, pb = self.leaves(a), self.leaves(b)
            changed = False
            for parts in (pa, pb):
                for p in parts:
                    if p.lo > 0 or p.hi < self.size_of(p.cls):
                        self.cut(p.cls, p.lo, node)
                        self.cut(p.cls, p.hi, node)
                        changed = True
            if changed:
                continue
            bounds_a, bounds_b = _bounds(pa), _bounds(pb)
            for parts, theirs in ((pa, bounds_b), (pb, bounds_a)):
                offset = 0
                for p in parts:
                    width = (p.hi - p.lo) * p.repeat
                    for at in theirs:
                        if offset < at < offset + width:
                            if (at - offset) % p.repeat:
                                raise _unsupported(node, "it combines tensors whose channel layouts differ")
                            self.cut(p.cls, p.lo + (at - offset) // p.repeat, node)
                            changed = True
                    offset += width
            if not changed:
                break
        pa, pb = self.leaves(a), self.leaves(b)
        if len(pa) != len(pb):  # pragma: no cover - the loop above lines them up
            raise _unsupported(node, "it combines tensors whose channel layouts differ")
        for qa, qb in zip(pa, pb):
            if qa.repeat != qb.repeat or self.size_of(qa.cls) != self.size_of(qb.cls):
                raise _unsupported(node, "it combines tensors whose channel layouts differ")
            ra, rb = self.uf.find(qa.cls), self.uf.find(qb.cls)
            root = self.uf.union(ra, rb)
            self.granularity[root] = math.lcm(self.granularity[ra], self.granularity[rb])
            self.cuts[root] = self.cuts[ra] | self.cuts[rb]
        return a

    def slice_dim(self, dim: Dim, start: int, stop: int, node: fx.Node) -> Dim:
        """Features ``[start, stop)`` of ``dim``; records where classes are cut."""
        parts: list[Part] = []
        offset = 0
        for p in dim.parts:
            width = (self.hi(p) - p.lo) * p.repeat
            a, b = max(start, offset), min(stop, offset + width)
            if a < b:
                if (a - offset) % p.repeat or (b - offset) % p.repeat:
                    raise _unsupported(node, "it cuts through the features of one channel (a slice of a "
                                             "flattened or shuffled tensor); slice before flattening")
                lo, hi = p.lo + (a - offset) // p.repeat, p.lo + (b - offset) // p.repeat
                if p.cls == INPUT and (lo, hi) != (0, self.hi(p)):
                    raise _unsupported(node, "it takes some of the image's channels; every stage reads the whole "
                                             "image")
                if p.cls >= 0:
                    self.soft_cut(p.cls, lo)
                    self.soft_cut(p.cls, hi)
                parts.append(Part(p.cls, p.repeat, lo, hi))
            offset += width
        if not parts:
            raise _unsupported(node, "it takes no channels")
        return Dim(tuple(parts))

    # -- the pass --------------------------------------------------------------------------
    def run(self) -> None:
        for node in list(self.gm.graph.nodes):
            shape = self.shape(node)
            if shape is not None:
                self.shapes[node.name] = shape
            getattr(self, f"_on_{node.op}")(node, shape)

    def _on_placeholder(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        if shape is None or len(shape) != 4:
            raise _unsupported(node, "expected one image input of shape (B, C, H, W)")
        if any(n.op == "placeholder" for n in self.gm.graph.nodes if n is not node and n.name in self.dims):
            raise _unsupported(node, "the model takes more than one input")
        self.set(node, Dim((Part(INPUT, 1, 0, shape[1]),)), 1)

    def _on_get_attr(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        if shape is None:
            return
        target = str(node.target)
        self.param_states[node.name] = _ParamState(target, shape)
        self.param_nodes.setdefault(target, []).append(node.name)

    def _on_output(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        out = node.args[0]
        if not isinstance(out, fx.Node) or not self.tracked(out):
            raise _unsupported(node, "the model must return one logits tensor (not a tuple or dict); return "
                                     "only the classifier's output")

    # -- modules ---------------------------------------------------------------------------
    def _on_call_module(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        mod = self.modules[str(node.target)]
        x = node.args[0] if node.args else None
        if isinstance(mod, nn.Flatten):
            self.flatten(node, x, mod.start_dim, mod.end_dim, shape)
            return
        if isinstance(mod, nn.ChannelShuffle):
            self.channel_shuffle(node, x, mod.groups)
            return
        in_dim, axis = self.input_of(node, x)
        x_shape = self.shapes[x.name]
        if isinstance(mod, nn.Conv2d):
            if axis != 1 or len(x_shape) != 4:
                raise _unsupported(node, "a Conv2d on a tensor whose channels are not dim 1 of (B, C, H, W)")
            if mod.groups == 1:
                self.add_mixing(node, in_dim, mod.out_channels, 1)
                return
            if mod.in_channels != mod.out_channels:
                raise _unsupported(node, "grouped conv with in_channels != out_channels (a channel multiplier); "
                                         "use a depthwise conv followed by a 1x1 conv")
            if in_dim.has_input:
                raise _unsupported(node, "grouped conv on the image input")
            group_size = mod.in_channels // mod.groups
            if group_size > 1:
                offset = 0
                for p in self.leaves(in_dim):
                    if p.repeat != 1 or offset % group_size or p.lo % group_size or (p.hi - p.lo) % group_size:
                        raise _unsupported(node, "grouped conv over tensors concatenated inside its groups")
                    root = self.uf.find(p.cls)
                    self.granularity[root] = math.lcm(self.granularity[root], group_size)
                    offset += p.hi - p.lo
            self.add_channelwise(node, in_dim, axis, str(node.target))
        elif isinstance(mod, nn.Linear):
            if shape is None or axis != len(x_shape) - 1:
                raise _unsupported(node, "Linear applied along an axis that is not the channels; permute the "
                                         "channels last first (x.permute(0, 2, 3, 1)) or flatten")
            self.add_mixing(node, in_dim, mod.out_features, len(shape) - 1)
        elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if in_dim.is_input or axis != 1:
                raise _unsupported(node, "batch norm on the image input or not over dim 1")
            self.add_channelwise(node, in_dim, axis, str(node.target))
        elif isinstance(mod, nn.LayerNorm):
            self.layer_norm(node, in_dim, axis, x_shape, tuple(mod.normalized_shape), str(node.target))
        elif isinstance(mod, _PASS_MODULES) or type(mod).__name__ in _TORCHVISION_PASS_NAMES:
            self.set(node, in_dim, axis)
        else:
            raise _unsupported(node, f"module type {type(mod).__name__} is not supported; if it keeps channels "
                                     "apart, write its forward with supported operations")

    def add_mixing(self, node: fx.Node, in_dim: Dim, out_size: int, axis: int, target: str | None = None) -> None:
        cid = self.new_class(out_size)
        self.mixing_raw.append((node, in_dim, cid))
        self.targets[node.name] = str(node.target) if target is None else target
        self.set(node, Dim((Part(cid, 1, 0, out_size),)), axis)

    def add_channelwise(self, node: fx.Node, dim: Dim, axis: int, target: str) -> None:
        self.channelwise_raw.append((node, dim))
        self.targets[node.name] = target
        self.set(node, dim, axis)

    def layer_norm(self, node: fx.Node, dim: Dim, axis: int, x_shape: tuple[int, ...],
                   normalized: tuple[int, ...], target: str) -> None:
        if axis != len(x_shape) - 1 or normalized != (x_shape[-1],) or dim.has_input:
            raise _unsupported(node, "layer norm is supported over the channels only (channels last, "
                                     "normalized_shape (C,))")
        self.add_channelwise(node, dim, axis, target)

    # -- functions and methods -------------------------------------------------------------
    def _on_call_function(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        fn = node.target
        first = node.args[0] if node.args else None
        if fn is operator.getitem:
            self.getitem(node, shape)
            return
        if (fn is torch.max or fn is torch.min) and len(node.args) + len(node.kwargs) > 1:
            raise _unsupported(node, "torch.max/min with a dim returns (values, indices); use torch.amax/amin")
        if self.param_only(node):
            return
        if fn in _CAT_FUNCTIONS:
            self.cat(node, shape)
        elif shape is None and fn not in _SPLIT_FUNCTIONS:
            return  # size(), arithmetic on ints: no channels involved
        elif fn in _PASS_FUNCTIONS:
            self.pass_through(node)
        elif fn in _ELEMENTWISE_FUNCTIONS:
            self.elementwise(node, shape)
        elif fn is torch.flatten:
            self.flatten(node, first, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1), shape)
        elif fn in _REDUCE_FUNCTIONS:
            self.reduce(node, shape)
        elif fn in _SPLIT_FUNCTIONS:
            self.split(node)
        elif fn in _PERMUTE_FUNCTIONS:
            self.permute(node, shape)
        elif fn in (torch.squeeze, torch.unsqueeze):
            self.squeeze(node, shape, fn.__name__)
        elif fn is torch.reshape:
            self.view(node, shape, first)
        elif fn is F.channel_shuffle:
            self.channel_shuffle(node, first, _arg(node, 1, "groups"))
        elif fn is F.batch_norm:
            self.functional_norm(node, nn.modules.batchnorm._BatchNorm, (1, 2, 3, 4), ("running_mean",
                                 "running_var", "weight", "bias"))
        elif fn is F.linear:
            self.functional_linear(node, shape)
        elif fn is F.layer_norm:
            self.functional_norm(node, nn.LayerNorm, (2, 3), ("weight", "bias"))
        else:
            raise _unsupported(node, "this function is not supported")

    def _on_call_method(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        name = str(node.target)
        first = node.args[0]
        if name == "size" or name == "dim":
            return
        if name in ("max", "min") and len(node.args) + len(node.kwargs) > 1:
            raise _unsupported(node, f"x.{name}(dim) returns (values, indices); use x.a{name}(dim)")
        if self.param_only(node):
            return
        if shape is None and name not in ("split", "chunk"):
            return
        if name in _PASS_METHODS:
            self.pass_through(node)
        elif name in _ELEMENTWISE_METHODS:
            self.elementwise(node, shape)
        elif name == "flatten":
            self.flatten(node, first, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1), shape)
        elif name in ("view", "reshape"):
            self.view(node, shape, first)
        elif name in _REDUCE_METHODS:
            self.reduce(node, shape)
        elif name in ("split", "chunk"):
            self.split(node)
        elif name in ("permute", "transpose"):
            self.permute(node, shape)
        elif name in ("squeeze", "unsqueeze"):
            self.squeeze(node, shape, name)
        else:
            raise _unsupported(node, f"tensor method {name!r} is not supported")

    def param_only(self, node: fx.Node) -> bool:
        """Handle a node on parameters only (a reshape of a layer scale, a BN's step counter)."""
        tensors = [a for a in node.all_input_nodes if self.shape(a) is not None or a.name in self.seqs]
        if not tensors or not all(a.name in self.param_states for a in tensors):
            return False
        if not node.users:  # in-place bookkeeping such as num_batches_tracked.add_(1)
            self.dropped.add(node.name)
            return True
        shape = self.shape(node)
        if shape is None or len(tensors) != 1:
            raise _unsupported(node, "arithmetic on parameters outside a module")
        state = self.param_states[tensors[0].name]
        name = str(node.target)
        if name in ("view", "reshape") or node.target is torch.reshape:
            self.rewrites[node.name] = ("param_view", state.target, shape)
        elif not (name in ("unsqueeze", "squeeze", "contiguous", "clone", "float", "to")
                  or node.target in (operator.getitem, torch.unsqueeze, torch.squeeze)):
            raise _unsupported(node, "an operation on a parameter outside a module; use a module")
        if node.target is operator.getitem and any(isinstance(i, slice) and i != slice(None)
                                                    for i in _as_tuple(node.args[1])):
            raise _unsupported(node, "a slice of a parameter")
        self.param_states[node.name] = state
        return True

    def pass_through(self, node: fx.Node) -> None:
        first = node.args[0]
        if isinstance(first, fx.Node) and first.name in self.grouped:
            self.grouped[node.name] = self.grouped[first.name]
            return
        dim, axis = self.input_of(node, first)
        shape, in_shape = self.shapes.get(node.name), self.shapes[first.name]
        if shape is None or len(shape) != len(in_shape) or shape[axis] != in_shape[axis]:
            raise _unsupported(node, "it changes the channel dimension")
        self.set(node, dim, axis)

    def functional_norm(self, node: fx.Node, kind: type, param_args: tuple[int, ...], names: tuple[str, ...]) -> None:
        dim, axis = self.input_of(node, node.args[0])
        owners = set()
        for index, attr in zip(param_args, names):
            p = _arg(node, index, attr)
            if p is None:
                continue
            if not isinstance(p, fx.Node) or p.op != "get_attr":
                raise _unsupported(node, "a functional norm whose parameters are not a norm module's; use the module")
            owner, _, leaf = str(p.target).rpartition(".")
            if leaf != attr:
                raise _unsupported(node, "a functional norm whose parameters are not a norm module's; use the module")
            owners.add(owner)
        owner = owners.pop() if len(owners) == 1 else ""
        module = self.model_modules.get(owner) if owner else None
        if isinstance(module, kind) and self.modules.get(owner) is not module:
            # fx copied only the parameters; the stages slice the norm module itself
            self.gm.add_submodule(owner, module)
            self.modules[owner] = module
        if not isinstance(module, kind):
            raise _unsupported(node, "a functional norm whose parameters are not one norm module's; use the module")
        x_shape = self.shapes[node.args[0].name]
        if kind is nn.LayerNorm:
            self.layer_norm(node, dim, axis, x_shape, tuple(_arg(node, 1, "normalized_shape")), owner)
        else:
            if axis != 1 or dim.has_input:
                raise _unsupported(node, "batch norm on the image input or not over dim 1")
            self.add_channelwise(node, dim, axis, owner)

    def owner_of(self, node: fx.Node, params: dict[str, Any], kind: type) -> str:
        """The module of type ``kind`` whose parameters a functional call reads (added to the graph module)."""
        owners = set()
        for attr, p in params.items():
            if p is None:
                continue
            owner, _, leaf = str(p.target).rpartition(".") if isinstance(p, fx.Node) and p.op == "get_attr" else ("", "", "")
            if leaf != attr:
                raise _unsupported(node, f"a functional {_target_name(node)} whose parameters are not a module's; "
                                         "use the module")
            owners.add(owner)
        owner = owners.pop() if len(owners) == 1 else ""
        module = self.model_modules.get(owner) if owner else None
        if not isinstance(module, kind):
            raise _unsupported(node, f"a functional {_target_name(node)} whose parameters are not one "
                                     f"{kind.__name__}'s; use the module")
        if self.modules.get(owner) is not module:  # fx copied only the parameters: stages slice the module
            self.gm.add_submodule(owner, module)
            self.modules[owner] = module
        return owner

    def functional_linear(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        """``F.linear(x, self.weight, self.bias)`` inside an nn.Linear subclass (timm's Linear)."""
        x = node.args[0]
        owner = self.owner_of(node, {"weight": _arg(node, 1, "weight"), "bias": _arg(node, 2, "bias")}, nn.Linear)
        in_dim, axis = self.input_of(node, x)
        if axis != len(self.shapes[x.name]) - 1:
            raise _unsupported(node, "Linear applied along an axis that is not the channels")
        self.add_mixing(node, in_dim, self.modules[owner].out_features, len(shape) - 1, owner)

    def reduce(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        x = node.args[0]
        dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        dims = _arg(node, 1, "dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        norm = {d % len(in_shape) for d in dims}
        if not dims or 0 in norm or axis in norm:
            raise _unsupported(node, "a reduction over the channels or the batch; only reductions over spatial "
                                     "dims keep the channels apart (e.g. x.mean((2, 3)))")
        if len(shape) == len(in_shape):
            self.set(node, dim, axis)
        else:
            self.set(node, dim, axis - sum(1 for d in norm if d < axis))

    def elementwise(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        result: Dim | None = None
        axis = None
        params: list[fx.Node] = []
        for arg in list(node.args) + list(node.kwargs.values()):
            if not isinstance(arg, fx.Node):
                continue
            if arg.name in self.param_states:
                if math.prod(self.shapes.get(arg.name, ())) != 1:  # a one-element constant broadcasts freely
                    params.append(arg)
                continue
            arg_shape = self.shape(arg)
            if arg_shape is None or len(arg_shape) == 0:
                continue
            if not self.tracked(arg):
                raise _unsupported(node, f"its input {arg.name!r} is a tensor the analysis did not follow")
            dim, a = self.dims[arg.name], self.axes[arg.name]
            if len(arg_shape) != len(shape) or a != (axis if axis is not None else a) or arg_shape[a] != shape[a]:
                raise _unsupported(node, "it broadcasts a tensor along the channel dimension (or mixes layouts)")
            axis = a
            result = dim if result is None else self.tie(result, dim, node)
        if result is None or axis is None:
            raise _unsupported(node, "no feature tensor operand")
        for p in params:
            self.use_param(node, p, result, axis, shape)
        self.set(node, result, axis)

    def use_param(self, node: fx.Node, p: fx.Node, dim: Dim, axis: int, shape: tuple[int, ...]) -> None:
        state = self.param_states[p.name]
        p_shape = self.shapes.get(p.name, ())
        paxis = axis - (len(shape) - len(p_shape))
        ok = 0 <= paxis < len(p_shape) and p_shape[paxis] == shape[axis]
        ok = ok and all(s == 1 for i, s in enumerate(p_shape) if i != paxis)
        raw = [i for i, s in enumerate(state.raw_shape) if s != 1]
        if not ok or len(raw) != 1 or state.raw_shape[raw[0]] != shape[axis]:
            raise _unsupported(node, f"parameter {state.target!r} is not a per-channel scale or shift of its "
                                     "tensor; use a module")
        if dim.has_input:
            raise _unsupported(node, "a per-channel parameter on the image input")
        if state.target in self.param_uses:
            self.tie(self.param_uses[state.target][0], dim, node)
        else:
            self.param_uses[state.target] = (dim, raw[0])

    def flatten(self, node: fx.Node, x: Any, start: int, end: int, shape: tuple[int, ...] | None) -> None:
        if isinstance(x, fx.Node) and x.name in self.grouped:
            self.ungroup(node, x, shape)
            return
        in_dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        start, end = start % len(in_shape), end % len(in_shape)
        if shape is not None and axis == 1 and start >= 2:  # spatial dims only: (B, C, H*W)
            self.set(node, in_dim, 1)
            return
        if shape is None or start != 1 or end != len(in_shape) - 1:
            raise _unsupported(node, "only flattening from dim 1 to (B, features) is supported")
        self.to_features(node, in_dim, axis, in_shape)

    def to_features(self, node: fx.Node, in_dim: Dim, axis: int, in_shape: tuple[int, ...]) -> None:
        """(B, C, *spatial) -> (B, C * prod(spatial)): each channel repeated prod(spatial) times."""
        repeat = int(math.prod(in_shape[2:])) if axis == 1 else int(math.prod(in_shape[1:-1]))
        if in_dim.has_input:
            raise _unsupported(node, "flatten of the image input")
        if axis != 1 and repeat != 1:
            raise _unsupported(node, "flatten of a channels-last feature map interleaves channels; permute the "
                                     "channels to dim 1 first")
        self.rewrites[node.name] = ("flatten",)
        self.set(node, Dim(tuple(Part(p.cls, p.repeat * repeat, p.lo, p.hi) for p in in_dim.parts)), 1)

    def view(self, node: fx.Node, shape: tuple[int, ...] | None, x: Any) -> None:
        if isinstance(x, fx.Node) and x.name in self.grouped:
            self.ungroup(node, x, shape)
            return
        dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        hint = ("view/reshape is supported as a flatten (x.view(x.size(0), -1)), (B, C) -> (B, C, 1, 1) and the "
                "channel shuffle view(B, g, C // g, H, W)")
        if shape is None or shape[0] != in_shape[0]:
            raise _unsupported(node, hint + "; keep the batch dim first")
        if shape == in_shape:
            self.rewrites[node.name] = ("identity",)
            self.set(node, dim, axis)
        elif len(shape) == 2 and len(in_shape) > 2:
            self.to_features(node, dim, axis, in_shape)
        elif len(in_shape) == 2 and len(shape) > 2 and shape[1] == in_shape[1] and all(s == 1 for s in shape[2:]):
            self.rewrites[node.name] = ("unflatten", dim, len(shape) - 2)
            self.set(node, dim, 1)
        elif (len(in_shape) == 4 and len(shape) == 5 and axis == 1 and shape[1] * shape[2] == in_shape[1]
              and shape[3:] == in_shape[2:]):
            self.rewrites[node.name] = ("identity",)  # a stage gathers its channels at the merge
            self.grouped[node.name] = _Grouped(dim, shape[1], False)
        else:
            raise _unsupported(node, f"{hint}; got {tuple(in_shape)} -> {tuple(shape)}")

    def ungroup(self, node: fx.Node, x: fx.Node, shape: tuple[int, ...] | None) -> None:
        grouped = self.grouped[x.name]
        in_shape = self.shapes[x.name]
        if shape is None or len(shape) != 4 or shape[1] != in_shape[1] * in_shape[2] or shape[2:] != in_shape[3:]:
            raise _unsupported(node, "only merging the two channel dims of a channel shuffle back is supported")
        if grouped.transposed:
            self.shuffle(node, grouped.dim, grouped.groups)
        else:
            self.rewrites[node.name] = ("identity",)
            self.set(node, grouped.dim, 1)

    def channel_shuffle(self, node: fx.Node, x: Any, groups: int) -> None:
        dim, axis = self.input_of(node, x)
        if axis != 1:
            raise _unsupported(node, "channel shuffle of a channels-last tensor")
        self.shuffle(node, dim, groups)

    def shuffle(self, node: fx.Node, dim: Dim, groups: int) -> None:
        """Channel ``i * g + j`` of the output is channel ``j * C / g + i`` of the input: a stage
        gathers its own channels in that order (no channel is tied to another)."""
        channels: list[tuple[int, int]] = []
        for p in dim.parts:
            if p.repeat != 1:
                raise _unsupported(node, "a channel shuffle of flattened features")
            channels.extend((p.cls, c) for c in range(p.lo, self.hi(p)))
        width = len(channels) // groups
        perm = tuple((k % groups) * width + k // groups for k in range(len(channels)))
        parts: list[list[int]] = []
        for k in perm:
            cls, c = channels[k]
            if parts and parts[-1][0] == cls and parts[-1][2] == c:
                parts[-1][2] = c + 1
            else:
                parts.append([cls, c, c + 1])
        out = Dim(tuple(Part(cls, 1, lo, hi) for cls, lo, hi in parts))
        self.rewrites[node.name] = ("gather", dim, out, perm)
        self.set(node, out, 1)

    def permute(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        x = node.args[0]
        in_shape = self.shapes.get(x.name) if isinstance(x, fx.Node) else None
        if in_shape is None:
            raise _unsupported(node, "permute of an untracked value")
        n = len(in_shape)
        if str(node.target) == "transpose" or node.target is torch.transpose:
            d0, d1 = _arg(node, 1, "dim0") % n, _arg(node, 2, "dim1") % n
            perm = list(range(n))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        else:
            perm = node.args[1:] if len(node.args) > 2 or not isinstance(_arg(node, 1, "dims"), (tuple, list)) \
                else _arg(node, 1, "dims")
            perm = [int(p) % n for p in perm]
        if x.name in self.grouped:
            if sorted(perm[1:3]) != [1, 2] or perm[0] != 0 or perm[3:] != list(range(3, n)):
                raise _unsupported(node, "a channel shuffle may only swap its two channel dims")
            g = self.grouped[x.name]
            self.grouped[node.name] = _Grouped(g.dim, g.groups, g.transposed != (perm[1] == 2))
            self.rewrites[node.name] = ("identity",)
            return
        dim, axis = self.input_of(node, x)
        if perm[0] != 0:
            raise _unsupported(node, "a permute that moves the batch dim")
        new_axis = perm.index(axis)
        if new_axis not in (1, n - 1):
            raise _unsupported(node, "a permute that puts the channels neither at dim 1 nor last")
        self.set(node, dim, new_axis)

    def squeeze(self, node: fx.Node, shape: tuple[int, ...], name: str) -> None:
        x = node.args[0]
        dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        if name == "unsqueeze":
            d = _arg(node, 1, "dim") % len(shape)
            if d == 0:
                raise _unsupported(node, "unsqueeze before the batch dim")
            self.set(node, dim, axis + (1 if d <= axis else 0))
            return
        d = _arg(node, 1, "dim")
        removed = ({i for i, s in enumerate(in_shape) if s == 1} if d is None
                   else {v % len(in_shape) for v in _as_tuple(d) if in_shape[v % len(in_shape)] == 1})
        if 0 in removed or axis in removed:
            raise _unsupported(node, "squeeze of the batch or channel dim; name the dims to squeeze, e.g. "
                                     "x.squeeze(-1).squeeze(-1) or x.flatten(1)")
        self.rewrites[node.name] = ("squeeze", tuple(sorted(removed)))
        self.set(node, dim, axis - sum(1 for v in removed if v < axis))

    def getitem(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        x, index = node.args[0], node.args[1]
        if not isinstance(x, fx.Node):
            return
        if x.name in self.seqs:
            seq = self.seqs[x.name]
            if isinstance(index, int):
                dim = seq[index]
                self.set(node, dim, self.axes[x.name])
            elif isinstance(index, slice):
                self.seqs[node.name] = seq[index]
                self.axes[node.name] = self.axes[x.name]
            else:
                raise _unsupported(node, "indexing a tuple of tensors by a non-constant")
            return
        if x.name in self.param_states:
            self.param_only(node)
            return
        if not self.tracked(x):
            if shape is not None and self.shape(x) is not None:
                raise _unsupported(node, "indexing a tensor the analysis did not follow")
            return  # a size tuple, a list of modules' outputs...
        self.index_tensor(node, x, index, shape)

    def index_tensor(self, node: fx.Node, x: fx.Node, index: Any, shape: tuple[int, ...] | None) -> None:
        dim, axis = self.dims[x.name], self.axes[x.name]
        in_shape = self.shapes[x.name]
        items = list(_as_tuple(index))
        if sum(1 for i in items if i is Ellipsis) > 1 or shape is None:
            raise _unsupported(node, "this indexing")
        if Ellipsis in items:
            at = items.index(Ellipsis)
            used = sum(1 for i in items if i is not None and i is not Ellipsis)
            items[at:at + 1] = [slice(None)] * (len(in_shape) - used)
        items += [slice(None)] * (len(in_shape) - sum(1 for i in items if i is not None))
        src, out_axis, channel_pos = 0, 0, None
        new_axis = None
        for pos, item in enumerate(items):
            if item is None:
                out_axis += 1
                continue
            if not isinstance(item, (int, slice)) or isinstance(item, bool):
                raise _unsupported(node, "indexing by a tensor; use a channel slice t[:, a:b] or torch.split")
            if src == 0 and item != slice(None):
                raise _unsupported(node, "indexing the batch dim")
            if src == axis:
                if isinstance(item, int):
                    raise _unsupported(node, "taking one channel by an integer index; use a slice t[:, i:i + 1]")
                if item.step not in (None, 1):
                    raise _unsupported(node, "a strided channel slice; use torch.split or a 1x1 conv")
                channel_pos = pos if item != slice(None) else None
                new_axis = out_axis
            if isinstance(item, slice):
                out_axis += 1
            src += 1
        if new_axis is None:
            raise _unsupported(node, "indexing that removes the channel dim")
        if channel_pos is not None:
            start, stop, _ = items[channel_pos].indices(in_shape[axis])
            prefix = self.slice_dim(dim, 0, start, node) if start > 0 else Dim(())
            piece = self.slice_dim(dim, start, stop, node)
            self.rewrites[node.name] = ("narrow", tuple(items), channel_pos, prefix, piece)
            dim = piece
        self.set(node, dim, new_axis)

    def split(self, node: fx.Node) -> None:
        x = node.args[0]
        dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        along = _arg(node, 2, "dim", 0)
        if along % len(in_shape) != axis:
            raise _unsupported(node, "split/chunk along a dim that is not the channels")
        meta = node.meta.get("tensor_meta")
        sizes = [m.shape[axis] for m in meta] if isinstance(meta, (tuple, list)) else None
        if not sizes:
            raise _unsupported(node, "split/chunk whose pieces could not be measured")
        pieces, start = [], 0
        for size in sizes:
            pieces.append(self.slice_dim(dim, start, start + size, node))
            start += size
        self.rewrites[node.name] = ("split", axis, tuple(pieces))
        self.seqs[node.name] = pieces
        self.axes[node.name] = axis

    def cat(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        tensors = _arg(node, 0, "tensors")
        along = _arg(node, 1, "dim", 0)
        if isinstance(tensors, fx.Node):
            if tensors.name not in self.seqs:
                raise _unsupported(node, "cat of a value the analysis did not follow")
            dims = list(self.seqs[tensors.name])
            axes = [self.axes[tensors.name]] * len(dims)
        else:
            dims, axes = [], []
            for t in tensors:
                d, a = self.input_of(node, t)
                dims.append(d)
                axes.append(a)
        if shape is None or len(set(axes)) != 1 or along % len(shape) != axes[0]:
            raise _unsupported(node, "cat is only supported along the channel dimension")
        parts = [p for d in dims for p in d.parts]
        self.set(node, Dim(tuple(parts)), axes[0])

    # -- results ---------------------------------------------------------------------------
    def resolve(self, dim: Dim) -> Dim:
        return Dim(tuple(self.leaves(dim)))

    def finish(self) -> GraphAnalysis:
        out_node = next(n for n in self.gm.graph.nodes if n.op == "output")
        output = out_node.args[0].name
        out_dim = self.resolve(self.dims[output])
        out_shape = self.shapes[output]
        hint = ("the model must return the logits (B, classes) of one classifier, a Linear or a 1x1 conv "
                "followed only by pooling/flatten; return only the classifier's output")
        part = out_dim.parts[0] if len(out_dim.parts) == 1 else None
        if (part is None or part.cls < 0 or part.repeat != 1 or len(out_shape) != 2 or part.lo != 0
                or part.hi != self.size_of(part.cls)):
            raise _unsupported(out_node, hint)
        head_root = part.cls
        heads = [n for n, _, cid in self.mixing_raw if self.resolve(self.dims[n.name]) == out_dim]
        if len(heads) != 1:
            raise _unsupported(out_node, hint)
        head = heads[0].name
        for n, in_dim, _ in self.mixing_raw:
            if any(p.cls == head_root for p in self.resolve(in_dim).parts):
                raise UnsupportedModelError(f"The classifier's logits are used by node {n.name!r}; expected them "
                                            "to be returned directly")

        # Groups: one per spatial resolution of the mixing ops' outputs, in order of appearance;
        # (B, features) outputs (MLP layers, SE gates written with Linear) join the last group.
        def spatial(node: fx.Node) -> tuple[int, ...]:
            shape, axis = self.shapes[node.name], self.axes[node.name]
            return tuple(s for i, s in enumerate(shape) if i not in (0, axis))

        resolutions: list[tuple[int, ...]] = []
        for node, *_ in self.mixing_raw:
            res = spatial(node)
            if res and res not in resolutions:
                resolutions.append(res)
        num_groups = max(1, len(resolutions))

        def group_of(node: fx.Node) -> int:
            res = spatial(node)
            return resolutions.index(res) if res else num_groups - 1

        classes: dict[int, ChannelClass] = {}
        mixing: dict[str, MixingOp] = {}
        for node, in_dim, cid in self.mixing_raw:
            is_head = node.name == head
            outs = self.resolve(self.dims[node.name]).parts
            if not is_head:
                offset = 0
                for p in outs:  # a tie can have cut the output into several classes
                    cls = classes.setdefault(p.cls, ChannelClass(p.cls, self.sizes[p.cls], self.granularity[p.cls],
                                                                 group_of(node)))
                    cls.producers.append(node.name)
                    cls.offsets[node.name] = offset
                    offset += p.hi - p.lo
            mixing[node.name] = MixingOp(node.name, self.targets[node.name], self.resolve(in_dim),
                                         OUTPUT if is_head else outs[0].cls, group_of(node), is_head,
                                         out_dim=Dim((Part(OUTPUT, 1, 0, self.size_of(head_root)),)) if is_head
                                         else Dim(outs))
        for root, cls in classes.items():
            bounds = sorted({0, cls.size} | {c for c in self.leaf_cuts(root) if 0 < c < cls.size})
            if any(b % cls.granularity for b in bounds):
                raise UnsupportedModelError(
                    f"A channel slice cuts a group of a grouped conv (channels of {cls.producers[0]!r}, groups of "
                    f"{cls.granularity}); slice at multiples of {cls.granularity}")
            cls.segments = tuple(zip(bounds, bounds[1:]))
        channelwise = {node.name: self.resolve(dim) for node, dim in self.channelwise_raw}
        for node, _ in self.channelwise_raw:
            mod = self.modules[self.targets[node.name]]
            if not isinstance(mod, nn.modules.batchnorm._BatchNorm):
                continue
            offset = 0
            for p in channelwise[node.name].parts:
                if p.repeat == 1 and p.cls in classes and (p.lo, p.hi) == (0, self.size_of(p.cls)):
                    classes[p.cls].norms.append(node.name)
                    classes[p.cls].offsets[node.name] = offset
                offset += (p.hi - p.lo) * p.repeat
        dims = {name: self.resolve(d) for name, d in self.dims.items()}
        for name, d in dims.items():
            dims[name] = Dim(tuple(Part(OUTPUT, p.repeat, p.lo, p.hi) if p.cls == head_root else p for p in d.parts))
        for cls in classes.values():
            if cls.size % cls.granularity:
                raise UnsupportedModelError(f"Channel class of size {cls.size} is not a multiple of its group size")
        params: dict[str, ParamSlice] = {}
        for target, (dim, axis) in self.param_uses.items():
            for name in self.param_nodes[target]:
                params[name] = ParamSlice(target, self.resolve(dim), axis)
        rewrites = {name: _resolve_rewrite(rw, self.resolve) for name, rw in self.rewrites.items()}
        return GraphAnalysis(self.gm, dims, classes, mixing, channelwise, self.shapes, num_groups, head,
                             self.input_shape, output=output, axes=dict(self.axes), targets=dict(self.targets),
                             params=params, rewrites=rewrites, dropped=frozenset(self.dropped))

    def leaf_cuts(self, leaf: int) -> set[int]:
        """The soft cuts (slices) that fall inside leaf class ``leaf``, from every class tied to it."""
        return self.cuts[leaf]


def _bounds(parts: list[Part]) -> set[int]:
    """Feature offsets at which ``parts`` (leaf ranges) begin."""
    out, offset = set(), 0
    for p in parts:
        out.add(offset)
        offset += (p.hi - p.lo) * p.repeat
    return out


def _resolve_rewrite(rewrite: tuple[Any, ...], resolve: Any) -> tuple[Any, ...]:
    out = []
    for item in rewrite:
        if isinstance(item, Dim):
            item = resolve(item)
        elif isinstance(item, tuple) and item and all(isinstance(d, Dim) for d in item):
            item = tuple(resolve(d) for d in item)
        out.append(item)
    return tuple(out)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def get_attr(root: nn.Module, target: str) -> Any:
    """The attribute a ``get_attr`` node reads."""
    return functools.reduce(getattr, target.split("."), root)


def analyze(model: nn.Module, *, input_shape: tuple[int, int, int]) -> GraphAnalysis:
    """Trace ``model`` and find its splittable channel classes, tied dimensions and mixing ops.

    Args:
        model: the base CNN (its weights are not changed).
        input_shape: ``(C, H, W)`` of one input image.

    Raises:
        UnsupportedModelError: a node cannot be split; the message names it, why, and what to change.
    """
    gm = trace(model)
    was_training = model.training
    gm.eval()
    ref = next(model.parameters(), None)
    example = torch.zeros(2, *input_shape, device=_device_of(model),
                          dtype=ref.dtype if ref is not None and ref.is_floating_point() else None)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as err:  # noqa: BLE001 - a model that fails on its own input shape
        raise UnsupportedModelError(
            f"Running {type(model).__name__} on an input of shape {tuple(example.shape)} failed "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); check --input-shape"
        ) from None
    finally:
        model.train(was_training)
        gm.train(was_training)
    analyzer = _Analyzer(gm, tuple(input_shape), model)
    analyzer.run()
    return analyzer.finish()


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
