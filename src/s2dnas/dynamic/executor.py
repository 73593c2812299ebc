"""The batched early-exit executor and the exit rule it implements.

The rule (METHOD.md "Dynamic inference"): stage 0 runs on every input; an input leaves at stage
``s < S-1`` when ``confidence(logits_s) >= thresholds[s]``; stage ``S-1`` answers for the rest.
:class:`DynamicNet` runs it on a batch without a Python loop over inputs: after each stage the
inputs still in flight, and the cached features later stages read, are gathered with
``index_select`` and only they go on. :func:`reference_forward` computes the same rule from all
stages' logits (every stage on every input) and is what tests compare the executor against.

Example:
    >>> import torch
    >>> from s2dnas.space import Space
    >>> from s2dnas.zoo import create_model
    >>> space = Space(create_model("resnet20", num_classes=10, in_channels=1), input_shape=(1, 16, 16))
    >>> net = DynamicNet(space.build().eval(), ExitPolicy(thresholds=(0.9, 0.9)))
    >>> out = net(torch.randn(4, 1, 16, 16))
    >>> tuple(out.logits.shape), out.exit_stage.dtype
    ((4, 10), torch.int64)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from s2dnas.dynamic.confidence import confidence as _confidence
from s2dnas.dynamic.files import save_dynamic
from s2dnas.dynamic.policy import ExitPolicy, as_policy, policy_errors
from s2dnas.errors import CalibrationError, DataError
from s2dnas.space.multistage import MultiStageNet

__all__ = ["DynamicOutput", "DynamicNet", "reference_forward", "route", "executed_macs"]

_logger = logging.getLogger(__name__)


class DynamicOutput(NamedTuple):
    """What :class:`DynamicNet` returns for a batch.

    Attributes:
        logits: ``(B, K)`` logits of the stage each input left at.
        exit_stage: ``(B,)`` int64, the 0-based stage each input left at.
    """

    logits: torch.Tensor
    exit_stage: torch.Tensor


def route(confidences: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Apply the exit rule to precomputed confidences, for many threshold settings at once.

    Args:
        confidences: ``(S-1, N)`` float32 confidences of the early stages.
        thresholds: ``(P, S-1)`` threshold settings (compared in float32).

    Returns:
        ``(P, N)`` int64 exit stage of every input under every setting: the first ``s`` with
        ``confidences[s] >= thresholds[:, s]``, else ``S-1``.
    """
    num_early, n = confidences.shape
    p = thresholds.shape[0]
    assert thresholds.shape == (p, num_early), f"expected ({p}, {num_early}) thresholds, got {tuple(thresholds.shape)}"
    conf = confidences.float()
    t = thresholds.to(dtype=torch.float32, device=conf.device)
    exit_stage = torch.full((p, n), num_early, dtype=torch.int64, device=conf.device)
    # Walk the stages backwards: the earliest stage that accepts an input writes last and wins.
    for s in range(num_early - 1, -1, -1):
        leave = conf[s].unsqueeze(0) >= t[:, s : s + 1]
        exit_stage = torch.where(leave, s, exit_stage)
    return exit_stage


def executed_macs(exit_stage: torch.Tensor, stage_macs: Sequence[int]) -> int:
    """MACs actually executed for inputs that left at ``exit_stage``.

    Stage ``s`` runs on every input with ``exit_stage >= s`` and costs ``stage_macs[s]`` per input
    (its own MACs; reused features are not counted again).

    Args:
        exit_stage: ``(B,)`` 0-based exit stages.
        stage_macs: per stage, its own MACs per input.

    Returns:
        ``sum_s #{exit_stage >= s} * stage_macs[s]``, an exact integer.
    """
    counts = torch.bincount(exit_stage.detach().cpu().reshape(-1), minlength=len(stage_macs)).tolist()
    reached = len(exit_stage.reshape(-1))
    total = 0
    for s, macs in enumerate(stage_macs):
        total += reached * int(macs)
        reached -= counts[s]
    return total


