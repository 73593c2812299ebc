"""MultiStageNet: the S stages of a searched network, run in order with a feature cache."""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import fx, nn

__all__ = ["MultiStageNet"]


class MultiStageNet(nn.Module):
    """Stages that each compute their own channel slices and read earlier stages' features.

    Stage ``s`` (0-based here; "stage s+1" in reports) is an ordinary ``fx.GraphModule`` with
    signature ``stage(x, *cached) -> (logits, *features)``: ``cached`` are the features listed in
    ``reads[s]`` (written by earlier stages), ``features`` those listed in ``writes[s]``.

    Args:
        stages: one GraphModule per stage.
        reads: per stage, the cache keys it reads, in argument order.
        writes: per stage, the cache keys it writes, in output order.
        architecture: the :class:`~s2dnas.space.Architecture` it was built from.
        input_shape: ``(C, H, W)`` of one input.
        analytic_macs: per stage, its own MACs by the formula (reused features not counted).
    """

    def __init__(self, stages: Sequence[fx.GraphModule], *, reads: Sequence[Sequence[str]],
                 writes: Sequence[Sequence[str]], architecture: object, input_shape: tuple[int, ...],
                 analytic_macs: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.reads = [list(r) for r in reads]
        self.writes = [list(w) for w in writes]
        self.architecture = architecture
        self.input_shape = tuple(input_shape)
        self.analytic_macs = list(analytic_macs)

    @property
    def num_stages(self) -> int:
        """S, the number of stages."""
        return len(self.stages)

    def forward_stage(self, stage: int, x: torch.Tensor, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run stage ``stage`` on ``x``; read earlier features from ``cache`` and add its own to it.

        Args:
            stage: 0-based stage index.
            x: the images, ``(B, C, H, W)``; every cached tensor must have the same batch ``B``.
            cache: features written by stages ``0..stage-1`` on the same inputs (updated in place).

        Returns:
            The logits of this stage, ``(B, num_classes)``.
        """
        out = self.stages[stage](x, *[cache[k] for k in self.reads[stage]])
        cache.update(zip(self.writes[stage], out[1:]))
        return out[0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every stage, ``[(B, K)] * S`` (all stages run on all inputs)."""
        cache: dict[str, torch.Tensor] = {}
        return [self.forward_stage(s, x, cache) for s in range(self.num_stages)]

    def stage_macs(self) -> list[int]:
        """Each stage's own MACs per input, counted by executing it (reused features are inputs)."""
        from s2dnas.cost import count_macs

        ref = next(itertools.chain(self.parameters(), self.buffers()))  # shared stages own buffers only
        x = torch.zeros(1, *self.input_shape, device=ref.device,
                        dtype=ref.dtype if ref.is_floating_point() else None)
        cache: dict[str, torch.Tensor] = {}
        macs = []
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for s in range(self.num_stages):
                    args = (x, *[cache[k] for k in self.reads[s]])
                    macs.append(count_macs(self.stages[s], args))
                    self.forward_stage(s, x, cache)
        finally:
            self.train(was_training)
        return macs
