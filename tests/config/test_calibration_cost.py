"""calibration.cost / latency_budget / latency_batch: defaults, validation, the resolved target."""
from __future__ import annotations

import pytest

from s2dnas.config import CalibrationConfig, CalibrationTarget, RunConfig, load_config, resolve_target
from s2dnas.errors import ConfigError


def test_defaults_are_macs_at_batch_1() -> None:
    cfg = load_config()
    assert (cfg.calibration.cost, cfg.calibration.latency_budget, cfg.calibration.latency_batch) == ("macs", None, 1)
    assert load_config(overrides=["calibration.cost=latency"]).calibration.cost == "latency"


@pytest.mark.parametrize("overrides, message", [
    (["calibration.cost=flops"], "calibration.cost must be one of macs, latency; got 'flops'"),
    (["calibration.cost=latency", "calibration.latency_budget=0"], "calibration.latency_budget must be in (0.0, 1.0]"),
    (["calibration.cost=latency", "calibration.latency_budget=1.5"], "calibration.latency_budget must be in (0.0, 1.0]"),
    (["calibration.latency_batch=0"], "calibration.latency_batch must be >= 1, got 0"),
    (["calibration.latency_budget=0.5"], "calibration.latency_budget needs calibration.cost: latency"),
    (["calibration.cost=latency", "calibration.macs_budget=0.5"], "calibration.macs_budget is a MACs budget, but "
                                                                  "calibration.cost is latency"),
    (["calibration.cost=latency", "calibration.latency_budget=0.5", "calibration.target_accuracy=0.9"],
     "calibration.latency_budget and calibration.target_accuracy are exclusive"),
    (["calibration.cost=latency", "calibration.latency_budget=0.5"],
     "search.reward=macs_saving calibrates to an accuracy target, but calibration.latency_budget is set"),
])
def test_bad_cost_settings_are_refused_in_one_message(overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert message in str(info.value)


def test_latency_budget_with_accuracy_in_budget_is_valid() -> None:
    cfg = load_config(overrides=["calibration.cost=latency", "calibration.latency_budget=0.5",
                                 "search.reward=accuracy_in_budget"])
    assert cfg.calibration.latency_budget == 0.5 and RunConfig().validate() == []


def test_latency_budget_is_a_fraction_of_the_base_latency() -> None:
    section = CalibrationConfig(cost="latency", latency_budget=0.25)
    target = resolve_target(section, base_val_accuracy=0.9, base_macs=1000, base_latency_ms=8.0)
    assert target == CalibrationTarget(latency_budget=2.0)
    assert target.budget_mode and target.calibrate_kwargs() == {"target_accuracy": None, "cost_budget": 2.0}
    # cost: latency with an accuracy target: the target is the usual one
    acc = resolve_target(CalibrationConfig(cost="latency", tolerance=0.01), base_val_accuracy=0.9, base_macs=1000,
                         base_latency_ms=8.0)
    assert acc == CalibrationTarget(target_accuracy=pytest.approx(0.89))
