"""Which configuration produced a run's files: a hash, and the rule for what a resume may change.

Journals, checkpoints and the super-network carry :func:`provenance` (the config hash and the
s2dnas version); ``--resume`` compares the saved config with the new one and refuses any change
outside :data:`RESUME_MAY_DIFFER` (issue 12, "a resume must never mix configurations").

Example:
    >>> from dataclasses import replace
    >>> from s2dnas.config import RunConfig, SearchConfig
    >>> a = RunConfig()
    >>> config_hash(a) == config_hash(replace(a, device="cpu", out="elsewhere"))  # allowed to differ
    True
    >>> config_differences(a, replace(a, search=SearchConfig(reward="tradeoff")))
    ['search.reward: macs_saving -> tradeoff']
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from s2dnas._version import __version__
from s2dnas.config.loader import config_to_dict
from s2dnas.config.schema import RunConfig

__all__ = ["RESUME_MAY_DIFFER", "config_hash", "config_differences", "provenance"]

#: Dotted config fields a resumed run may change: where it runs and where files are, never what
#: it computes. (Progress bars and thread counts are command-line flags, not config fields, and
#: are always free to change.)
RESUME_MAY_DIFFER: tuple[str, ...] = ("out", "device", "data.data_dir")


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: Fields added after runs were made, at the value that computes what those runs computed: left out
#: of the hash at that value, so a run made before the field existed keeps its hash and resumes.
ADDED_AT_DEFAULT: dict[str, Any] = {"search.target_from": "run"}


def _relevant(cfg: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in _flat(config_to_dict(cfg)).items()
            if k not in RESUME_MAY_DIFFER and not (k in ADDED_AT_DEFAULT and ADDED_AT_DEFAULT[k] == v)}


def config_hash(cfg: RunConfig) -> str:
    """A short SHA-256 of every field of ``cfg`` that a resume must not change (16 hex digits)."""
    text = json.dumps(_relevant(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """``"key: old -> new"`` for every field outside :data:`RESUME_MAY_DIFFER` that differs."""
    old, cur = _relevant(saved), _relevant(new)
    return [f"{k}: {old.get(k)!r} -> {cur.get(k)!r}".replace("'", "") for k in sorted(old.keys() | cur.keys())
            if old.get(k) != cur.get(k)]


def provenance(cfg: RunConfig) -> dict[str, str]:
    """What files written for ``cfg`` record: ``{"config_hash": ..., "s2dnas_version": ...}``."""
    return {"config_hash": config_hash(cfg), "s2dnas_version": __version__}
