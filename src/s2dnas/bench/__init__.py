"""Side-by-side benchmarks: measured speed of the base model and the DynamicNet."""
from __future__ import annotations

from s2dnas.bench.speed import SpeedRow, benchmark_speed, prepare_dynamic, prepare_static

__all__ = ["SpeedRow", "benchmark_speed", "prepare_dynamic", "prepare_static"]
