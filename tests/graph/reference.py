"""An independent reference for what a stage computes: the base model run with masks.

Under the split transformation (no concatenation of earlier stages' features), stage ``s``
computes, at every tensor of the base graph, exactly the base model's values at the channels it
owns *when every other channel is zero*. :func:`masked_logits` runs the base graph that way (an
``fx.Interpreter`` that zeroes the channels a stage does not own after each node), so it checks
the stage graphs that :mod:`s2dnas.space.build` writes (slices, gathers, splits, empty slices)
without sharing their code. Which channels a stage owns is known only where a layer writes them
(a mixing op's output: the stage's chosen channels of that class); everywhere else ownership is
*propagated by running the node itself* on 0/1 ownership masks (a channel is owned where the
node's output on the mask differs from its output on zeros), so a channel shuffle, a slice or a
concatenation moves ownership exactly as it moves values, independently of the index mapping
that build.py computes (``dim_indices``). Layer norms are the exception (a stage normalises over
its own channels), so models with them are checked by the S=1 equivalence only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from s2dnas.graph.analysis import OUTPUT
from s2dnas.space import Space

__all__ = ["masked_logits", "split_only"]


def _zeros(value):  # type: ignore[no-untyped-def]
    return torch.zeros_like(value) if isinstance(value, torch.Tensor) else type(value)(_zeros(v) for v in value)


class _Masked(fx.Interpreter):
    def __init__(self, space: Space, indices: dict[int, torch.Tensor]) -> None:
        super().__init__(space.analysis.graph_module)
        self.analysis = space.analysis
        self.indices = indices
        self.owned: dict[str, torch.Tensor] = {}  # node -> 0/1 mask of the value's shape
        self.head_input: torch.Tensor | None = None

    def _written(self, n: fx.Node, out: torch.Tensor) -> torch.Tensor:
        """Channels a mixing op writes for this stage: its output classes' chosen channels, in order."""
        pieces = []
        for part in self.analysis.dims[n.name].parts:
            assert part.repeat == 1, "a layer's output is never a repeated dimension"
            size = self.analysis.classes[part.cls].size
            chosen = torch.zeros(size, dtype=out.dtype)
            chosen[self.indices[part.cls]] = 1
            pieces.append(chosen[part.lo:size if part.hi < 0 else part.hi])
        channels = torch.cat(pieces)
        shape = [1] * out.dim()
        shape[self.analysis.axes[n.name]] = -1
        return channels.view(shape).expand_as(out).contiguous()

    def _propagated(self, n: fx.Node, out):  # type: ignore[no-untyped-def]
        """Run the node on the ownership masks and on zeros of its tensor inputs; owned where they differ."""
        def swap(fill):  # type: ignore[no-untyped-def]
            return lambda a: fill(a) if isinstance(a, fx.Node) and a.name in self.owned else self.env.get(a, a)
        on_mask = fx.node.map_arg((n.args, n.kwargs), swap(lambda a: self.owned[a.name]))
        on_zero = fx.node.map_arg((n.args, n.kwargs), swap(lambda a: _zeros(self.owned[a.name])))
        call = getattr(self, n.op)
        if not isinstance(out, torch.Tensor):  # a split / chunk: keep its masks' pieces for the getitems
            return call(n.target, *on_mask)
        a, b = call(n.target, *on_mask), call(n.target, *on_zero)
        differs = (a - b).abs() > 1e-4 * (1 + b.abs())  # owned channels move by O(1); rounding does not
        if differs.shape != out.shape:
            return torch.ones_like(out)  # (not reached by the test models)
        # elementwise (any over the batch): a view may spread the channels over several axes (a shuffle)
        return differs.any(0, keepdim=True).expand_as(out).to(out.dtype).contiguous()

    def run_node(self, n: fx.Node):  # type: ignore[no-untyped-def]
        if n.name == self.analysis.head:
            self.head_input = self.env[n.args[0]]
        out = super().run_node(n)
        dim = self.analysis.dims.get(n.name)
        if dim is None or not isinstance(out, torch.Tensor) or any(p.cls == OUTPUT for p in dim.parts):
            # no channel dimension of its own (a split's tuple, a shuffle's 5-d view): carry the masks on
            tensors = out if isinstance(out, (tuple, list)) else (out,)
            if tensors and all(isinstance(o, torch.Tensor) for o in tensors) and any(
                    a.name in self.owned for a in n.all_input_nodes) and n.op != "output":
                self.owned[n.name] = self._propagated(n, out)
            return out
        if n.op == "placeholder":
            self.owned[n.name] = torch.ones_like(out)  # every stage reads the whole image
            return out
        mask = self._written(n, out) if n.name in self.analysis.mixing else self._propagated(n, out)
        self.owned[n.name] = mask
        return out * mask


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
