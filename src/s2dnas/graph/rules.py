"""What each torch.fx node does to channel dimensions: one pass over the traced graph.

:class:`NodeRules` visits the nodes in topological order and gives every tensor node a
:class:`~s2dnas.graph.channels.Dim` and a channel axis (METHOD.md, "Split"):

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

Ties and cuts are recorded in a :class:`~s2dnas.graph.classes.ClassBook`. Each node that a stage
must compute differently (its channel count appears in its arguments) gets a *rewrite* that
:mod:`s2dnas.space.build` applies with the stage's own sizes. Anything else raises
:class:`~s2dnas.errors.UnsupportedModelError` naming the node and the rewrite that would help.
"""
from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from s2dnas.graph.channels import INPUT, Dim, Part
from s2dnas.graph.classes import ClassBook
from s2dnas.graph.trace import arg, as_tuple, target_name, unsupported

__all__ = ["NodeRules"]

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


def _is_pass_function(fn: Any) -> bool:
    """A function that keeps the channel layout. torchvision's ``stochastic_depth`` (it drops whole
    samples) counts once ``torchvision.ops`` is loaded, as it is in any model that calls it; importing
    it here would load torch._dynamo and add seconds to every start of the CLI."""
    if fn in _PASS_FUNCTIONS:
        return True
    ops = sys.modules.get("torchvision.ops")
    return ops is not None and fn is getattr(ops, "stochastic_depth", None)


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


