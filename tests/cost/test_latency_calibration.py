"""Latency as the calibration's cost: a synthetic case whose optimum differs between MACs and
latency (solved by hand below), the latency cost hook, and the ExitPolicy record."""
from __future__ import annotations

import math

import pytest
import torch

from s2dnas.cost import macs_stage_cost
from s2dnas.cost.latency import LatencyCache, LatencyStageCost, device_fingerprint, measure_model, measure_stages
from s2dnas.dynamic import DynamicNet
from s2dnas.dynamic.calibrate import Calibration, StageLogits, calibrate
from s2dnas.dynamic.executor import route
from s2dnas.errors import CalibrationError, ConfigError

# Four inputs, label 0, two classes. (confidence, right?) per stage:
#            stage 0       stage 1       stage 2
#   z:    0.95 right    0.95 right    0.99 right
#   u:    0.90 wrong    0.95 right    0.99 right
#   v:    0.60 wrong    0.80 right    0.99 right
#   w:    0.60 wrong    0.80 wrong    0.99 right
# Target: 3 of 4 correct (one error allowed). The feasible outcomes with one error:
#   X: z, u leave at stage 0 (u wrong), v, w run to stage 2: cost 4 c0 + 2 c1 + 2 c2
#   Y: z leaves at stage 0, u, v, w at stage 1 (w wrong):    cost 4 c0 + 3 c1
# (v and w share their stage-1 confidence, so they leave together; every error-free setting
# costs more than Y.) X wins iff 2 c2 < c1: a thin stage 1 that is slow per MAC flips the choice.
CONF = [[0.95, 0.90, 0.60, 0.60], [0.95, 0.95, 0.80, 0.80], [0.99, 0.99, 0.99, 0.99]]
RIGHT = [[True, False, False, False], [True, True, True, False], [True, True, True, True]]
MACS = [1, 2, 10]     # stage 1 is thin ...
LATENCY = [5.0, 8.0, 1.0]  # ... and slow per MAC (ms per input)
EXITS_X = [0, 0, 2, 2]
EXITS_Y = [0, 1, 1, 1]


def _logits() -> StageLogits:
    rows = []
    for conf, right in zip(CONF, RIGHT):
        rows.append([[math.log(c), math.log(1 - c)] if ok else [math.log(1 - c), math.log(c)]
                     for c, ok in zip(conf, right)])
    return StageLogits(logits=torch.tensor(rows, dtype=torch.float32), labels=torch.zeros(4, dtype=torch.int64))


def _exits(cal: Calibration) -> list[int]:
    conf = torch.tensor(CONF[:-1], dtype=torch.float32)
    return route(conf, torch.tensor([cal.thresholds], dtype=torch.float32))[0].tolist()


def test_macs_and_latency_choose_different_known_optima() -> None:
    logits = _logits()
    by_macs = calibrate(logits, stage_macs=MACS, target_accuracy=0.75)
    by_latency = calibrate(logits, stage_macs=MACS, stage_cost=(LATENCY, "ms"), target_accuracy=0.75)
    assert _exits(by_macs) == EXITS_Y and by_macs.expected_macs == (4 * 1 + 3 * 2) / 4
    assert _exits(by_latency) == EXITS_X
    assert by_latency.expected_cost == pytest.approx((4 * 5 + 2 * 8 + 2 * 1) / 4)
    assert by_latency.expected_macs == (4 * 1 + 2 * 2 + 2 * 10) / 4  # MACs still reported
    assert by_latency.accuracy == by_macs.accuracy == 0.75 and by_latency.feasible
    # the MAC optimum is worse in latency, and the other way round
    assert (4 * 5 + 3 * 8) / 4 > by_latency.expected_cost
    assert by_macs.expected_cost == by_macs.expected_macs


def test_latency_budget_mode_buys_the_best_accuracy_within_the_budget() -> None:
    logits = _logits()
    cal = calibrate(logits, stage_macs=MACS, stage_cost=(LATENCY, "ms"), cost_budget=9.5)
    assert _exits(cal) == EXITS_X and cal.accuracy == 0.75 and cal.feasible and cal.cost_budget == 9.5
    # below X's 9.5 ms: z, u at stage 0 and v, w at stage 1 (9 ms, 2 right) beats everyone at
    # stage 0 (5 ms, 1 right); every setting with 3 or 4 right costs 9.5 ms or more
    tight = calibrate(logits, stage_macs=MACS, stage_cost=(LATENCY, "ms"), cost_budget=9.4)
    assert _exits(tight) == [0, 0, 1, 1] and tight.accuracy == 0.5 and tight.expected_cost == 9.0


