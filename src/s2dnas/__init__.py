"""s2dnas: transform a trained static CNN into a multi-stage network for dynamic inference."""
from __future__ import annotations

from s2dnas._version import __version__
from s2dnas.errors import *  # noqa: F401,F403
from s2dnas.errors import __all__ as _errors_all
from s2dnas.cost import count_macs, count_params
from s2dnas.zoo import create_model, list_models
from s2dnas.space import Architecture, MultiStageNet, Space
from s2dnas.dynamic import DynamicNet, calibrate, load

__all__ = [
    "create_model", "list_models", "count_macs", "count_params",
    "Space", "Architecture", "MultiStageNet", "DynamicNet", "calibrate", "load",
    "__version__", *_errors_all,
]
