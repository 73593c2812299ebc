"""The package version, on the lowest layer so every module can record it (pyproject reads it here)."""
from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
