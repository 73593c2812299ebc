"""The super-network: one set of weights that every architecture of a space shares.

A :class:`SuperNet` holds a private copy of the base model (every architecture's stages are views
of slices of its layers, ``Space.build(arch, share_weights=True)``) plus one copy of the base's
classifier per stage: stage ``s`` of every architecture classifies with head ``s``, so early exits
can specialise instead of sharing one linear layer. An architecture is

* **materialised** (:meth:`SuperNet.materialize`) as views for training: gradients flow into the
  shared weights; batch norms always normalise with batch statistics;
* **extracted** (:meth:`SuperNet.extract`) as a stand-alone :class:`MultiStageNet` holding copies
  of its slices (for scoring, fine-tuning and shipping). In train mode its logits equal the
  views'; in eval mode after :func:`recalibrate` it uses the statistics of the recalibration
  batches.

Example:
    >>> from s2dnas.space import Space
    >>> from s2dnas.zoo import create_model
    >>> supernet = SuperNet(Space(create_model("resnet20"), input_shape=(3, 32, 32)))
    >>> net = supernet.extract(supernet.space.default_architecture())
    >>> sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in supernet.parameters())
    True
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from s2dnas.space import Architecture, MultiStageNet, Space
from s2dnas.space.factory import build_space, space_config
from s2dnas.space.modules import SharedBatchNorm, SharedConv2d, SharedLinear, sliced_module
from s2dnas.train.checkpoint import check_model_identity, load_weights, save_weights
from s2dnas.train.loops import reestimate_batch_norm

__all__ = ["SuperNet", "recalibrate", "FORMAT"]

FORMAT = "s2dnas.supernet/1"
_SHARED = (SharedConv2d, SharedLinear, SharedBatchNorm)


def _local_name(target: str) -> str:
    """The name a stage gives the slice of base module ``target`` (as ``space/build.py`` names it)."""
    return target.replace(".", "_")


class SuperNet(nn.Module):
    """The shared weights of every architecture of ``space`` plus one classifier head per stage.

    Args:
        space: the space over the trained base model. The base model is not modified: it stays
            the distillation teacher (:attr:`teacher`), and the super-network trains a copy.
    """

    def __init__(self, space: Space) -> None:
        super().__init__()
        model = copy.deepcopy(space.model)
        for p in model.parameters():  # the base may be frozen (it is the teacher)
            p.requires_grad_(True)
        self.model = model
        # The copy's space: same options, so the same channel order (importance is measured on
        # the copy at construction, when it still equals the base).
        self.space = build_space(model, config=space_config(space), input_shape=space.input_shape,
                                 model_name=space.model_name)
        gm = self.space.analysis.graph_module
        targets = {n.name: str(n.target) for n in gm.graph.nodes}
        modules = dict(gm.named_modules())
        #: local names (inside a stage) of the classifier layers, i.e. the mixing ops writing the logits
        self.head_names = tuple(_local_name(targets[name]) for name, op in self.space.analysis.mixing.items()
                                if op.is_head)
        heads = {_local_name(targets[name]): modules[targets[name]]
                 for name, op in self.space.analysis.mixing.items() if op.is_head}
        self.heads = nn.ModuleList(
            nn.ModuleDict({k: copy.deepcopy(m) for k, m in heads.items()}) for _ in range(space.num_stages))
        object.__setattr__(self, "teacher", space.model)  # not a submodule: never trained or saved

    @property
    def num_stages(self) -> int:
        """S."""
        return self.space.num_stages

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def materialize(self, arch: Architecture) -> MultiStageNet:
        """``arch`` as views of the shared weights (stage ``s`` classifies with head ``s``)."""
        net = self.space.build(arch, share_weights=True)
        self._attach_heads(net)
        return net.to(self._device())

    def _attach_heads(self, net: MultiStageNet) -> None:
        for s, stage in enumerate(net.stages):
            for name, head in self.heads[s].items():
                view = getattr(stage, name)
                if not isinstance(view, SharedLinear):  # the space's builder changed its naming
                    raise TypeError(f"Expected stage {s + 1}'s {name!r} to be a shared classifier, "
                                    f"but got {type(view).__name__}")
                object.__setattr__(view, "base", head)

    def extract(self, arch: Architecture) -> MultiStageNet:
        """``arch`` as a stand-alone network holding copies of its slices (eval mode).

        Its batch norms start from the base model's running statistics, which do not fit the
        trained slices: call :func:`recalibrate` before evaluating it.
        """
        net = self.materialize(arch)
        with torch.no_grad():
            for stage in net.stages:
                for name, view in list(stage.named_children()):
                    if isinstance(view, _SHARED):
                        setattr(stage, name, sliced_module(view.base, out_idx=view.out_idx, in_idx=view.in_idx))
        return net.eval()

    def save(self, path: str | Path, *, metadata: dict[str, Any]) -> None:
        """Write the weights (safetensors) and ``metadata`` plus the space's options (JSON beside it)."""
        meta = {"format": FORMAT, "space": self.space_options(), **metadata}
        save_weights(path, self.state_dict(), meta)

    def load(self, path: str | Path) -> dict[str, Any]:
        """Load weights written by :meth:`save` (no pickle); returns their metadata.

        Raises:
            CheckpointError: missing or corrupt file, or weights of another space.
        """
        from s2dnas.errors import CheckpointError

        tensors, meta = load_weights(path)
        if meta.get("space", {}).get("signature") not in (None, self.space.signature):
            raise CheckpointError(f"{path} holds a super-network of another space (signature "
                                  f"{meta['space']['signature']}, expected {self.space.signature}); "
                                  "use the model and space options it was trained with")
        check_model_identity(tensors, self, source=str(path))
        self.load_state_dict(tensors)
        return meta

    def space_options(self) -> dict[str, Any]:
        """The options that rebuild this super-network's space (recorded with its weights)."""
        sp = self.space
        return {"signature": sp.signature, "model": sp.model_name, "input_shape": list(sp.input_shape),
                "num_stages": sp.num_stages, "ratio_grid": sp.ratio_grid, "groups": sp.groups,
                "importance": sp.importance, "channel_multiple": sp.channel_multiple}


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def recalibrate(msnet: nn.Module, loader: Iterable[Any], *, batches: int, seed: int = 0,
                device: torch.device | str | None = None) -> None:
    """Re-estimate every batch norm's running statistics of an extracted network, then eval mode.

    The statistics become the average of the per-batch means and (unbiased) variances over the
    first ``batches`` batches of ``loader``. Run in a forked RNG seeded with ``seed``, so random
    augmentation draws the same values whatever ran before; ``loader`` must itself be ordered
    deterministically (e.g. ``make_loader(..., shuffle=True, seed=...)``).
    """
    if device is None:
        device = next(msnet.parameters()).device
    with _seeded(seed):
        reestimate_batch_norm(msnet, loader, batches=batches, device=torch.device(device))
    msnet.eval()
