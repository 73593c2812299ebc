"""The alternatives S2DNAS is compared with, built as multi-stage networks so that one
evaluation path (calibration on val, DynamicNet, MAC counting, speed) serves every method:
SDN-style early exits on the base model and cascades of independent models."""
from s2dnas.baselines.cascade import as_stage, cascade, single_stage
from s2dnas.baselines.early_exit import EarlyExitNet, ExitHead, attach_exits, cut_points, freeze_trunk

__all__ = ["as_stage", "cascade", "single_stage", "EarlyExitNet", "ExitHead", "attach_exits", "cut_points",
           "freeze_trunk"]
