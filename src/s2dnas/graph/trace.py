"""Tracing a model with torch.fx, propagating its shapes, and refusing a node by name.

:func:`trace` and :func:`propagate_shapes` turn a model into a graph whose tensor nodes know their
shapes; :func:`unsupported` is the one message format for a node the analysis cannot split (the
node, its op, why, and what is supported); :func:`arg` and :func:`as_tuple` read node arguments.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from s2dnas.errors import UnsupportedModelError

__all__ = ["trace", "propagate_shapes", "unsupported", "target_name", "arg", "as_tuple"]

_SUPPORTED = ("Supported: Conv2d (dense, depthwise, grouped), Linear (also channels-last), BatchNorm, LayerNorm "
              "over channels, activations, pooling, dropout, add/mul (residuals, SE gates, layer scales), "
              "cat/split/chunk/slices along channels, flatten, squeeze/unsqueeze, permute to channels-last, "
              "channel shuffle")


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


def propagate_shapes(gm: fx.GraphModule, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Record every node's shape (``node.meta["tensor_meta"]``) on a zero input, in eval mode.

    The model's and the graph module's train flags are restored afterwards.

    Raises:
        UnsupportedModelError: the model fails on an input of that shape.
    """
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


def unsupported(node: fx.Node, why: str) -> UnsupportedModelError:
    """The error refusing ``node``: its name, op, ``why``, and what the analysis supports."""
    return UnsupportedModelError(f"Cannot split node {node.name!r} ({node.op} {target_name(node)}): {why}. "
                                 f"{_SUPPORTED}")


def target_name(node: fx.Node) -> str:
    """The name of the function, method or module a node calls."""
    t = node.target
    return getattr(t, "__name__", None) or str(t)


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of ``node``, or its keyword ``name``, or ``default``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)



def as_tuple(value: Any) -> tuple[Any, ...]:
    """``value`` as a tuple (a scalar becomes a one-element tuple)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
