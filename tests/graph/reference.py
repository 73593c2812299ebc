"""An independent reference for what a stage computes: the base model run with masks.

Under the split transformation (no concatenation of earlier stages' features), stage ``s``
computes, at every tensor of the base graph, exactly the base model's values at the channels it
owns *when every other channel is zero*. :func:`masked_logits` runs the base graph that way (an
``fx.Interpreter`` that zeroes the channels a stage does not own after each node), so it checks
the stage graphs that :mod:`s2dnas.space.build` writes (slices, gathers, splits, empty slices)
without sharing their code. Layer norms are the exception (a stage normalises over its own
channels), so models with them are checked by the S=1 equivalence only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from s2dnas.graph.analysis import OUTPUT
from s2dnas.space import Space
from s2dnas.space.build import dim_indices

__all__ = ["masked_logits", "split_only"]


class _Masked(fx.Interpreter):
    def __init__(self, space: Space, indices: dict[int, torch.Tensor]) -> None:
        super().__init__(space.analysis.graph_module)
        self.analysis = space.analysis
        self.indices = indices
        self.head_input: torch.Tensor | None = None

    def run_node(self, n: fx.Node):  # type: ignore[no-untyped-def]
        if n.name == self.analysis.head:
            self.head_input = self.env[n.args[0]]
        out = super().run_node(n)
        dim = self.analysis.dims.get(n.name)
        if dim is None or not isinstance(out, torch.Tensor) or any(p.cls == OUTPUT for p in dim.parts):
            return out
        axis = self.analysis.axes[n.name]
        mask = torch.zeros(out.shape[axis], dtype=out.dtype)
        mask[dim_indices(self.analysis, dim, self.indices)] = 1
        shape = [1] * out.dim()
        shape[axis] = -1
        return out * mask.view(shape)


def split_only(space: Space, splits) -> object:  # type: ignore[no-untyped-def]
    """The architecture with ``splits`` in which no stage reads earlier stages' features (but the head)."""
    return space.architecture(splits=splits, concat=[space.num_groups] * (space.num_stages - 1))


@torch.no_grad()
def masked_logits(space: Space, arch, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """Per stage, the logits the reference computes for a split-only ``arch`` with a Linear head."""
    gm = space.analysis.graph_module
    head = gm.get_submodule(space.analysis.targets[space.analysis.head])
    heads, logits = [], []
    for indices in space.stage_indices(arch):
        run = _Masked(space, indices)
        out = run.run(x)
        heads.append(run.head_input)
        if len(logits) == 0:
            logits.append(out)  # stage 1's head reads only its own features
        else:  # later heads read every stage's features so far (disjoint channels: a sum)
            logits.append(F.linear(sum(heads), head.weight, head.bias))
    return logits
