"""Slices of base-model layers: copied (weight inheritance) or shared (one-shot super-network)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sliced_module", "shared_module", "SharedConv2d", "SharedLinear", "SharedBatchNorm", "SharedLayerNorm",
           "SharedTensor", "EmptyChannels", "BiasOnly"]


def _conv_groups(base: nn.Conv2d, out_idx: torch.Tensor) -> int:
    if base.groups == 1:
        return 1
    return len(out_idx) // (base.in_channels // base.groups)


def sliced_module(base: nn.Module, *, out_idx: torch.Tensor, in_idx: torch.Tensor) -> nn.Module:
    """A new layer holding a copy of ``base``'s weights at output rows ``out_idx`` and input columns
    ``in_idx`` (grouped and depthwise convs and batch norms use ``out_idx`` only)."""
    # Layers are made on the meta device and then filled: their random initialisation would be
    # thrown away and costs most of the build time of a large network.
    with torch.no_grad():
        if isinstance(base, nn.Conv2d):
            groups = _conv_groups(base, out_idx)
            w = base.weight[out_idx] if base.groups > 1 else base.weight[out_idx][:, in_idx]
            new = nn.Conv2d(w.shape[1] * groups, len(out_idx), base.kernel_size, stride=base.stride,
                            padding=base.padding, dilation=base.dilation, groups=groups,
                            bias=base.bias is not None, padding_mode=base.padding_mode,
                            device="meta", dtype=w.dtype).to_empty(device=w.device)
            new.weight.copy_(w)
            if base.bias is not None:
                new.bias.copy_(base.bias[out_idx])
            return new
        if isinstance(base, nn.Linear):
            w = base.weight[out_idx][:, in_idx]
            new = nn.Linear(w.shape[1], w.shape[0], bias=base.bias is not None, device="meta",
                            dtype=w.dtype).to_empty(device=w.device)
            new.weight.copy_(w)
            if base.bias is not None:
                new.bias.copy_(base.bias[out_idx])
            return new
        if isinstance(base, (nn.BatchNorm2d, nn.BatchNorm1d)):
            # the plain norm, not a subclass: a timm BatchNormAct2d's activation is a node of its own
            kind = nn.BatchNorm2d if isinstance(base, nn.BatchNorm2d) else nn.BatchNorm1d
            new = kind(len(out_idx), eps=base.eps, momentum=base.momentum, affine=base.affine,
                       track_running_stats=base.track_running_stats)
            ref = base.weight if base.affine else base.running_mean
            if ref is not None:
                new.to(device=ref.device, dtype=ref.dtype)
            if base.affine:
                new.weight.copy_(base.weight[out_idx])
                new.bias.copy_(base.bias[out_idx])
            if base.track_running_stats:
                new.running_mean.copy_(base.running_mean[out_idx])
                new.running_var.copy_(base.running_var[out_idx])
                if base.num_batches_tracked is not None:
                    new.num_batches_tracked.copy_(base.num_batches_tracked)
            return new
        if isinstance(base, nn.LayerNorm):  # over the channels only (the analysis checks)
            affine = base.weight is not None
            new = nn.LayerNorm(len(out_idx), eps=base.eps, elementwise_affine=affine,
                               bias=base.bias is not None)
            ref = base.weight if affine else None
            if ref is not None:
                new.to(device=ref.device, dtype=ref.dtype)
                new.weight.copy_(base.weight[out_idx])
            if base.bias is not None:
                new.bias.copy_(base.bias[out_idx])
            return new
    raise TypeError(f"Cannot slice a {type(base).__name__}")  # the analysis only passes the above


class _Shared(nn.Module):
    """Computes its weights as a slice of a base layer at every call (gradients flow to the base).
    Slices are taken with ``index_select``, whose backward is one ``index_add`` (advanced indexing's
    is an accumulating ``index_put``, which sorts its indices on CUDA): the super-network's step
    runs hundreds of them."""

    def __init__(self, base: nn.Module, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
        super().__init__()
        object.__setattr__(self, "base", base)  # not a submodule: the base owns the parameters
        self.register_buffer("out_idx", out_idx.clone(), persistent=False)
        self.register_buffer("in_idx", in_idx.clone(), persistent=False)

    def _rows(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """The base tensor's rows of this view's output channels (None stays None)."""
        return t.index_select(0, self.out_idx) if t is not None else None


class SharedConv2d(_Shared):
    """Conv2d over a slice of a shared base conv."""

    def __init__(self, base: nn.Conv2d, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
        super().__init__(base, out_idx, in_idx)
        self.groups = _conv_groups(base, out_idx)
        self.kernel_size = base.kernel_size
        self.out_channels = len(out_idx)
        per_group = base.in_channels // base.groups
        self.in_channels = per_group * self.groups if base.groups > 1 else len(in_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        w = self._rows(b.weight)
        if b.groups == 1:
            w = w.index_select(1, self.in_idx)
        bias = self._rows(b.bias)
        if b.padding_mode != "zeros":  # as nn.Conv2d does for reflect/replicate/circular padding
            x = F.pad(x, b._reversed_padding_repeated_twice, mode=b.padding_mode)
            return F.conv2d(x, w, bias, b.stride, 0, b.dilation, self.groups)
        return F.conv2d(x, w, bias, b.stride, b.padding, b.dilation, self.groups)


class SharedLinear(_Shared):
    """Linear over a slice of a shared base linear layer."""

    def __init__(self, base: nn.Linear, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
        super().__init__(base, out_idx, in_idx)
        self.in_features, self.out_features = len(in_idx), len(out_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        return F.linear(x, self._rows(b.weight).index_select(1, self.in_idx), self._rows(b.bias))


class SharedBatchNorm(_Shared):
    """Batch norm over a slice of a shared base norm; always normalises with batch statistics
    (a candidate's running statistics are re-estimated after it is materialised)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        return F.batch_norm(x, None, None, self._rows(b.weight), self._rows(b.bias), True, 0.0, b.eps)


class SharedLayerNorm(_Shared):
    """Layer norm over a slice of a shared base layer norm's channels (the stage's own statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        return F.layer_norm(x, (len(self.out_idx),), self._rows(b.weight), self._rows(b.bias), b.eps)


class SharedTensor(nn.Module):
    """A slice of a parameter used outside a module (a layer scale), taken at every call."""

    def __init__(self, base: torch.Tensor, *, axis: int, index: torch.Tensor) -> None:
        super().__init__()
        object.__setattr__(self, "base", base)  # not registered: the base model owns it
        self.axis = axis
        self.register_buffer("index", index.clone(), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.base.index_select(self.axis, self.index)


class EmptyChannels(nn.Module):
    """A layer of which a stage computes no channel (a split with fewer whole groups than stages):
    an empty tensor of the layer's output shape, ``shape`` without the batch."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((x.shape[0], *self.shape))


class BiasOnly(nn.Module):
    """A conv or linear layer whose stage input has no channel: its output is its bias (no MACs)."""

    def __init__(self, bias: torch.Tensor | None, shape: tuple[int, ...], *, axis: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.axis = axis
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((x.shape[0], *self.shape))
        if self.bias is None:
            return out
        view = [1] * out.dim()
        view[self.axis] = -1
        return out + self.bias.view(view)


def shared_module(base: nn.Module, *, out_idx: torch.Tensor, in_idx: torch.Tensor) -> nn.Module:
    """Like :func:`sliced_module` but sharing ``base``'s parameters instead of copying them."""
    if isinstance(base, nn.Conv2d):
        return SharedConv2d(base, out_idx, in_idx)
    if isinstance(base, nn.Linear):
        return SharedLinear(base, out_idx, in_idx)
    if isinstance(base, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return SharedBatchNorm(base, out_idx, in_idx)
    if isinstance(base, nn.LayerNorm):
        return SharedLayerNorm(base, out_idx, in_idx)
    raise TypeError(f"Cannot share a slice of a {type(base).__name__}")
