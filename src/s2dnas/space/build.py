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

from s2dnas.graph.analysis import INPUT, OUTPUT, Dim, GraphAnalysis, MixingOp
from s2dnas.space.modules import shared_module, sliced_module

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
        size = analysis.class_size(part.cls)
        if part.cls in (INPUT, OUTPUT):
            idx = torch.arange(size)
        else:
            idx = class_indices[part.cls]
        if part.repeat > 1:
            idx = (idx[:, None] * part.repeat + torch.arange(part.repeat)[None, :]).reshape(-1)
        pieces.append(idx + offset)
        offset += size * part.repeat
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def _mixing_columns(analysis: GraphAnalysis, op: MixingOp, plan: StagePlan) -> torch.Tensor:
    if op.in_dim.is_input:
        return torch.arange(analysis.class_size(INPUT))
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

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = x_node
        elif node.op == "output":
            outputs = [env[analysis.head]]
            outputs += [env[feed] for feed in plan.exports]
            graph.output(tuple(outputs))
        elif node.op == "get_attr":
            continue  # only reached when unused (the analysis rejects functional parameters)
        elif node.op == "call_module" and node.name in analysis.mixing:
            op = analysis.mixing[node.name]
            base = base_modules[str(node.target)]
            out_idx = (torch.arange(base.out_channels if isinstance(base, nn.Conv2d) else base.out_features)
                       if op.out_cls == OUTPUT else own[op.out_cls])
            in_cols = _mixing_columns(analysis, op, plan)
            name = local_name(str(node.target))
            make = shared_module if share_weights else sliced_module
            modules[name] = make(base, out_idx=out_idx, in_idx=in_cols)
            feed = node.args[0].name
            inp = env[feed]
            if node.name in plan.concat_ops and s > 0:
                if feed not in cat_nodes:
                    parts = [read_nodes[cache_key(feed, t)] for t in range(s)] + [inp]
                    cat_nodes[feed] = graph.call_function(torch.cat, (parts, 1))
                inp = cat_nodes[feed]
            env[node.name] = graph.call_module(name, (inp,))
            macs += _macs(modules[name], analysis.shapes[node.name])
        elif node.op == "call_module" and node.name in analysis.channelwise:
            base = base_modules[str(node.target)]
            idx = dim_indices(analysis, analysis.channelwise[node.name], own)
            name = local_name(str(node.target))
            make = shared_module if share_weights else sliced_module
            modules[name] = make(base, out_idx=idx, in_idx=idx)
            env[node.name] = graph.call_module(name, (env[node.args[0].name],))
            macs += _macs(modules[name], analysis.shapes[node.name])
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
    return fx.GraphModule(modules, graph, class_name=f"Stage{s + 1}"), reads, macs


_OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul}


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
    if hasattr(module, "in_features"):
        return int(module.in_features * module.out_features)
    return 0
