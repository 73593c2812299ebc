"""A batch-1 fast path around the DynamicNet executor (same exits, same logits).

At batch 1 the executor's bookkeeping (``nonzero``, ``index_select`` of the image and of every
cached feature, the final ``cat`` and ``index_copy``) is a dozen small ops per stage, each a few
microseconds of dispatch, for one input that either leaves or goes on whole. Here a single input
runs stage after stage with no gather at all: the cache is passed on as it is, and the exit test
is the executor's float32 comparison read back as one Python bool. Larger batches go to the
executor unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from s2dnas.dynamic import DynamicNet, DynamicOutput, confidence

__all__ = ["FastDynamicNet"]


class FastDynamicNet(nn.Module):
    """``net`` with a batch-1 path that skips gathering and scattering.

    Args:
        net: the DynamicNet (its thresholds, confidence measure and stages are used as they are;
            put it in eval mode first).
    """

    def __init__(self, net: DynamicNet) -> None:
        super().__init__()
        self.net = net
        # float32 thresholds: the executor compares float32 confidences with them in float32
        self._thresholds = [torch.tensor(t, dtype=torch.float32) for t in net.thresholds]

    def forward(self, x: torch.Tensor) -> DynamicOutput:
        """Run the exit rule; ``x`` is ``(B, C, H, W)``."""
        if x.shape[0] != 1 or self.net.training:
            return self.net(x)
        with torch.inference_mode():
            msnet, last = self.net.msnet, self.net.num_stages - 1
            cache: dict[str, torch.Tensor] = {}
            for s in range(last + 1):
                z = msnet.forward_stage(s, x, cache)  # (1, K)
                if s == last or bool(confidence(z, self.net.confidence)[0] >= self._thresholds[s]):
                    return DynamicOutput(logits=z, exit_stage=torch.full((1,), s, dtype=torch.int64, device=z.device))
        raise AssertionError("unreachable: the last stage always answers")
