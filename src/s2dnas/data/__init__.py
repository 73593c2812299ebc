"""Datasets, the train/val/test splits, their preprocessing and loaders."""
from __future__ import annotations

from s2dnas.data.datasets import (DATASET_SHAPES, build_splits, canonical_dataset, dataset_shape, list_datasets,
                                  make_loader, splits_for_model)
from s2dnas.data.preprocessing import AUGMENTATIONS, NORMALIZATIONS, ImageOptions, Preprocessing, default_val_size
from s2dnas.data.splits import DataSplits, check_data_spec, check_splits_fit

__all__ = ["AUGMENTATIONS", "DATASET_SHAPES", "NORMALIZATIONS", "DataSplits", "ImageOptions", "Preprocessing",
           "build_splits", "canonical_dataset", "check_data_spec", "check_splits_fit", "dataset_shape", "default_val_size",
           "list_datasets", "make_loader", "splits_for_model"]
