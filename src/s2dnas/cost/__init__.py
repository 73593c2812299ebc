"""Cost counting: MACs of conv and linear layers by execution, parameters, analytic formulas."""
from __future__ import annotations

from s2dnas.cost.macs import conv2d_macs, count_macs, count_params, linear_macs

__all__ = ["count_macs", "count_params", "conv2d_macs", "linear_macs"]
