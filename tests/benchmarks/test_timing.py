"""The method comparison's timing (benchmarks/timing.py): every model at its best against the base,
each threshold setting timed beside the base again. How a timing pass keeps and resumes timings
is tested with the benchmark (tests/benchmarks/test_methods.py)."""
from __future__ import annotations

import pytest
import torch

from benchmarks import timing
from s2dnas.errors import ConfigError


def test_speed_meter_times_each_model_at_its_best_mode_and_thread_count() -> None:
    """SpeedMeter tries every model in each memory format, eager and frozen, on each thread count
    (as ``s2dnas bench``), and records per batch size what it kept for the network and the base;
    a later threshold setting keeps the first one's variants, timed against the base again; the
    caller's thread count is restored."""
    from s2dnas.space import Space
    from tests._models import ToyCNN

    torch.manual_seed(0)
    base = ToyCNN(num_classes=2).eval()
    space = Space(base, input_shape=(1, 8, 8), num_stages=2, ratio_grid=3, model_name="toy")
    msnet = space.build(space.default_architecture()).eval()
    before = torch.get_num_threads()
    meter = timing.SpeedMeter(base, torch.randn(6, 1, 8, 8), base_macs=space.base_macs(), repeats=1,
                               images_batch1=2, thread_options=(2, 1, 2))
    assert meter.thread_options == (1, 2) and torch.get_num_threads() == before
    assert set(meter.base_mode.values()) <= {"eager", "frozen"} and set(meter.base_threads.values()) <= {1, 2}
    entry = {"stage_macs": msnet.stage_macs(),
             "points": [{"thresholds": t, "confidence": "max_softmax"} for t in ([0.6], [0.9], [0.6])]}
    timing.measure_speed(meter, msnet, entry)
    assert torch.get_num_threads() == before
    first, second, _ = entry["points"]
    for suffix in timing.SPEED_BATCHES.values():
        for p in entry["points"]:
            assert p[f"mode{suffix}"] in {"eager", "frozen"} and p[f"base_mode{suffix}"] in {"eager", "frozen"}
            assert p[f"threads{suffix}"] in {1, 2} and p[f"base_threads{suffix}"] in {1, 2}
            assert {p[f"layout{suffix}"], p[f"base_layout{suffix}"]} <= {"nchw", "channels_last"}
        for key in timing.TIMING_FIELDS:
            assert second[f"{key}{suffix}"] == first[f"{key}{suffix}"]  # the first setting's choice, kept
        # ... but the base is timed again beside each setting (not one time reused for all)
        assert second[f"base_seconds{suffix}"] != first[f"base_seconds{suffix}"]
    with pytest.raises(ConfigError, match="thread counts >= 1"):
        timing.SpeedMeter(base, torch.randn(2, 1, 8, 8), base_macs=1, repeats=1, images_batch1=1,
                           thread_options=(0,))
