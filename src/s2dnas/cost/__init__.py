"""Cost counting: MACs of conv and linear layers by execution, parameters, analytic formulas; the
per-stage cost hook (MACs by default; measured latency in :mod:`s2dnas.cost.latency`)."""
from __future__ import annotations

from s2dnas.cost.macs import conv2d_macs, count_macs, count_params, linear_macs
from s2dnas.cost.stage_cost import MACS, StageCost, macs_stage_cost

__all__ = ["count_macs", "count_params", "conv2d_macs", "linear_macs", "StageCost", "MACS", "macs_stage_cost"]
