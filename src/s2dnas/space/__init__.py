"""The split/concat space: architectures, building multi-stage networks with inherited weights."""
from __future__ import annotations

from s2dnas.space.architecture import Architecture
from s2dnas.space.multistage import MultiStageNet
from s2dnas.space.space import Space

__all__ = ["Architecture", "MultiStageNet", "Space"]
