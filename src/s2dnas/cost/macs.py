"""MAC counting by execution, and the analytic formulas it must agree with.

Convention (used everywhere in s2dnas): cost is **MACs**, multiply-accumulates of convolutions
(any dimension, any ``groups``) and matrix products (``nn.Linear``, ``mm``/``addmm``/``bmm``/
``baddbmm``). Batch norm, activations, pooling, element-wise adds, concatenations, bias additions
and attention kernels are **not** counted. A conv with ``C_in`` inputs, ``C_out`` outputs, kernel
``k x k``, ``groups`` g and an ``H_out x W_out`` output costs
``C_out * (C_in / g) * k * k * H_out * W_out`` MACs per sample (pycls ``conv2d_cx``).

:func:`count_macs` runs the module once under :class:`torch.utils.flop_counter.FlopCounterMode`,
so it counts what actually executes (data-dependent shapes, skipped branches, reused modules) rather
than what a table of module types predicts. FlopCounterMode reports FLOPs = 2 x MACs; this module
halves them.
"""
from __future__ import annotations

from typing import Literal, overload

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from s2dnas.errors import ConfigError

__all__ = ["count_macs", "count_params", "conv2d_macs", "linear_macs"]

_aten = torch.ops.aten
# Conv and matmul-type ATen ops. FlopCounterMode counts each op once at the level it is first
# dispatched (e.g. aten.convolution, not also the backend kernel it calls), so listing the
# backend variants cannot double count; they are here for backends that dispatch to them directly.
_MAC_OPS = frozenset(
    getattr(_aten, name)
    for name in (
        "convolution", "_convolution", "convolution_overrideable", "cudnn_convolution",
        "_slow_conv2d_forward", "mm", "addmm", "bmm", "baddbmm", "_scaled_mm",
    )
    if hasattr(_aten, name)
)


@overload
def count_macs(
    module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], *, per_module: Literal[False] = ...
) -> int: ...


@overload
def count_macs(
    module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], *, per_module: Literal[True]
) -> dict[str, int]: ...


def count_macs(
    module: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    per_module: bool = False,
) -> int | dict[str, int]:
    """Count the MACs of one forward pass of ``module`` on ``example_input``, by running it.

    The module runs in eval mode under ``torch.no_grad()``; the train/eval flag of every submodule
    is restored afterwards. Only conv and matmul-type ops are counted (see the module docstring).

    The count is for the batch actually given: pass a batch of size 1 to get per-sample MACs.

    Args:
        module: The model or submodule to measure.
        example_input: A tensor, or a tuple of tensors passed as positional arguments, on the
            module's device.
        per_module: If true, return MACs per module instead of the total.

    Returns:
        The total MACs; or, with ``per_module=True``, a dict from module name (as in
        ``named_modules()``, ``""`` for ``module`` itself) to the MACs run inside that module,
        children included, for every module that ran at least one counted op.

    Raises:
        ConfigError: If ``example_input`` is neither a tensor nor a tuple of tensors.
    """
    if isinstance(example_input, torch.Tensor):
        args: tuple[torch.Tensor, ...] = (example_input,)
    elif isinstance(example_input, tuple) and all(isinstance(a, torch.Tensor) for a in example_input):
        args = example_input
    else:
        raise ConfigError(
            f"Expected `example_input` to be a tensor or a tuple of tensors, but got {type(example_input).__name__}; "
            "pass e.g. torch.zeros(1, 3, 32, 32)"
        )
    modes = {m: m.training for m in module.modules()}
    counter = FlopCounterMode(display=False)
    try:
        module.eval()
        # Design choice: no_grad rather than inference_mode, so that a module caching a tensor on
        # its first call (anchors, masks) does not keep an inference tensor that breaks training later.
        with torch.no_grad(), counter:
            module(*args)
    finally:
        for m, training in modes.items():
            m.training = training
    counts = counter.get_flop_counts()
    if not per_module:
        return _macs_of(counts.get("Global", {}))
    root = type(module).__name__
    result: dict[str, int] = {}
    for name, ops in counts.items():
        if name == "Global":
            continue
        macs = _macs_of(ops)
        if macs == 0:
            continue
        if name == root:
            key = ""
        elif name.startswith(root + "."):
            key = name[len(root) + 1:]
        else:  # a module that ran but is not a child of ``module`` (e.g. held in a plain list)
            key = name
        result[key] = macs
    # Report in module order (named_modules), then anything that ran outside ``module``.
    order = {name: i for i, (name, _) in enumerate(module.named_modules())}
    return dict(sorted(result.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _macs_of(op_flops: dict[object, int]) -> int:
    """Sum the FLOPs of the conv/matmul ops in ``op_flops`` and convert them to MACs."""
    flops = sum(v for op, v in op_flops.items() if op in _MAC_OPS)
    assert flops % 2 == 0, f"FlopCounterMode counts 2 FLOPs per MAC, so an even total; got {flops}"
    return flops // 2


def count_params(module: nn.Module) -> int:
    """Return the number of parameters of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def conv2d_macs(
    *,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    groups: int = 1,
    out_h: int,
    out_w: int,
) -> int:
    """Return the MACs of one 2-D convolution on one sample (pycls ``conv2d_cx``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size, an int or ``(k_h, k_w)``.
        groups: Number of groups (``in_channels`` for a depthwise conv).
        out_h: Output height.
        out_w: Output width.

    Returns:
        ``out_channels * (in_channels / groups) * k_h * k_w * out_h * out_w``.

    Raises:
        ConfigError: If ``groups`` does not divide both channel counts.
    """
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ConfigError(
            f"Expected `groups` to divide in_channels={in_channels} and out_channels={out_channels}, "
            f"but got groups={groups}; pass a common divisor"
        )
    k_h, k_w = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return out_channels * (in_channels // groups) * k_h * k_w * out_h * out_w


def linear_macs(*, in_features: int, out_features: int) -> int:
    """Return the MACs of one linear layer on one sample: ``in_features * out_features``."""
    return in_features * out_features
