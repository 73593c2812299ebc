"""Graph analysis of any CNN: which channel dimensions can be split, and which are tied.

:func:`analyze` runs the steps, one module each: :mod:`~s2dnas.graph.trace` (torch.fx tracing
and shape propagation on an example input), :mod:`~s2dnas.graph.rules` (what each node does to
channel dimensions, with ties and cuts kept in :mod:`~s2dnas.graph.classes`) and
:mod:`~s2dnas.graph.plan` (the head, split groups and class segments). The result types are in
:mod:`~s2dnas.graph.channels`; they are re-exported here, where :mod:`s2dnas.space` imports them.
"""
from __future__ import annotations

from torch import nn

from s2dnas.graph.channels import INPUT, OUTPUT, ChannelClass, Dim, GraphAnalysis, MixingOp, ParamSlice, Part, get_attr
from s2dnas.graph.plan import build_analysis
from s2dnas.graph.rules import NodeRules
from s2dnas.graph.trace import propagate_shapes, trace

__all__ = ["Part", "Dim", "ChannelClass", "MixingOp", "ParamSlice", "GraphAnalysis", "analyze", "trace", "get_attr",
           "INPUT", "OUTPUT"]


def analyze(model: nn.Module, *, input_shape: tuple[int, int, int]) -> GraphAnalysis:
    """Trace ``model`` and find its splittable channel classes, tied dimensions and mixing ops.

    Args:
        model: the base CNN (its weights are not changed).
        input_shape: ``(C, H, W)`` of one input image.

    Raises:
        UnsupportedModelError: a node cannot be split; the message names it, why, and what to change.
    """
    gm = trace(model)
    propagate_shapes(gm, model, tuple(input_shape))
    rules = NodeRules(gm, tuple(input_shape), model)
    rules.run()
    return build_analysis(rules)
