"""From the node rules' state to the :class:`GraphAnalysis`: the head, split groups and channel classes.

The head is the one mixing op whose output the model returns (its class becomes ``OUTPUT``);
split groups are the distinct output resolutions of the mixing ops, in order of appearance; each
class gets the group of its first producer, its *segments* (the ranges that slices cut it into,
each shared out across stages on its own), the batch norms that read exactly it (for importance
ordering) and the offsets of its producers and norms in their channels.
"""
from __future__ import annotations

from typing import Any

from torch import fx, nn

from s2dnas.errors import UnsupportedModelError
from s2dnas.graph.channels import OUTPUT, ChannelClass, Dim, GraphAnalysis, MixingOp, ParamSlice, Part
from s2dnas.graph.rules import NodeRules
from s2dnas.graph.trace import unsupported

__all__ = ["build_analysis"]


def build_analysis(rules: NodeRules) -> GraphAnalysis:
    """The :class:`GraphAnalysis` of a finished pass of ``rules``.

    Raises:
        UnsupportedModelError: the model does not return one classifier's logits, uses them inside,
            or slices a grouped conv's channels inside a group.
    """
    out_node = next(n for n in rules.gm.graph.nodes if n.op == "output")
    output = out_node.args[0].name
    out_dim = rules.book.resolve(rules.dims[output])
    out_shape = rules.shapes[output]
    hint = ("the model must return the logits (B, classes) of one classifier, a Linear or a 1x1 conv "
            "followed only by pooling/flatten; return only the classifier's output")
    part = out_dim.parts[0] if len(out_dim.parts) == 1 else None
    if (part is None or part.cls < 0 or part.repeat != 1 or len(out_shape) != 2 or part.lo != 0
            or part.hi != rules.book.size_of(part.cls)):
        raise unsupported(out_node, hint)
    head_root = part.cls
    heads = [n for n, _, cid in rules.mixing_raw if rules.book.resolve(rules.dims[n.name]) == out_dim]
    if len(heads) != 1:
        raise unsupported(out_node, hint)
    head = heads[0].name
    for n, in_dim, _ in rules.mixing_raw:
        if any(p.cls == head_root for p in rules.book.resolve(in_dim).parts):
            raise UnsupportedModelError(f"The classifier's logits are used by node {n.name!r}; expected them "
                                        "to be returned directly")

    # Groups: one per spatial resolution of the mixing ops' outputs, in order of appearance;
    # (B, features) outputs (MLP layers, SE gates written with Linear) join the last group.
    def spatial(node: fx.Node) -> tuple[int, ...]:
        shape, axis = rules.shapes[node.name], rules.axes[node.name]
        return tuple(s for i, s in enumerate(shape) if i not in (0, axis))

    resolutions: list[tuple[int, ...]] = []
    for node, *_ in rules.mixing_raw:
        res = spatial(node)
        if res and res not in resolutions:
            resolutions.append(res)
    num_groups = max(1, len(resolutions))

    def group_of(node: fx.Node) -> int:
        res = spatial(node)
        return resolutions.index(res) if res else num_groups - 1

    classes: dict[int, ChannelClass] = {}
    mixing: dict[str, MixingOp] = {}
    for node, in_dim, cid in rules.mixing_raw:
        is_head = node.name == head
        outs = rules.book.resolve(rules.dims[node.name]).parts
        if not is_head:
            offset = 0
            for p in outs:  # a tie can have cut the output into several classes
                cls = classes.setdefault(p.cls, ChannelClass(p.cls, rules.book.sizes[p.cls], rules.book.granularity[p.cls],
                                                             group_of(node)))
                cls.producers.append(node.name)
                cls.offsets[node.name] = offset
                offset += p.hi - p.lo
        mixing[node.name] = MixingOp(node.name, rules.targets[node.name], rules.book.resolve(in_dim),
                                     OUTPUT if is_head else outs[0].cls, group_of(node), is_head,
                                     out_dim=Dim((Part(OUTPUT, 1, 0, rules.book.size_of(head_root)),)) if is_head
                                     else Dim(outs))
    for root, cls in classes.items():
        bounds = sorted({0, cls.size} | {c for c in rules.book.leaf_cuts(root) if 0 < c < cls.size})
        if any(b % cls.granularity for b in bounds):
            raise UnsupportedModelError(
                f"A channel slice cuts a group of a grouped conv (channels of {cls.producers[0]!r}, groups of "
                f"{cls.granularity}); slice at multiples of {cls.granularity}")
        cls.segments = tuple(zip(bounds, bounds[1:]))
    channelwise = {node.name: rules.book.resolve(dim) for node, dim in rules.channelwise_raw}
    for node, _ in rules.channelwise_raw:
        mod = rules.modules[rules.targets[node.name]]
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm):
            continue
        offset = 0
        for p in channelwise[node.name].parts:
            if p.repeat == 1 and p.cls in classes and (p.lo, p.hi) == (0, rules.book.size_of(p.cls)):
                classes[p.cls].norms.append(node.name)
                classes[p.cls].offsets[node.name] = offset
            offset += (p.hi - p.lo) * p.repeat
    dims = {name: rules.book.resolve(d) for name, d in rules.dims.items()}
    for name, d in dims.items():
        dims[name] = Dim(tuple(Part(OUTPUT, p.repeat, p.lo, p.hi) if p.cls == head_root else p for p in d.parts))
    for cls in classes.values():
        if cls.size % cls.granularity:
            raise UnsupportedModelError(f"Channel class of size {cls.size} is not a multiple of its group size")
    params: dict[str, ParamSlice] = {}
    for target, (dim, axis) in rules.param_uses.items():
        for name in rules.param_nodes[target]:
            params[name] = ParamSlice(target, rules.book.resolve(dim), axis)
    rewrites = {name: _resolve_rewrite(rw, rules.book.resolve) for name, rw in rules.rewrites.items()}
    return GraphAnalysis(rules.gm, dims, classes, mixing, channelwise, rules.shapes, num_groups, head,
                         rules.input_shape, output=output, axes=dict(rules.axes), targets=dict(rules.targets),
                         params=params, rewrites=rewrites, dropped=frozenset(rules.dropped))


def _resolve_rewrite(rewrite: tuple[Any, ...], resolve: Any) -> tuple[Any, ...]:
    out = []
    for item in rewrite:
        if isinstance(item, Dim):
            item = resolve(item)
        elif isinstance(item, tuple) and item and all(isinstance(d, Dim) for d in item):
            item = tuple(resolve(d) for d in item)
        out.append(item)
    return tuple(out)