class DynamicNet(nn.Module):
    """A multi-stage network that stops computing for an input once an exit is confident enough.

    Stage 0 runs on the whole batch. After stage ``s < S-1``, inputs with
    ``confidence >= thresholds[s]`` leave with that stage's logits; the rest, and the cached
    features that later stages read, are gathered with ``index_select`` (never recomputed) and go
    on. It stops as soon as no input remains. A batch of one input skips the gathering and
    scattering altogether (same exits, same logits). Outside training the forward pass runs under
    ``torch.inference_mode``. Batch norms should be in eval mode (``net.eval()``) so that an
    input's result does not depend on which other inputs share its batch.

    The exit policy is kept once, in :attr:`policy`; :attr:`thresholds` and :attr:`confidence`
    read it, and changing them means replacing it (:meth:`set_thresholds`, ``net.policy = ...``).

    Args:
        msnet: the multi-stage network.
        policy: the :class:`~s2dnas_runtime.ExitPolicy` (from :func:`~s2dnas.dynamic.calibrate`'s
            ``.policy``), or ``S-1`` thresholds as a shorthand for ``ExitPolicy(thresholds=...)``.
        stage_macs: per stage, its own MACs per input; default: the policy's ``stage_cost`` when
            its unit is MACs, else counted once with ``msnet.stage_macs()`` on first use.
        model_spec: what :func:`s2dnas.dynamic.load` needs to rebuild the base model (see
            :func:`s2dnas.dynamic.build_model_spec`); :meth:`save` uses it by default.

    Raises:
        CalibrationError: invalid thresholds or per-stage MACs.
        ConfigError: unknown confidence measure.
    """

    def __init__(self, msnet: MultiStageNet, policy: ExitPolicy | Sequence[float] | torch.Tensor, *,
                 stage_macs: Sequence[int] | None = None, model_spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.msnet = msnet
        self._policy = as_policy(policy, num_stages=msnet.num_stages)
        if stage_macs is None and self._policy.cost_unit == "macs" and self._policy.stage_cost is not None:
            stage_macs = self._policy.stage_cost
        if stage_macs is not None and len(stage_macs) != msnet.num_stages:
            raise CalibrationError(
                f"Expected {msnet.num_stages} per-stage MACs, but got {len(stage_macs)}; pass msnet.stage_macs()"
            )
        self._stage_macs: list[int] | None = None if stage_macs is None else [int(m) for m in stage_macs]
        self.model_spec = dict(model_spec) if model_spec is not None else None
        self.train(msnet.training)  # a DynamicNet over an eval-mode network starts in eval mode
        # Per stage s: the cache keys any later stage still reads (everything else is dropped).
        self._needed_after: list[tuple[str, ...]] = []
        for s in range(msnet.num_stages):
            later = {k for r in msnet.reads[s + 1:] for k in r}
            self._needed_after.append(tuple(k for w in msnet.writes[: s + 1] for k in w if k in later))

    @property
    def policy(self) -> ExitPolicy:
        """The exit policy (thresholds, confidence measure, stage cost, calibration record)."""
        return self._policy

    @policy.setter
    def policy(self, policy: ExitPolicy | Sequence[float]) -> None:
        self._policy = as_policy(policy, num_stages=self.num_stages)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The policy's ``S-1`` thresholds."""
        return self._policy.thresholds

    @property
    def confidence(self) -> str:
        """The policy's confidence measure."""
        return self._policy.confidence

    @property
    def num_stages(self) -> int:
        """S, the number of stages."""
        return self.msnet.num_stages

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one input."""
        return self.msnet.input_shape

    @property
    def stage_macs(self) -> list[int]:
        """Per stage, its own MACs per input (counted by execution once, then cached)."""
        if self._stage_macs is None:
            self._stage_macs = [int(m) for m in self.msnet.stage_macs()]
        return list(self._stage_macs)

    def macs_of(self, exit_stage: torch.Tensor) -> int:
        """MACs executed for a batch whose inputs left at ``exit_stage`` (see :func:`executed_macs`)."""
        return executed_macs(exit_stage, self.stage_macs)

    def set_thresholds(self, thresholds: Sequence[float] | torch.Tensor) -> None:
        """Replace the policy by one with these thresholds (same measure; the calibration record,
        which described the old thresholds, is dropped: see :meth:`ExitPolicy.with_thresholds`).

        Raises:
            CalibrationError: invalid thresholds.
        """
        with policy_errors():
            policy = self._policy.with_thresholds(thresholds)
        self.policy = policy

    def forward(self, x: torch.Tensor) -> DynamicOutput:
        """Run the early-exit rule on a batch.

        Args:
            x: ``(B, C, H, W)`` float images, preprocessed as in training, on the network's
                device; another float dtype (e.g. float64) is cast to the network's.

        Returns:
            :class:`DynamicOutput` with ``logits`` ``(B, K)`` and ``exit_stage`` ``(B,)`` int64.

        Raises:
            DataError: not a float tensor of shape ``(B, *input_shape)``.
        """
        x = self._check_input(x)
        if self.training:
            return self._forward(x)
        with torch.inference_mode():
            return self._forward(x)

    def _check_input(self, x: Any) -> torch.Tensor:
        shape = tuple(int(v) for v in self.input_shape)
        if not isinstance(x, torch.Tensor):
            raise DataError(f"Expected a torch.Tensor of shape (B, {', '.join(map(str, shape))}), but got "
                            f"{type(x).__name__}; convert with torch.as_tensor")
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise DataError(f"Expected images of shape (B, {', '.join(map(str, shape))}) (the size the model was "
                            f"built for), but got {tuple(x.shape)}; resize the images as the training data was")
        if not x.is_floating_point():
            raise DataError(f"Expected float images (scaled to [0, 1] and normalised as in training), but got "
                            f"{x.dtype}; preprocess them first")
        param = next(iter(self.msnet.parameters()), None)
        if param is not None and x.dtype != param.dtype:
            x = x.to(param.dtype)
        return x

    def _forward(self, x: torch.Tensor) -> DynamicOutput:
        return self._forward_one(x) if x.shape[0] == 1 else self._forward_batch(x)

    def _forward_batch(self, x: torch.Tensor) -> DynamicOutput:
        """Any batch: exits leave, the rest and their cached features are gathered and go on."""
        msnet, last = self.msnet, self.num_stages - 1
        batch = x.shape[0]
        position = torch.arange(batch, device=x.device)  # original index of each input in flight
        cache: dict[str, torch.Tensor] = {}
        pieces_pos: list[torch.Tensor] = []
        pieces_logits: list[torch.Tensor] = []
        pieces_stage: list[torch.Tensor] = []
        for s in range(last + 1):
            z = msnet.forward_stage(s, x, cache)  # (B_s, K)
            if s == last:
                leave = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
            else:
                leave = _confidence(z, self.confidence) >= self.thresholds[s]
            out_idx = leave.nonzero().squeeze(1)
            if out_idx.numel() == z.shape[0]:  # everyone leaves: no gather needed
                pieces_pos.append(position)
                pieces_logits.append(z)
                pieces_stage.append(torch.full_like(position, s))
                break
            if out_idx.numel():
                pieces_pos.append(position.index_select(0, out_idx))
                pieces_logits.append(z.index_select(0, out_idx))
                pieces_stage.append(torch.full_like(pieces_pos[-1], s))
            # Only the inputs in flight go on; their cached features are gathered, not recomputed.
            keep = (~leave).nonzero().squeeze(1)
            position = position.index_select(0, keep)
            x = x.index_select(0, keep)
            cache = {k: cache[k].index_select(0, keep) for k in self._needed_after[s]}
        order = torch.cat(pieces_pos)
        logits_cat = torch.cat(pieces_logits)
        logits = torch.empty_like(logits_cat).index_copy(0, order, logits_cat)
        exit_stage = torch.empty_like(order).index_copy(0, order, torch.cat(pieces_stage))
        return DynamicOutput(logits=logits, exit_stage=exit_stage)

    def _forward_one(self, x: torch.Tensor) -> DynamicOutput:
        """Batch 1: the input leaves or goes on whole, so there is nothing to gather or scatter.

        The general path's ``nonzero``, ``index_select`` of the image and every cached feature,
        ``cat`` and ``index_copy`` are a dozen small ops per stage, each a few microseconds of
        dispatch; here the cache is passed on as it is and the exit test (the same float32
        comparison) is read back as one Python bool.
        """
        msnet, last = self.msnet, self.num_stages - 1
        cache: dict[str, torch.Tensor] = {}
        for s in range(last + 1):
            z = msnet.forward_stage(s, x, cache)  # (1, K)
            if s == last or bool(_confidence(z, self.confidence)[0] >= self.thresholds[s]):
                return DynamicOutput(logits=z, exit_stage=torch.full((1,), s, dtype=torch.int64, device=z.device))
        raise AssertionError("unreachable: the last stage always answers")

    def save(self, directory: str | Path, *, model_spec: dict[str, Any] | None = None) -> Path:
        """Write the model as a directory that :func:`s2dnas.load` reads (see :mod:`s2dnas.dynamic.files`).

        Args:
            directory: target directory (created if needed; other files in it are kept).
            model_spec: how to rebuild the base model (:func:`s2dnas.dynamic.build_model_spec`);
                defaults to the spec this net was loaded or built with.

        Returns:
            The directory.
        """
        return save_dynamic(self, directory, model_spec=model_spec)

    def extra_repr(self) -> str:
        return f"thresholds={list(self.thresholds)}, confidence={self.confidence!r}"


def reference_forward(msnet: MultiStageNet, x: torch.Tensor, policy: ExitPolicy | Sequence[float]) -> DynamicOutput:
    """The exit rule computed the slow way: every stage on every input (``msnet(x)``), then route.

    Args:
        msnet: the multi-stage network (put it in eval mode first).
        x: ``(B, C, H, W)`` images.
        policy: the exit policy (or ``S-1`` thresholds, max-softmax confidence).

    Returns:
        The :class:`DynamicOutput` the rule gives.
    """
    policy = as_policy(policy, num_stages=msnet.num_stages)
    values = policy.thresholds
    with torch.inference_mode():
        all_logits = torch.stack(msnet(x))  # (S, B, K)
        conf = torch.stack([_confidence(z, policy.confidence) for z in all_logits[:-1]]) if values else (
            torch.zeros(0, x.shape[0], device=x.device))
        exit_stage = route(conf, torch.tensor([values], dtype=torch.float32))[0]
        logits = all_logits[exit_stage, torch.arange(x.shape[0], device=x.device)]
    return DynamicOutput(logits=logits, exit_stage=exit_stage)