class NodeRules:
    """One pass over the traced graph in topological order (:meth:`run`); the state it leaves is
    what :func:`s2dnas.graph.plan.build_analysis` turns into a :class:`GraphAnalysis`."""

    def __init__(self, gm: fx.GraphModule, input_shape: tuple[int, ...], model: nn.Module) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.model_modules = dict(model.named_modules())  # owners of parameters read by get_attr
        self.input_shape = input_shape
        self.book = ClassBook(input_shape[0])
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

    # -- helpers ---------------------------------------------------------------------------
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
            raise unsupported(node, f"its input {arg.name!r} is a tuple of tensors or a channel-shuffle view")
        raise unsupported(node, "its input is not a tensor the analysis follows")

    # -- the pass --------------------------------------------------------------------------
    def run(self) -> None:
        for node in list(self.gm.graph.nodes):
            shape = self.shape(node)
            if shape is not None:
                self.shapes[node.name] = shape
            getattr(self, f"_on_{node.op}")(node, shape)

    def _on_placeholder(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        if shape is None or len(shape) != 4:
            raise unsupported(node, "expected one image input of shape (B, C, H, W)")
        if any(n.op == "placeholder" for n in self.gm.graph.nodes if n is not node and n.name in self.dims):
            raise unsupported(node, "the model takes more than one input")
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
            raise unsupported(node, "the model must return one logits tensor (not a tuple or dict); return "
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
                raise unsupported(node, "a Conv2d on a tensor whose channels are not dim 1 of (B, C, H, W)")
            if mod.groups == 1:
                self.add_mixing(node, in_dim, mod.out_channels, 1)
                return
            if mod.in_channels != mod.out_channels:
                raise unsupported(node, "grouped conv with in_channels != out_channels (a channel multiplier); "
                                         "use a depthwise conv followed by a 1x1 conv")
            if in_dim.has_input:
                raise unsupported(node, "grouped conv on the image input")
            group_size = mod.in_channels // mod.groups
            if group_size > 1:
                offset = 0
                for p in self.book.leaves(in_dim):
                    if p.repeat != 1 or offset % group_size or p.lo % group_size or (p.hi - p.lo) % group_size:
                        raise unsupported(node, "grouped conv over tensors concatenated inside its groups")
                    root = self.book.uf.find(p.cls)
                    self.book.granularity[root] = math.lcm(self.book.granularity[root], group_size)
                    offset += p.hi - p.lo
            self.add_channelwise(node, in_dim, axis, str(node.target))
        elif isinstance(mod, nn.Linear):
            if shape is None or axis != len(x_shape) - 1:
                raise unsupported(node, "Linear applied along an axis that is not the channels; permute the "
                                         "channels last first (x.permute(0, 2, 3, 1)) or flatten")
            self.add_mixing(node, in_dim, mod.out_features, len(shape) - 1)
        elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if in_dim.is_input or axis != 1:
                raise unsupported(node, "batch norm on the image input or not over dim 1")
            self.add_channelwise(node, in_dim, axis, str(node.target))
        elif isinstance(mod, nn.LayerNorm):
            self.layer_norm(node, in_dim, axis, x_shape, tuple(mod.normalized_shape), str(node.target))
        elif isinstance(mod, _PASS_MODULES) or type(mod).__name__ in _TORCHVISION_PASS_NAMES:
            self.set(node, in_dim, axis)
        else:
            raise unsupported(node, f"module type {type(mod).__name__} is not supported; if it keeps channels "
                                     "apart, write its forward with supported operations")

    def add_mixing(self, node: fx.Node, in_dim: Dim, out_size: int, axis: int, target: str | None = None) -> None:
        cid = self.book.new_class(out_size)
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
            raise unsupported(node, "layer norm is supported over the channels only (channels last, "
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
            raise unsupported(node, "torch.max/min with a dim returns (values, indices); use torch.amax/amin")
        if self.param_only(node):
            return
        if fn in _CAT_FUNCTIONS:
            self.cat(node, shape)
        elif shape is None and fn not in _SPLIT_FUNCTIONS:
            return  # size(), arithmetic on ints: no channels involved
        elif _is_pass_function(fn):
            self.pass_through(node)
        elif fn in _ELEMENTWISE_FUNCTIONS:
            self.elementwise(node, shape)
        elif fn is torch.flatten:
            self.flatten(node, first, arg(node, 1, "start_dim", 0), arg(node, 2, "end_dim", -1), shape)
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
            self.channel_shuffle(node, first, arg(node, 1, "groups"))
        elif fn is F.batch_norm:
            self.functional_norm(node, nn.modules.batchnorm._BatchNorm, (1, 2, 3, 4), ("running_mean",
                                 "running_var", "weight", "bias"))
        elif fn is F.linear:
            self.functional_linear(node, shape)
        elif fn is F.layer_norm:
            self.functional_norm(node, nn.LayerNorm, (2, 3), ("weight", "bias"))
        else:
            raise unsupported(node, "this function is not supported")

    def _on_call_method(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        name = str(node.target)
        first = node.args[0]
        if name == "size" or name == "dim":
            return
        if name in ("max", "min") and len(node.args) + len(node.kwargs) > 1:
            raise unsupported(node, f"x.{name}(dim) returns (values, indices); use x.a{name}(dim)")
        if self.param_only(node):
            return
        if shape is None and name not in ("split", "chunk"):
            return
        if name in _PASS_METHODS:
            self.pass_through(node)
        elif name in _ELEMENTWISE_METHODS:
            self.elementwise(node, shape)
        elif name == "flatten":
            self.flatten(node, first, arg(node, 1, "start_dim", 0), arg(node, 2, "end_dim", -1), shape)
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
            raise unsupported(node, f"tensor method {name!r} is not supported")

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
            raise unsupported(node, "arithmetic on parameters outside a module")
        state = self.param_states[tensors[0].name]
        name = str(node.target)
        if name in ("view", "reshape") or node.target is torch.reshape:
            self.rewrites[node.name] = ("param_view", state.target, shape)
        elif not (name in ("unsqueeze", "squeeze", "contiguous", "clone", "float", "to")
                  or node.target in (operator.getitem, torch.unsqueeze, torch.squeeze)):
            raise unsupported(node, "an operation on a parameter outside a module; use a module")
        if node.target is operator.getitem and any(isinstance(i, slice) and i != slice(None)
                                                    for i in as_tuple(node.args[1])):
            raise unsupported(node, "a slice of a parameter")
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
            raise unsupported(node, "it changes the channel dimension")
        self.set(node, dim, axis)

    def functional_norm(self, node: fx.Node, kind: type, param_args: tuple[int, ...], names: tuple[str, ...]) -> None:
        dim, axis = self.input_of(node, node.args[0])
        owners = set()
        for index, attr in zip(param_args, names):
            p = arg(node, index, attr)
            if p is None:
                continue
            if not isinstance(p, fx.Node) or p.op != "get_attr":
                raise unsupported(node, "a functional norm whose parameters are not a norm module's; use the module")
            owner, _, leaf = str(p.target).rpartition(".")
            if leaf != attr:
                raise unsupported(node, "a functional norm whose parameters are not a norm module's; use the module")
            owners.add(owner)
        owner = owners.pop() if len(owners) == 1 else ""
        module = self.model_modules.get(owner) if owner else None
        if isinstance(module, kind) and self.modules.get(owner) is not module:
            # fx copied only the parameters; the stages slice the norm module itself
            self.gm.add_submodule(owner, module)
            self.modules[owner] = module
        if not isinstance(module, kind):
            raise unsupported(node, "a functional norm whose parameters are not one norm module's; use the module")
        x_shape = self.shapes[node.args[0].name]
        if kind is nn.LayerNorm:
            self.layer_norm(node, dim, axis, x_shape, tuple(arg(node, 1, "normalized_shape")), owner)
        else:
            if axis != 1 or dim.has_input:
                raise unsupported(node, "batch norm on the image input or not over dim 1")
            self.add_channelwise(node, dim, axis, owner)

    def owner_of(self, node: fx.Node, params: dict[str, Any], kind: type) -> str:
        """The module of type ``kind`` whose parameters a functional call reads (added to the graph module)."""
        owners = set()
        for attr, p in params.items():
            if p is None:
                continue
            owner, _, leaf = str(p.target).rpartition(".") if isinstance(p, fx.Node) and p.op == "get_attr" else ("", "", "")
            if leaf != attr:
                raise unsupported(node, f"a functional {target_name(node)} whose parameters are not a module's; "
                                         "use the module")
            owners.add(owner)
        owner = owners.pop() if len(owners) == 1 else ""
        module = self.model_modules.get(owner) if owner else None
        if not isinstance(module, kind):
            raise unsupported(node, f"a functional {target_name(node)} whose parameters are not one "
                                     f"{kind.__name__}'s; use the module")
        if self.modules.get(owner) is not module:  # fx copied only the parameters: stages slice the module
            self.gm.add_submodule(owner, module)
            self.modules[owner] = module
        return owner

    def functional_linear(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        """``F.linear(x, self.weight, self.bias)`` inside an nn.Linear subclass (timm's Linear)."""
        x = node.args[0]
        owner = self.owner_of(node, {"weight": arg(node, 1, "weight"), "bias": arg(node, 2, "bias")}, nn.Linear)
        in_dim, axis = self.input_of(node, x)
        if axis != len(self.shapes[x.name]) - 1:
            raise unsupported(node, "Linear applied along an axis that is not the channels")
        self.add_mixing(node, in_dim, self.modules[owner].out_features, len(shape) - 1, owner)

    def reduce(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        x = node.args[0]
        dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        dims = arg(node, 1, "dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        norm = {d % len(in_shape) for d in dims}
        if not dims or 0 in norm or axis in norm:
            raise unsupported(node, "a reduction over the channels or the batch; only reductions over spatial "
                                     "dims keep the channels apart (e.g. x.mean((2, 3)))")
        if len(shape) == len(in_shape):
            self.set(node, dim, axis)
        else:
            self.set(node, dim, axis - sum(1 for d in norm if d < axis))

    def elementwise(self, node: fx.Node, shape: tuple[int, ...]) -> None:
        result: Dim | None = None
        axis = None
        params: list[fx.Node] = []
        for operand in list(node.args) + list(node.kwargs.values()):
            if not isinstance(operand, fx.Node):
                continue
            if operand.name in self.param_states:
                if math.prod(self.shapes.get(operand.name, ())) != 1:  # a one-element constant broadcasts freely
                    params.append(operand)
                continue
            arg_shape = self.shape(operand)
            if arg_shape is None or len(arg_shape) == 0:
                continue
            if not self.tracked(operand):
                raise unsupported(node, f"its input {operand.name!r} is a tensor the analysis did not follow")
            dim, a = self.dims[operand.name], self.axes[operand.name]
            if len(arg_shape) != len(shape) or a != (axis if axis is not None else a) or arg_shape[a] != shape[a]:
                raise unsupported(node, "it broadcasts a tensor along the channel dimension (or mixes layouts)")
            axis = a
            result = dim if result is None else self.book.tie(result, dim, node)
        if result is None or axis is None:
            raise unsupported(node, "no feature tensor operand")
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
            raise unsupported(node, f"parameter {state.target!r} is not a per-channel scale or shift of its "
                                     "tensor; use a module")
        if dim.has_input:
            raise unsupported(node, "a per-channel parameter on the image input")
        if state.target in self.param_uses:
            self.book.tie(self.param_uses[state.target][0], dim, node)
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
            raise unsupported(node, "only flattening from dim 1 to (B, features) is supported")
        self.to_features(node, in_dim, axis, in_shape)

    def to_features(self, node: fx.Node, in_dim: Dim, axis: int, in_shape: tuple[int, ...]) -> None:
        """(B, C, *spatial) -> (B, C * prod(spatial)): each channel repeated prod(spatial) times."""
        repeat = int(math.prod(in_shape[2:])) if axis == 1 else int(math.prod(in_shape[1:-1]))
        if in_dim.has_input:
            raise unsupported(node, "flatten of the image input")
        if axis != 1 and repeat != 1:
            raise unsupported(node, "flatten of a channels-last feature map interleaves channels; permute the "
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
            raise unsupported(node, hint + "; keep the batch dim first")
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
            raise unsupported(node, f"{hint}; got {tuple(in_shape)} -> {tuple(shape)}")

    def ungroup(self, node: fx.Node, x: fx.Node, shape: tuple[int, ...] | None) -> None:
        grouped = self.grouped[x.name]
        in_shape = self.shapes[x.name]
        if shape is None or len(shape) != 4 or shape[1] != in_shape[1] * in_shape[2] or shape[2:] != in_shape[3:]:
            raise unsupported(node, "only merging the two channel dims of a channel shuffle back is supported")
        if grouped.transposed:
            self.shuffle(node, grouped.dim, grouped.groups)
        else:
            self.rewrites[node.name] = ("identity",)
            self.set(node, grouped.dim, 1)

    def channel_shuffle(self, node: fx.Node, x: Any, groups: int) -> None:
        dim, axis = self.input_of(node, x)
        if axis != 1:
            raise unsupported(node, "channel shuffle of a channels-last tensor")
        self.shuffle(node, dim, groups)

    def shuffle(self, node: fx.Node, dim: Dim, groups: int) -> None:
        """Channel ``i * g + j`` of the output is channel ``j * C / g + i`` of the input: a stage
        gathers its own channels in that order (no channel is tied to another)."""
        channels: list[tuple[int, int]] = []
        for p in dim.parts:
            if p.repeat != 1:
                raise unsupported(node, "a channel shuffle of flattened features")
            channels.extend((p.cls, c) for c in range(p.lo, self.book.hi(p)))
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
            raise unsupported(node, "permute of an untracked value")
        n = len(in_shape)
        if str(node.target) == "transpose" or node.target is torch.transpose:
            d0, d1 = arg(node, 1, "dim0") % n, arg(node, 2, "dim1") % n
            perm = list(range(n))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        else:
            perm = node.args[1:] if len(node.args) > 2 or not isinstance(arg(node, 1, "dims"), (tuple, list)) \
                else arg(node, 1, "dims")
            perm = [int(p) % n for p in perm]
        if x.name in self.grouped:
            if sorted(perm[1:3]) != [1, 2] or perm[0] != 0 or perm[3:] != list(range(3, n)):
                raise unsupported(node, "a channel shuffle may only swap its two channel dims")
            g = self.grouped[x.name]
            self.grouped[node.name] = _Grouped(g.dim, g.groups, g.transposed != (perm[1] == 2))
            self.rewrites[node.name] = ("identity",)
            return
        dim, axis = self.input_of(node, x)
        if perm[0] != 0:
            raise unsupported(node, "a permute that moves the batch dim")
        new_axis = perm.index(axis)
        if new_axis not in (1, n - 1):
            raise unsupported(node, "a permute that puts the channels neither at dim 1 nor last")
        self.set(node, dim, new_axis)

    def squeeze(self, node: fx.Node, shape: tuple[int, ...], name: str) -> None:
        x = node.args[0]
        dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        if name == "unsqueeze":
            d = arg(node, 1, "dim") % len(shape)
            if d == 0:
                raise unsupported(node, "unsqueeze before the batch dim")
            self.set(node, dim, axis + (1 if d <= axis else 0))
            return
        d = arg(node, 1, "dim")
        removed = ({i for i, s in enumerate(in_shape) if s == 1} if d is None
                   else {v % len(in_shape) for v in as_tuple(d) if in_shape[v % len(in_shape)] == 1})
        if 0 in removed or axis in removed:
            raise unsupported(node, "squeeze of the batch or channel dim; name the dims to squeeze, e.g. "
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
                raise unsupported(node, "indexing a tuple of tensors by a non-constant")
            return
        if x.name in self.param_states:
            self.param_only(node)
            return
        if not self.tracked(x):
            if shape is not None and self.shape(x) is not None:
                raise unsupported(node, "indexing a tensor the analysis did not follow")
            return  # a size tuple, a list of modules' outputs...
        self.index_tensor(node, x, index, shape)

    def index_tensor(self, node: fx.Node, x: fx.Node, index: Any, shape: tuple[int, ...] | None) -> None:
        dim, axis = self.dims[x.name], self.axes[x.name]
        in_shape = self.shapes[x.name]
        items = list(as_tuple(index))
        if sum(1 for i in items if i is Ellipsis) > 1 or shape is None:
            raise unsupported(node, "this indexing")
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
                raise unsupported(node, "indexing by a tensor; use a channel slice t[:, a:b] or torch.split")
            if src == 0 and item != slice(None):
                raise unsupported(node, "indexing the batch dim")
            if src == axis:
                if isinstance(item, int):
                    raise unsupported(node, "taking one channel by an integer index; use a slice t[:, i:i + 1]")
                if item.step not in (None, 1):
                    raise unsupported(node, "a strided channel slice; use torch.split or a 1x1 conv")
                channel_pos = pos if item != slice(None) else None
                new_axis = out_axis
            if isinstance(item, slice):
                out_axis += 1
            src += 1
        if new_axis is None:
            raise unsupported(node, "indexing that removes the channel dim")
        if channel_pos is not None:
            start, stop, _ = items[channel_pos].indices(in_shape[axis])
            prefix = self.book.slice_dim(dim, 0, start, node) if start > 0 else Dim(())
            piece = self.book.slice_dim(dim, start, stop, node)
            self.rewrites[node.name] = ("narrow", tuple(items), channel_pos, prefix, piece)
            dim = piece
        self.set(node, dim, new_axis)

    def split(self, node: fx.Node) -> None:
        x = node.args[0]
        dim, axis = self.input_of(node, x)
        in_shape = self.shapes[x.name]
        along = arg(node, 2, "dim", 0)
        if along % len(in_shape) != axis:
            raise unsupported(node, "split/chunk along a dim that is not the channels")
        meta = node.meta.get("tensor_meta")
        sizes = [m.shape[axis] for m in meta] if isinstance(meta, (tuple, list)) else None
        if not sizes:
            raise unsupported(node, "split/chunk whose pieces could not be measured")
        pieces, start = [], 0
        for size in sizes:
            pieces.append(self.book.slice_dim(dim, start, start + size, node))
            start += size
        self.rewrites[node.name] = ("split", axis, tuple(pieces))
        self.seqs[node.name] = pieces
        self.axes[node.name] = axis

    def cat(self, node: fx.Node, shape: tuple[int, ...] | None) -> None:
        tensors = arg(node, 0, "tensors")
        along = arg(node, 1, "dim", 0)
        if isinstance(tensors, fx.Node):
            if tensors.name not in self.seqs:
                raise unsupported(node, "cat of a value the analysis did not follow")
            dims = list(self.seqs[tensors.name])
            axes = [self.axes[tensors.name]] * len(dims)
        else:
            dims, axes = [], []
            for t in tensors:
                d, a = self.input_of(node, t)
                dims.append(d)
                axes.append(a)
        if shape is None or len(set(axes)) != 1 or along % len(shape) != axes[0]:
            raise unsupported(node, "cat is only supported along the channel dimension")
        parts = [p for d in dims for p in d.parts]
        self.set(node, Dim(tuple(parts)), axes[0])
