"""Build the stages of a multi-stage network from the analysed graph (split + concat).

Each stage is a copy of the base graph in which every conv, linear and batch norm is replaced
by a smaller one holding the slice of the base weights that the stage computes (weight
inheritance, METHOD.md "Split"): a mixing op of stage ``s`` gets ``W[out_s, in_cols]`` where
``in_cols`` are stage ``s``'s own input channels, or those of stages ``1..s`` in the concat region
(METHOD.md "Concat"), read from the cache as the inputs earlier stages gave the same op.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from s2dnas.graph.analysis import INPUT, OUTPUT, Dim, GraphAnalysis, MixingOp, get_attr
from s2dnas.space.modules import BiasOnly, EmptyChannels, SharedTensor, shared_module, sliced_module

__all__ = ["StagePlan", "build_stage", "dim_indices", "cache_key", "concat_feeds"]


@dataclass(frozen=True)
class StagePlan:
    """What one stage computes: its channel indices and which mixing ops read earlier stages."""

    stage: int
    class_indices: tuple[dict[int, torch.Tensor], ...]  # per stage 0..S-1: class id -> channel indices
    concat_ops: frozenset[str]  # mixing ops of this stage whose input is cat(stages 0..stage)
    exports: tuple[str, ...]  # base nodes (mixing-op inputs) whose own slice this stage writes to the cache


def cache_key(feed: str, stage: int) -> str:
    """Cache key of stage ``stage``'s slice of base node ``feed`` (an input of a mixing op)."""
    return f"{feed}@{stage}"


def dim_indices(analysis: GraphAnalysis, dim: Dim, class_indices: dict[int, torch.Tensor]) -> torch.Tensor:
    """Base-model channel indices of ``dim`` that one stage computes, in that stage's order."""
    pieces, offset = [], 0
    for part in dim.parts:
        size = analysis.part_channels(part)
        if part.cls in (INPUT, OUTPUT):
            idx = torch.arange(size)
        else:
            idx = class_indices[part.cls]
            idx = idx[(idx >= part.lo) & (idx < part.lo + size)] - part.lo
        if part.repeat > 1:
            idx = (idx[:, None] * part.repeat + torch.arange(part.repeat)[None, :]).reshape(-1)
        pieces.append(idx + offset)
        offset += size * part.repeat
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def _mixing_columns(analysis: GraphAnalysis, op: MixingOp, plan: StagePlan) -> torch.Tensor:
    if op.in_dim.has_input:  # layers that read the image never read earlier stages (see Space.build)
        return dim_indices(analysis, op.in_dim, plan.class_indices[plan.stage])
    stages = range(plan.stage + 1) if op.node in plan.concat_ops else (plan.stage,)
    return torch.cat([dim_indices(analysis, op.in_dim, plan.class_indices[t]) for t in stages])


