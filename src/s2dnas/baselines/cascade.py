"""Cascades of independent models (big/little): a cheap model answers when it is confident,
otherwise the next one runs on the same image from scratch (nothing is reused).

A cascade is a :class:`~s2dnas.space.MultiStageNet` whose stages read no cached features, so
:class:`~s2dnas.dynamic.DynamicNet`, calibration, MAC counting and the speed benchmark apply to it
unchanged. A single model is the one-stage case (:func:`single_stage`), which lets static
baselines go through the same evaluation.
"""
from __future__ import annotations

import copy
from typing import Sequence

from torch import fx, nn

from s2dnas.errors import ConfigError, UnsupportedModelError
from s2dnas.space.multistage import MultiStageNet

__all__ = ["as_stage", "cascade", "single_stage"]


def as_stage(model: nn.Module, *, name: str = "Model") -> fx.GraphModule:
    """A traced copy of ``model`` that returns ``(logits,)``, the stage signature with no features."""
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as err:  # noqa: BLE001 - tracing raises many unrelated types
        raise UnsupportedModelError(
            f"Cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); a cascade stage "
            "must be traceable") from None
    out = next(n for n in gm.graph.nodes if n.op == "output")
    out.args = ((out.args[0],),)
    gm.graph.lint()
    gm.recompile()
    gm.__class__.__name__ = name
    return gm


def cascade(models: Sequence[nn.Module], *, input_shape: tuple[int, ...]) -> MultiStageNet:
    """Run ``models`` in order as the stages of a multi-stage network (copies; the inputs are not
    modified). Put the cheapest first.

    Raises:
        ConfigError: no models.
        UnsupportedModelError: a model cannot be traced with ``torch.fx``.
    """
    if not models:
        raise ConfigError("Expected at least one model for a cascade, but got none")
    stages = [as_stage(m, name=f"Cascade{i + 1}") for i, m in enumerate(models)]
    empty: list[list[str]] = [[] for _ in stages]
    return MultiStageNet(stages, reads=empty, writes=empty, architecture={"kind": "cascade", "stages": len(stages)},
                         input_shape=tuple(input_shape), analytic_macs=[0] * len(stages))


def single_stage(model: nn.Module, *, input_shape: tuple[int, ...]) -> MultiStageNet:
    """A static model as a one-stage network (every input exits at its only stage)."""
    return cascade([model], input_shape=input_shape)
