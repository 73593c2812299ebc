"""s2dnas: transform a trained static CNN into a multi-stage network for dynamic inference."""
from __future__ import annotations

from s2dnas.errors import *  # noqa: F401,F403
from s2dnas.errors import __all__ as _errors_all
from s2dnas.zoo import list_models

__version__ = "0.1.0"
__all__ = ["list_models", *_errors_all]