def build_stage(analysis: GraphAnalysis, plan: StagePlan, *, share_weights: bool = False
                ) -> tuple[fx.GraphModule, list[str], int]:
    """Make stage ``plan.stage`` as a GraphModule ``(x, *cached) -> (logits, *features)``.

    Returns:
        The module, the cache keys it reads (argument order), and its MACs per input by the
        analytic formula (conv: ``C_out * C_in/groups * k_h * k_w * H_out * W_out``; linear:
        ``in * out``).
    """
    gm = analysis.graph_module
    base_modules = dict(gm.named_modules())
    graph = fx.Graph()
    modules: dict[str, nn.Module] = {}
    env: dict[str, fx.Node] = {}
    s = plan.stage
    own = plan.class_indices[s]
    macs = 0

    x_node = graph.placeholder("x")
    # Earlier stages' features are keyed by the base node that feeds the mixing op, so two ops
    # reading the same tensor (a downsampling conv and its projection shortcut) share one entry.
    reads: list[str] = []
    read_nodes: dict[str, fx.Node] = {}
    for feed in concat_feeds(analysis, plan.concat_ops):
        for t in range(s):
            key = cache_key(feed, t)
            reads.append(key)
            read_nodes[key] = graph.placeholder(_py_name(key))
    cat_nodes: dict[str, fx.Node] = {}

    def local_name(target: str) -> str:
        return target.replace(".", "_")

    def width(dim: Dim) -> int:
        return len(dim_indices(analysis, dim, own))

    for node in gm.graph.nodes:
        if node.name in analysis.dropped:
            continue
        if node.op == "placeholder":
            env[node.name] = x_node
        elif node.op == "output":
            outputs = [env[analysis.output or analysis.head]]
            outputs += [env[feed] for feed in plan.exports]
            graph.output(tuple(outputs))
        elif node.op == "get_attr":
            if node.name in analysis.params:  # a per-channel parameter (layer scale): this stage's slice
                ps = analysis.params[node.name]
                base_t = get_attr(gm, ps.target)
                idx = dim_indices(analysis, ps.dim, own)
                name = "p_" + local_name(ps.target)
                if share_weights:
                    modules[name] = SharedTensor(base_t, axis=ps.axis, index=idx)
                    env[node.name] = graph.call_module(name, ())
                else:
                    t = base_t.detach().index_select(ps.axis, idx.to(base_t.device)).clone()
                    modules[name] = (nn.Parameter(t, requires_grad=base_t.requires_grad)
                                     if isinstance(base_t, nn.Parameter) else t)
                    env[node.name] = graph.get_attr(name)
            # other parameters are read by the functional norms that become modules below
        elif node.name in analysis.mixing:
            op = analysis.mixing[node.name]
            base = base_modules[analysis.targets[node.name]]
            out_idx = (torch.arange(base.out_channels if isinstance(base, nn.Conv2d) else base.out_features)
                       if op.out_cls == OUTPUT else dim_indices(analysis, op.out_dim, own))
            in_cols = _mixing_columns(analysis, op, plan)
            name = local_name(analysis.targets[node.name])
            modules[name] = _slice(base, out_idx, in_cols, analysis, node.name, share_weights)
            feed = node.args[0].name
            inp = env[feed]
            if node.name in plan.concat_ops and s > 0:
                if feed not in cat_nodes:
                    parts = [read_nodes[cache_key(feed, t)] for t in range(s)] + [inp]
                    cat_nodes[feed] = graph.call_function(torch.cat, (parts, analysis.axes.get(feed, 1)))
                inp = cat_nodes[feed]
            env[node.name] = graph.call_module(name, (inp,))
            macs += _macs(modules[name], analysis.shapes[node.name])
        elif node.name in analysis.channelwise:
            base = base_modules[analysis.targets[node.name]]
            idx = dim_indices(analysis, analysis.channelwise[node.name], own)
            name = local_name(analysis.targets[node.name]) + ("" if node.op == "call_module" else "_fn")
            modules[name] = _slice(base, idx, idx, analysis, node.name, share_weights)
            env[node.name] = graph.call_module(name, (env[node.args[0].name],))
            macs += _macs(modules[name], analysis.shapes[node.name])
        elif node.name in analysis.rewrites and analysis.rewrites[node.name][0] == "param_view":
            _, target, shape = analysis.rewrites[node.name]
            ps = next((p for p in analysis.params.values() if p.target == target), None)
            if ps is not None:
                n = width(ps.dim)
                env[node.name] = graph.call_method("reshape", (env[node.args[0].name],
                                                               tuple(n if v != 1 else 1 for v in shape)))
        elif node.name in analysis.rewrites:
            rewrite = analysis.rewrites[node.name]
            if rewrite[0] == "gather":  # a channel shuffle: this stage's channels in the shuffled order
                _, in_dim, out_dim, perm = rewrite
                have = dim_indices(analysis, in_dim, own)
                want = torch.tensor(perm, dtype=torch.long)[dim_indices(analysis, out_dim, own)]
                name = f"perm_{node.name}"
                modules[name] = torch.searchsorted(have, want)
                env[node.name] = graph.call_function(torch.index_select, (env[node.args[0].name], 1,
                                                                          graph.get_attr(name)))
            else:
                env[node.name] = _rewrite(graph, rewrite, env[node.args[0].name], width)
        elif node.op == "call_module":
            name = local_name(str(node.target))
            if name not in modules:
                # A stage's own copy: sharing the base model's Dropout would let msnet.train()
                # switch the distillation teacher's dropout on; and cached features must never
                # be overwritten in place.
                mod = copy.copy(base_modules[str(node.target)])
                if getattr(mod, "inplace", False):
                    mod.inplace = False
                modules[name] = mod
            env[node.name] = graph.call_module(name, _map_args(node.args, env), _map_args(node.kwargs, env))
        else:
            new = graph.node_copy(node, lambda n: env[n.name])
            if "inplace" in new.kwargs:
                new.kwargs = {**new.kwargs, "inplace": False}
            if new.op == "call_method" and str(new.target).endswith("_"):  # relu_ -> relu, add_ -> add
                new.target = str(new.target)[:-1]
            elif new.target in _OUT_OF_PLACE:
                new.target = _OUT_OF_PLACE[new.target]
            env[node.name] = new
    graph.lint()
    stage = fx.GraphModule(modules, graph, class_name=f"Stage{s + 1}")
    stage.graph.eliminate_dead_code()  # the size() calls of rewritten views
    stage.recompile()
    return stage, reads, macs


_OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul, operator.isub: operator.sub,
                 operator.itruediv: operator.truediv, torch.relu_: torch.relu}


def _slice(base: nn.Module, out_idx: torch.Tensor, in_idx: torch.Tensor, analysis: GraphAnalysis, node: str,
           share_weights: bool) -> nn.Module:
    """The stage's slice of ``base``; a layer left with no channels (a degraded split) becomes a stub."""
    shape = list(analysis.shapes[node][1:])
    axis = analysis.axes.get(node, 1) - 1
    if len(out_idx) == 0:
        shape[axis] = 0
        return EmptyChannels(tuple(shape))
    if len(in_idx) == 0:
        shape[axis] = len(out_idx)
        bias = getattr(base, "bias", None)
        return BiasOnly(None if bias is None else bias.detach()[out_idx].clone(), tuple(shape), axis=axis + 1)
    make = shared_module if share_weights else sliced_module
    return make(base, out_idx=out_idx, in_idx=in_idx)


def _rewrite(graph: fx.Graph, rewrite: tuple, x: fx.Node, width) -> fx.Node:  # type: ignore[no-untyped-def]
    """Emit a node the analysis marked: its channel counts become the stage's own."""
    kind = rewrite[0]
    if kind == "identity":
        return x
    if kind == "flatten":
        return graph.call_method("flatten", (x, 1))
    if kind == "squeeze":
        return graph.call_method("squeeze", (x, rewrite[1]))
    if kind == "split":
        _, axis, pieces = rewrite
        return graph.call_function(torch.split, (x, [width(p) for p in pieces], axis))
    if kind == "narrow":
        _, items, pos, prefix, piece = rewrite
        start = width(prefix) if prefix.parts else 0
        items = list(items)
        items[pos] = slice(start, start + width(piece))
        return graph.call_function(operator.getitem, (x, tuple(items)))
    batch = graph.call_method("size", (x, 0))
    if kind == "unflatten":
        _, dim, ones = rewrite
        return graph.call_method("reshape", (x, batch, width(dim), *([1] * ones)))
    raise AssertionError(f"unknown rewrite {kind}")  # the analysis only makes the kinds above


def concat_feeds(analysis: GraphAnalysis, ops: frozenset[str] | set[str]) -> list[str]:
    """The base nodes feeding the mixing ops ``ops``, in graph order, without repeats."""
    feeds: list[str] = []
    for node in analysis.graph_module.graph.nodes:
        if node.name in ops and node.args[0].name not in feeds:
            feeds.append(node.args[0].name)
    return feeds


def _map_args(args, env):  # type: ignore[no-untyped-def]
    return fx.node.map_arg(args, lambda n: env[n.name])


def _py_name(key: str) -> str:
    return "f_" + key.replace("@", "_s").replace(".", "_")


def _macs(module: nn.Module, out_shape: tuple[int, ...]) -> int:
    """Analytic MACs of one conv or linear per input (zero for batch norm)."""
    if hasattr(module, "kernel_size"):
        kh, kw = module.kernel_size
        return int(module.out_channels * (module.in_channels // module.groups) * kh * kw
                   * out_shape[2] * out_shape[3])
    if hasattr(module, "in_features"):  # channels-last linear layers run once per position
        positions = 1
        for size in out_shape[1:-1]:
            positions *= size
        return int(module.in_features * module.out_features * positions)
    return 0
