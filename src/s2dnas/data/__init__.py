"""Datasets, the train/val/test splits and loaders."""
from __future__ import annotations

from s2dnas.data.datasets import DataSplits, build_splits, list_datasets, make_loader

__all__ = ["DataSplits", "build_splits", "list_datasets", "make_loader"]
