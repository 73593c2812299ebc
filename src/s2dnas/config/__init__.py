"""Configuration: frozen dataclasses per pipeline step; defaults -> YAML -> ``--set`` overrides."""
from __future__ import annotations

from pathlib import Path

from s2dnas.config.base_train import BaseTrainConfig
from s2dnas.config.fingerprint import RESUME_MAY_DIFFER, config_differences, config_hash, provenance
from s2dnas.config.loader import (
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_override,
    resolve_config,
    validate_config,
)
from s2dnas.config.schema import (
    SHIPPED_SUPERNET,
    CalibrationConfig,
    DataConfig,
    ModelConfig,
    RunConfig,
    SearchConfig,
    SpaceConfig,
    SupernetConfig,
    TrainConfig,
    searches_at_random,
)
from s2dnas.config.target import CalibrationTarget, reference_target, resolve_target

#: The built-in demo's configuration file (``s2dnas demo``, ``make demo``): what it changes from the defaults.
DEMO_CONFIG = str(Path(__file__).with_name("demo.yaml"))

__all__ = [
    "DEMO_CONFIG",
    "SHIPPED_SUPERNET",
    "RESUME_MAY_DIFFER",
    "config_differences",
    "config_hash",
    "provenance",
    "BaseTrainConfig",
    "CalibrationTarget",
    "resolve_target",
    "reference_target",
    "CalibrationConfig",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "SearchConfig",
    "SpaceConfig",
    "SupernetConfig",
    "TrainConfig",
    "searches_at_random",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_override",
    "resolve_config",
    "validate_config",
]
