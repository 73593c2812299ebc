"""Search: decisions and samples, controllers (ask/tell), and the journal of evaluated candidates."""
from __future__ import annotations

from s2dnas.search.controller import Controller
from s2dnas.space.decision import Decision, Sample, check_sample, count_samples, validate_decisions
from s2dnas.search.journal import Journal, sample_key
from s2dnas.search.random import RandomController
from s2dnas.search.rl import RLController

__all__ = [
    "Decision",
    "Sample",
    "validate_decisions",
    "check_sample",
    "count_samples",
    "Controller",
    "RLController",
    "RandomController",
    "Journal",
    "sample_key",
]