def test_policy_records_the_minimised_cost_and_keeps_the_macs() -> None:
    cal = calibrate(_logits(), stage_macs=MACS, stage_cost=(LATENCY, "ms"), target_accuracy=0.75)
    policy = cal.policy
    assert policy.stage_cost == tuple(LATENCY) and policy.cost_unit == "ms"
    back = Calibration.from_policy(policy)
    assert back == cal
    assert back.stage_macs == tuple(MACS) and back.stage_cost == tuple(LATENCY)
    by_macs = calibrate(_logits(), stage_macs=MACS, target_accuracy=0.75)
    assert by_macs.policy.stage_cost == tuple(MACS) and by_macs.policy.cost_unit == "macs"
    assert Calibration.from_policy(by_macs.policy) == by_macs


@pytest.mark.parametrize("kwargs, match", [
    ({"stage_cost": ([1.0, 2.0], "ms"), "target_accuracy": 0.5}, r"Expected 3 per-stage costs"),
    ({"stage_cost": ([1.0, -2.0, 1.0], "ms"), "target_accuracy": 0.5}, r"finite and >= 0"),
    ({"stage_cost": ([1.0, 2.0, 3.0], ""), "target_accuracy": 0.5}, r"non-empty string"),
    ({"stage_cost": [1.0, 2.0, 3.0], "target_accuracy": 0.5}, r"Expected `stage_cost` to be \(costs, unit\)"),
    ({"stage_cost": ([1.0, 2.0, 3.0], "ms"), "macs_budget": 5.0}, r"Expected `cost_budget` \(in ms per input\)"),
    ({"cost_budget": 5.0}, r"Expected `stage_cost=\(costs, unit\)` with `cost_budget`"),
    ({"stage_cost": ([1.0, 2.0, 3.0], "ms"), "cost_budget": -1.0}, r"`cost_budget` > 0"),
])
def test_cost_arguments_are_checked(kwargs, match) -> None:
    with pytest.raises(CalibrationError, match=match):
        calibrate(_logits(), stage_macs=MACS, **kwargs)


# -- the hooks -------------------------------------------------------------------------------------


def test_macs_hook_is_the_analytic_macs(msnet) -> None:
    costs, unit = macs_stage_cost(msnet)
    assert unit == "macs" and costs == tuple(float(m) for m in msnet.analytic_macs)
    assert [int(c) for c in costs] == msnet.stage_macs()


def test_latency_hook_is_cached_ms_per_input_at_the_deployment_batch(msnet, space, tmp_path) -> None:
    hook = LatencyStageCost(batch_size=2, cache_dir=tmp_path, repeats=1, warmup=0)
    costs, unit = hook(msnet)
    assert unit == "ms" and len(costs) == msnet.num_stages and all(c > 0 for c in costs)
    # the same numbers a later run reads back from the cache, in seconds per batch of 2
    cache = LatencyCache(device_fingerprint("cpu"), directory=tmp_path)
    again = measure_stages(msnet, batch_size=2, cache=cache, repeats=1, warmup=0)
    assert again.cached == (True,) * msnet.num_stages and cache.misses == 0
    assert costs == tuple(1e3 * t / 2 for t in again.seconds)
    assert hook(msnet) == (costs, "ms")  # timed once
    base_ms = hook.model_cost(space.model, input_shape=(1, 8, 8))
    assert base_ms > 0
    cache = LatencyCache(device_fingerprint("cpu"), directory=tmp_path)
    assert base_ms == 1e3 * measure_model(space.model, input_shape=(1, 8, 8), batch_size=2, cache=cache) / 2
    assert cache.misses == 0


def test_latency_hook_feeds_the_executor_a_policy_it_runs(msnet, tmp_path) -> None:
    hook = LatencyStageCost(batch_size=1, cache_dir=tmp_path, repeats=1, warmup=0)
    torch.manual_seed(1)
    x = torch.randn(16, 1, 8, 8)
    labels = msnet(x)[-1].argmax(1)
    logits = StageLogits(logits=torch.stack(msnet(x)).detach(), labels=labels)
    cal = calibrate(logits, stage_macs=msnet.analytic_macs, stage_cost=hook(msnet), target_accuracy=0.9)
    net = DynamicNet(msnet, cal.policy)
    assert net.stage_macs == msnet.analytic_macs  # ms are never taken for MACs
    assert net.policy.cost_unit == "ms"


def test_latency_hook_rejects_a_bad_batch() -> None:
    with pytest.raises(ConfigError, match=r"latency batch size to be an integer >= 1"):
        LatencyStageCost(batch_size=0)
