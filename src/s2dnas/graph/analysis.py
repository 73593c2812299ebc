"""Graph analysis of any CNN: which channel dimensions can be split, and which are tied.

The model is traced with torch.fx and its shapes propagated on an example input. Every tensor in
the graph gets a :class:`Dim` describing its channel dimension (dim 1) as a concatenation of
*parts*; a part is a channel *class* (a union-find set of dimensions that must share one
partition) repeated ``repeat`` times (a flatten of ``(C, H, W)`` expands each channel into ``H*W``
features). Rules (METHOD.md, "Split"):

- a dense conv or a linear layer (a *mixing* op) starts a new class for its output;
- batch norm, activations, pooling, dropout keep the dimension;
- ``add``/``mul`` (residual adds, squeeze-and-excitation gates) tie their inputs' dimensions;
- depthwise and grouped convs tie their input and output (whole groups stay together);
- ``cat`` along channels makes a composite dimension of its inputs';
- ``flatten`` (or ``view(B, -1)``) repeats each channel ``H*W`` times.

The image input and the logits are never split. Anything else raises
:class:`~s2dnas.errors.UnsupportedModelError` naming the node.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from s2dnas.errors import UnsupportedModelError

__all__ = ["Part", "Dim", "ChannelClass", "MixingOp", "GraphAnalysis", "analyze", "trace"]

INPUT = -1  # class id of the image input (never split)
OUTPUT = -2  # class id of the logits (never split)

_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
_PASS_FUNCTIONS = {
    F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.sigmoid,
    F.tanh, F.mish, torch.relu, torch.sigmoid, torch.tanh, F.dropout, F.dropout2d, F.max_pool2d,
    F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.clamp, torch.clip,
}
try:  # torchvision's stochastic depth drops whole samples: it keeps the channel layout
    from torchvision.ops import stochastic_depth as _stochastic_depth

    _PASS_FUNCTIONS.add(_stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "contiguous", "clone", "float"}
_ELEMENTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                          operator.truediv, torch.add, torch.mul, torch.sub}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_", "sub", "div"}
_TORCHVISION_PASS_NAMES = {"StochasticDepth"}  # per-sample drop, identity in eval: keeps channels


@dataclass(frozen=True)
class Part:
    """``size`` channels of class ``cls``, each repeated ``repeat`` times (flattened spatial)."""

    cls: int
    repeat: int = 1


@dataclass(frozen=True)
class Dim:
    """A channel dimension as a concatenation of parts."""

    parts: tuple[Part, ...]

    @property
    def is_input(self) -> bool:
        return len(self.parts) == 1 and self.parts[0].cls == INPUT


@dataclass
class ChannelClass:
    """A set of tied channel dimensions that share one partition across stages."""

    id: int
    size: int
    granularity: int = 1  # a stage's slice is a whole number of these (groups of grouped convs)
    group: int = 0  # the split group whose ratios cut this class
    producers: list[str] = field(default_factory=list)  # node names of mixing ops writing it
    norms: list[str] = field(default_factory=list)  # batch norms reading exactly this class


@dataclass(frozen=True)
class MixingOp:
    """A dense conv or a linear layer: reads ``in_dim`` and writes class ``out_cls``."""

    node: str
    target: str
    in_dim: Dim
    out_cls: int
    group: int
    is_head: bool


@dataclass
class GraphAnalysis:
    """Result of :func:`analyze`: the traced graph with a channel dimension per tensor node."""

    graph_module: fx.GraphModule
    dims: dict[str, Dim]
    classes: dict[int, ChannelClass]
    mixing: dict[str, MixingOp]
    channelwise: dict[str, Dim]  # BN / depthwise / grouped conv node -> the dimension it slices
    shapes: dict[str, tuple[int, ...]]
    num_groups: int
    head: str
    input_shape: tuple[int, ...]

    def dim_size(self, dim: Dim) -> int:
        """Number of channels (features) of ``dim``."""
        return sum(self.class_size(p.cls) * p.repeat for p in dim.parts)

    def class_size(self, cls: int) -> int:
        """Channels of class ``cls`` (the image's channels for the input class)."""
        if cls == INPUT:
            return self.input_shape[0]
        return self.classes[cls].size

    def signature(self) -> str:
        """A short fingerprint of the split structure: architectures carry it to detect misuse."""
        import hashlib

        text = repr((self.input_shape, self.num_groups,
                     sorted((c.id, c.size, c.granularity, c.group) for c in self.classes.values()),
                     sorted((m.node, m.group, m.is_head) for m in self.mixing.values())))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; a failure raises :class:`UnsupportedModelError`."""
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - fx raises many kinds for data-dependent control flow
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsupportedModelError(
            f"Cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {first[:200]}); "
            "the model's forward must not branch on tensor values — wrap such code in a leaf module "
            "or pass a traceable model"
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
    return UnsupportedModelError(
        f"Cannot split node {node.name!r} ({node.op} {_target_name(node)}): {why}. "
        "Supported: Conv2d (dense, depthwise, grouped), BatchNorm, Linear, activations, pooling, "
        "dropout, add/mul, cat and flatten along channels"
    )


def _target_name(node: fx.Node) -> str:
    t = node.target
    return getattr(t, "__name__", None) or str(t)


class _Analyzer:
    """One pass over the traced graph in topological order."""

    def __init__(self, gm: fx.GraphModule, input_shape: tuple[int, ...]) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.input_shape = input_shape
        self.uf = _UnionFind()
        self.sizes: dict[int, int] = {}
        self.granularity: dict[int, int] = {}
        self.dims: dict[str, Dim] = {}
        self.mixing_raw: list[tuple[fx.Node, Dim, int, bool]] = []
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
        return cid

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            return None
        return tuple(meta.shape)

    def tensor_dim(self, arg: Any, node: fx.Node) -> Dim | None:
        if isinstance(arg, fx.Node) and arg.name in self.dims:
            return self.dims[arg.name]
        if isinstance(arg, fx.Node) and self.shape(arg) is not None and len(self.shape(arg)) > 1:
            raise _unsupported(node, f"its input {arg.name!r} is a tensor the analysis did not follow")
        return None

    def tie(self, a: Dim, b: Dim, node: fx.Node) -> Dim:
        if a == b:
            return a
        if INPUT in {p.cls for p in a.parts + b.parts}:
            raise _unsupported(node, "it combines the image input with features channel by channel")
        if len(a.parts) != len(b.parts):
            raise _unsupported(node, "it combines a concatenation with a tensor of another channel layout")
        for pa, pb in zip(a.parts, b.parts):
            if pa.repeat != pb.repeat or self.sizes[self.uf.find(pa.cls)] != self.sizes[self.uf.find(pb.cls)]:
                raise _unsupported(node, "it combines tensors whose channel layouts differ")
            root = self.uf.union(pa.cls, pb.cls)
            self.granularity[root] = math.lcm(self.granularity[self.uf.find(pa.cls)],
                                              self.granularity[self.uf.find(pb.cls)])
        return a

    # -- the pass --------------------------------------------------------------------------
    def run(self) -> None:
        nodes = list(self.gm.graph.nodes)
        for node in nodes:
            shape = self.shape(node)
            if shape is not None:
                self.shapes[node.name] = shape
            handler = getattr(self, f"_on_{node.op}")
            handler(node, shape)

    def _on_placeholder(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        if shape is None or len(shape) != 4:
            raise _unsupported(node, "expected one image input of shape (B, C, H, W)")
        if any(n.op == "placeholder" for n in self.gm.graph.nodes if n is not node and n.name in self.dims):
            raise _unsupported(node, "the model takes more than one input")
        self.dims[node.name] = Dim((Part(INPUT),))

    def _on_get_attr(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        if any(u.op != "output" for u in node.users) and shape is not None:
            raise _unsupported(node, "a parameter or buffer is used outside a module (functional layer)")

    def _on_output(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        out = node.args[0]
        if not isinstance(out, fx.Node):
            raise _unsupported(node, "the model must return one logits tensor (not a tuple or dict)")
        mixing_nodes = {n.name for n, *_ in self.mixing_raw}
        if out.name not in mixing_nodes or not isinstance(self.modules.get(str(out.target)), nn.Linear):
            raise _unsupported(node, "the model must end with a Linear classifier whose output it returns")

    def _on_call_module(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        mod = self.modules[str(node.target)]
        x = node.args[0] if node.args else None
        in_dim = self.tensor_dim(x, node)
        if in_dim is None:
            raise _unsupported(node, "its input is not a tensor the analysis follows")
        if isinstance(mod, nn.Conv2d):
            if mod.groups == 1:
                self.add_mixing(node, in_dim, mod.out_channels)
                return
            if mod.in_channels != mod.out_channels:
                raise _unsupported(node, "grouped conv with in_channels != out_channels (channel multiplier)")
            if in_dim.is_input:
                raise _unsupported(node, "grouped conv on the image input")
            group_size = mod.in_channels // mod.groups
            if group_size > 1:
                if len(in_dim.parts) != 1 or in_dim.parts[0].repeat != 1:
                    raise _unsupported(node, "grouped conv over a concatenation")
                root = self.uf.find(in_dim.parts[0].cls)
                self.granularity[root] = math.lcm(self.granularity[root], group_size)
            self.channelwise_raw.append((node, in_dim))
            self.dims[node.name] = in_dim
        elif isinstance(mod, nn.Linear):
            if shape is None or len(shape) != 2:
                raise _unsupported(node, "Linear applied to a tensor that is not (B, features)")
            self.add_mixing(node, in_dim, mod.out_features)
        elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if in_dim.is_input:
                raise _unsupported(node, "batch norm on the image input")
            self.channelwise_raw.append((node, in_dim))
            self.dims[node.name] = in_dim
        elif isinstance(mod, nn.Flatten):
            self.flatten(node, x, in_dim, mod.start_dim, shape)
        elif isinstance(mod, _PASS_MODULES) or type(mod).__name__ in _TORCHVISION_PASS_NAMES:
            self.dims[node.name] = in_dim
        else:
            raise _unsupported(node, f"module type {type(mod).__name__} is not supported")

    def add_mixing(self, node: fx.Node, in_dim: Dim, out_size: int) -> None:
        cid = self.new_class(out_size)
        self.mixing_raw.append((node, in_dim, cid, False))
        self.dims[node.name] = Dim((Part(cid),))

    def flatten(self, node: fx.Node, x: Any, in_dim: Dim, start_dim: int, shape: tuple[int, ...] | None) -> None:
        in_shape = self.shapes.get(x.name) if isinstance(x, fx.Node) else None
        if start_dim != 1 or in_shape is None or shape is None or len(shape) != 2:
            raise _unsupported(node, "only flattening from dim 1 to (B, features) is supported")
        repeat = int(math.prod(in_shape[2:]))
        if in_dim.is_input:
            raise _unsupported(node, "flatten of the image input")
        self.dims[node.name] = Dim(tuple(Part(p.cls, p.repeat * repeat) for p in in_dim.parts))

    def _on_call_function(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        fn = node.target
        if shape is None:  # size(), getattr(shape), arithmetic on ints: no channels involved
            if fn is operator.getitem and isinstance(node.args[0], fx.Node) and node.args[0].name in self.dims:
                raise _unsupported(node, "indexing into a tensor")
            return
        if fn in _PASS_FUNCTIONS:
            self.pass_through(node)
        elif fn in _ELEMENTWISE_FUNCTIONS:
            self.elementwise(node, shape)
        elif fn is torch.cat:
            self.cat(node, shape)
        elif fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            self.flatten(node, node.args[0], self.tensor_dim(node.args[0], node) or Dim(()), start, shape)
        elif fn is torch.mean:
            self.reduce_spatial(node, shape)
        elif fn is operator.getitem:
            raise _unsupported(node, "indexing into a tensor")
        else:
            raise _unsupported(node, "this function is not supported")

    def _on_call_method(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        name = node.target
        if shape is None:
            return
        if name in _PASS_METHODS:
            self.pass_through(node)
        elif name in _ELEMENTWISE_METHODS:
            self.elementwise(node, shape)
        elif name == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            self.flatten(node, node.args[0], self.tensor_dim(node.args[0], node) or Dim(()), start, shape)
        elif name in ("view", "reshape"):
            x = node.args[0]
            in_dim = self.tensor_dim(x, node)
            sizes = node.args[1:]
            if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
                sizes = tuple(sizes[0])
            if in_dim is None or shape is None or len(shape) != 2 or len(sizes) != 2 or isinstance(sizes[1], int) and sizes[1] != -1:
                raise _unsupported(node, "view/reshape is only supported as (B, -1) (a flatten)")
            self.flatten(node, x, in_dim, 1, shape)
        elif name == "mean":
            self.reduce_spatial(node, shape)
        else:
            raise _unsupported(node, f"tensor method {name!r} is not supported")

    def pass_through(self, node: fx.Node) -> None:
        in_dim = self.tensor_dim(node.args[0], node)
        if in_dim is None:
            raise _unsupported(node, "its first argument is not a tensor the analysis follows")
        self.dims[node.name] = in_dim

    def reduce_spatial(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        in_shape = self.shapes.get(node.args[0].name)
        if not dims or in_shape is None or any(d % len(in_shape) < 2 for d in dims):
            raise _unsupported(node, "mean is only supported over spatial dimensions")
        self.pass_through(node)
        if len(shape) == 2 and len(in_shape) == 4:  # mean over (2, 3) without keepdim: (B, C)
            pass

    def elementwise(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        result: Dim | None = None
        for arg in list(node.args) + list(node.kwargs.values()):
            dim = self.tensor_dim(arg, node)
            if dim is None:
                continue
            arg_shape = self.shapes[arg.name]
            if len(arg_shape) < 2 or arg_shape[1] != shape[1]:
                raise _unsupported(node, "it broadcasts a tensor along the channel dimension")
            result = dim if result is None else self.tie(result, dim, node)
        if result is None:
            raise _unsupported(node, "no tensor operand")
        self.dims[node.name] = result

    def cat(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if dim % len(shape) != 1:
            raise _unsupported(node, "cat is only supported along the channel dimension")
        parts: list[Part] = []
        for t in tensors:
            d = self.tensor_dim(t, node)
            if d is None or d.is_input:
                raise _unsupported(node, "cat of the image input or of an untracked tensor")
            parts.extend(d.parts)
        self.dims[node.name] = Dim(tuple(parts))

    # -- results ---------------------------------------------------------------------------
    def resolve(self, dim: Dim) -> Dim:
        return Dim(tuple(Part(p.cls if p.cls < 0 else self.uf.find(p.cls), p.repeat) for p in dim.parts))

    def finish(self) -> GraphAnalysis:
        out_node = next(n for n in self.gm.graph.nodes if n.op == "output")
        head = out_node.args[0].name
        # Groups: one per spatial resolution of the mixing ops' outputs, in order of appearance;
        # (B, features) outputs (MLP layers) join the last resolution group.
        resolutions: list[tuple[int, ...]] = []
        for node, *_ in self.mixing_raw:
            res = self.shapes[node.name][2:]
            if res and res not in resolutions:
                resolutions.append(res)
        num_groups = max(1, len(resolutions))

        def group_of(node: fx.Node) -> int:
            res = self.shapes[node.name][2:]
            return resolutions.index(res) if res else num_groups - 1

        classes: dict[int, ChannelClass] = {}
        mixing: dict[str, MixingOp] = {}
        for node, in_dim, cid, _ in self.mixing_raw:
            is_head = node.name == head
            root = self.uf.find(cid)
            if is_head:
                out_cls = OUTPUT
            else:
                out_cls = root
                cls = classes.setdefault(root, ChannelClass(root, self.sizes[root], self.granularity[root],
                                                             group_of(node)))
                cls.producers.append(node.name)
            mixing[node.name] = MixingOp(node.name, str(node.target), self.resolve(in_dim), out_cls,
                                         group_of(node), is_head)
        if any(p.cls == OUTPUT for d in self.dims.values() for p in d.parts if d is not self.dims[head]):
            raise UnsupportedModelError("The classifier's output feeds other layers; expected it to be the output")
        # the head output's own class must not be tied to anything else
        head_cls = self.uf.find(self.dims[head].parts[0].cls)
        for name, dim in self.dims.items():
            if name != head and any(p.cls >= 0 and self.uf.find(p.cls) == head_cls for p in dim.parts):
                raise UnsupportedModelError(f"The classifier's logits are used by node {name!r}; expected them "
                                            "to be returned directly")
        channelwise = {node.name: self.resolve(dim) for node, dim in self.channelwise_raw}
        for node, dim in self.channelwise_raw:
            mod = self.modules[str(node.target)]
            if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)) and len(dim.parts) == 1 and dim.parts[0].repeat == 1:
                classes[self.uf.find(dim.parts[0].cls)].norms.append(node.name)
        dims = {name: self.resolve(d) for name, d in self.dims.items() if name != head}
        dims[head] = Dim((Part(OUTPUT),))
        for cls in classes.values():
            if cls.size % cls.granularity:
                raise UnsupportedModelError(f"Channel class of size {cls.size} is not a multiple of its group size")
        return GraphAnalysis(self.gm, dims, classes, mixing, channelwise, self.shapes, num_groups, head,
                             self.input_shape)


def analyze(model: nn.Module, *, input_shape: tuple[int, int, int]) -> GraphAnalysis:
    """Trace ``model`` and find its splittable channel classes, tied dimensions and mixing ops.

    Args:
        model: the base CNN (its weights are not changed).
        input_shape: ``(C, H, W)`` of one input image.

    Raises:
        UnsupportedModelError: a node cannot be split; the message names it and why.
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
    analyzer = _Analyzer(gm, tuple(input_shape))
    analyzer.run()
    return analyzer.finish()


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
