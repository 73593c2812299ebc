"""Graph analysis (torch.fx) of any CNN: splittable channel dimensions and their ties."""
from __future__ import annotations

from s2dnas.graph.analysis import GraphAnalysis, analyze, trace

__all__ = ["GraphAnalysis", "analyze", "trace"]
