"""ExitPolicy: validated once, round trip, booleans refused, and the manifest's versions (numpy only)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from s2dnas_runtime import (
    CONFIDENCE_MEASURES,
    ExitPolicy,
    PolicyError,
    exit_rule,
    manifest_policy,
    manifest_preprocessing,
)


def test_round_trip_and_normalisation() -> None:
    policy = ExitPolicy(thresholds=np.array([0.25, 2.0], dtype=np.float32), confidence="margin",
                        stage_cost=[10, 20, 30], cost_unit="macs", calibration={"target_accuracy": 0.9, "curve": []})
    assert policy.thresholds == (0.25, 2.0) and isinstance(policy.thresholds[0], float)
    assert policy.num_stages == 3 and policy.stage_cost == (10, 20, 30)
    data = json.loads(json.dumps(policy.to_dict()))
    assert ExitPolicy.from_dict(data) == policy
    data["calibration"]["target_accuracy"] = 0.1  # the policy's record is its own copy
    assert policy.calibration["target_accuracy"] == 0.9
    other = policy.with_thresholds([0.5, 0.5])
    assert other.thresholds == (0.5, 0.5) and other.calibration is None and other.stage_cost == policy.stage_cost


@pytest.mark.parametrize("kwargs, field, match", [
    ({"thresholds": [True, 0.5]}, "thresholds", "booleans are not thresholds"),
    ({"thresholds": [np.bool_(False)]}, "thresholds", "booleans"),
    ({"thresholds": ["0.5"]}, "thresholds", "to be numbers"),
    ({"thresholds": 0.5}, "thresholds", "list of numbers"),
    ({"thresholds": [math.nan]}, "thresholds", "finite number >= 0"),
    ({"thresholds": [-0.1]}, "thresholds", "finite number >= 0"),
    ({"thresholds": [0.5], "confidence": "energy"}, "confidence", "max_softmax, entropy, margin"),
    ({"thresholds": [0.5], "stage_cost": [1.0]}, "stage_cost", "2 per-stage costs"),
    ({"thresholds": [0.5], "stage_cost": [1.0, -2.0]}, "stage_cost", ">= 0"),
    ({"thresholds": [0.5], "calibration": {"x": object()}}, "calibration", "plain JSON"),
])
def test_invalid_policies_cannot_be_made(kwargs, field: str, match: str) -> None:
    with pytest.raises(PolicyError, match=match) as info:
        ExitPolicy(**kwargs)
    assert info.value.field == field and "\n" not in str(info.value)


def test_from_dict_refuses_other_formats_and_unknown_fields() -> None:
    with pytest.raises(PolicyError, match="format"):
        ExitPolicy.from_dict({"format": "other/1", "thresholds": [0.5]})
    with pytest.raises(PolicyError, match="also"):
        ExitPolicy.from_dict({"thresholds": [0.5], "thresholdz": [0.5]})
    with pytest.raises(PolicyError, match="booleans"):
        ExitPolicy.from_dict(json.loads('{"thresholds": [true, false]}'))
    with pytest.raises(PolicyError, match="3 thresholds"):
        ExitPolicy(thresholds=[0.5]).validate(num_stages=4)
    assert CONFIDENCE_MEASURES == ("max_softmax", "entropy", "margin")


def test_exit_rule_takes_the_first_confident_stage() -> None:
    s0 = np.array([[5.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # confident, unsure, unsure
    s1 = np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 0.0]])
    s2 = np.zeros((3, 2))
    logits, exits = exit_rule([s0, s1, s2], ExitPolicy(thresholds=(0.9, 0.9)))
    assert exits.tolist() == [0, 1, 2] and np.array_equal(logits[1], s1[1])
    with pytest.raises(PolicyError, match="2 thresholds"):
        exit_rule([s0, s1, s2], ExitPolicy(thresholds=(0.9,)))


def test_version_one_manifests_give_the_same_objects() -> None:
    v1 = {"format_version": 1, "thresholds": [0.5, 0.6], "confidence": "entropy", "stage_macs": [1, 2, 3],
          "input_shape": [1, 8, 8], "normalization": {"mean": [0.5], "std": [0.2]}}
    assert manifest_policy(v1) == ExitPolicy(thresholds=(0.5, 0.6), confidence="entropy", stage_cost=(1, 2, 3))
    pre = manifest_preprocessing(v1)
    assert pre is not None and pre.input_shape == (1, 8, 8) and pre.mean == (0.5,)
    assert manifest_preprocessing({**v1, "normalization": None}) is None
