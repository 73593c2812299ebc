"""The batched executor equals the reference rule, stops early, and executes the MACs reported."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from s2dnas.cost import count_macs
from s2dnas.dynamic import (
    CONFIDENCE_MEASURES,
    DynamicNet,
    ExitPolicy,
    PolicyError,
    StageLogits,
    calibrate,
    confidence,
    evaluate_dynamic,
    reference_forward,
)
from s2dnas.errors import CalibrationError, ConfigError, DataError
from tests._models import INPUT_SHAPE, sharpen


def _count_stage_calls(msnet: nn.Module) -> tuple[list[list[int]], list]:
    """Record the batch size of every call of every stage."""
    calls: list[list[int]] = [[] for _ in msnet.stages]
    handles = [stage.register_forward_pre_hook(lambda mod, args, s=s: calls[s].append(args[0].shape[0]))
               for s, stage in enumerate(msnet.stages)]
    return calls, handles


def _random_thresholds(logits: list[torch.Tensor], measure: str, gen: torch.Generator) -> list[float]:
    """Thresholds drawn uniformly between the smallest and largest confidence of each early stage."""
    out = []
    for z in logits[:-1]:
        c = confidence(z, measure)
        lo, hi = float(c.min()), float(c.max())
        out.append(lo + (hi - lo) * float(torch.rand((), generator=gen)))
    return out


def _all_logits(msnet: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return msnet(x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("arch_seed", [0, 1, 2])
def test_executor_equals_reference_rule(space3, arch_seed: int, dtype: torch.dtype) -> None:
    """Same exit stage and class for every input, logits equal to float tolerance.

    In float64 the logits must agree to 1e-5 absolute. In float32 a conv on a sub-batch may take
    another kernel than on the whole batch, and over 20 layers that reaches ~2e-5 on logits of
    size ~10, so the float32 check allows a relative 1e-4 as well.
    """
    msnet = sharpen(space3.build(space3.sample(torch.Generator().manual_seed(arch_seed))), seed=arch_seed)
    msnet.to(dtype)
    x = torch.randn(64, *INPUT_SHAPE, generator=torch.Generator().manual_seed(10 + arch_seed)).to(dtype)
    rtol = 0.0 if dtype == torch.float64 else 1e-4
    logits = _all_logits(msnet, x)
    gen = torch.Generator().manual_seed(arch_seed)
    seen_stages: set[int] = set()
    for measure in CONFIDENCE_MEASURES:
        for _ in range(4):
            thresholds = _random_thresholds(logits, measure, gen)
            policy = ExitPolicy(thresholds=thresholds, confidence=measure)
            net = DynamicNet(msnet, policy)
            out = net(x)
            ref = reference_forward(msnet, x, policy)
            assert out.exit_stage.dtype == torch.int64 and out.exit_stage.shape == (len(x),)
            assert torch.equal(out.exit_stage, ref.exit_stage)
            assert torch.equal(out.logits.argmax(1), ref.logits.argmax(1))
            torch.testing.assert_close(out.logits, ref.logits, rtol=rtol, atol=1e-5)
            seen_stages.update(out.exit_stage.tolist())
    assert seen_stages == {0, 1, 2}, "the random thresholds should exercise every exit"


def test_threshold_zero_exits_everything_at_stage_one(msnet3, data3) -> None:
    x, _ = data3
    net = DynamicNet(msnet3, [0.0, 0.0])
    calls, handles = _count_stage_calls(msnet3)
    out = net(x)
    for h in handles:
        h.remove()
    assert bool((out.exit_stage == 0).all())
    assert calls == [[len(x)], [], []], "an empty remainder must stop before stage 2"
    with torch.no_grad():
        torch.testing.assert_close(out.logits, msnet3(x)[0], rtol=0, atol=1e-5)


def test_thresholds_above_one_equal_the_last_exit(msnet3, data3) -> None:
    x, _ = data3
    net = DynamicNet(msnet3, [1.5, 7.0])
    out = net(x)
    assert bool((out.exit_stage == 2).all())
    with torch.no_grad():
        torch.testing.assert_close(out.logits, msnet3(x)[-1], rtol=0, atol=1e-5)


def test_only_remaining_inputs_run_later_stages_and_empty_remainder_stops(msnet3, data3) -> None:
    x, _ = data3
    thresholds = _random_thresholds(_all_logits(msnet3, x), "max_softmax", torch.Generator().manual_seed(5))
    calls, handles = _count_stage_calls(msnet3)
    out = DynamicNet(msnet3, thresholds)(x)
    counts = torch.bincount(out.exit_stage, minlength=3).tolist()
    assert calls == [[len(x)], [len(x) - counts[0]], [counts[2]]]
    calls[:] = [[], [], []]
    DynamicNet(msnet3, [3.0, 0.0])(x)  # everyone leaves at stage 2: stage 3 never runs
    for h in handles:
        h.remove()
    assert calls == [[len(x)], [len(x)], []]


def test_empty_batch_and_inference_mode(msnet3) -> None:
    net = DynamicNet(msnet3, [0.5, 0.5])
    assert not net.training
    out = net(torch.zeros(0, *INPUT_SHAPE))
    assert out.logits.shape == (0, 10) and out.exit_stage.shape == (0,)
    out = net(torch.randn(4, *INPUT_SHAPE))
    assert out.logits.is_inference() and not out.logits.requires_grad


@pytest.mark.parametrize("bad, match", [
    ([0.5], "Expected 2 thresholds"),
    ([0.5, 0.5, 0.5], "Expected 2 thresholds"),
    ([float("nan"), 0.5], "finite number >= 0"),
    ([0.5, -0.1], "finite number >= 0"),
    ([math.inf, 0.5], "finite number >= 0"),
    (["high", 0.5], "to be numbers"),
    ([True, 0.5], "booleans are not thresholds"),
])
def test_invalid_thresholds_raise(msnet3, bad, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        DynamicNet(msnet3, bad)
    net = DynamicNet(msnet3, [0.5, 0.5])
    with pytest.raises(CalibrationError, match=match):
        net.set_thresholds(bad)


def test_unknown_confidence_measure(msnet3) -> None:
    with pytest.raises(PolicyError, match="max_softmax, entropy, margin"):  # no invalid policy can exist
        ExitPolicy(thresholds=(0.5, 0.5), confidence="energy")
    with pytest.raises(ConfigError, match="max_softmax, entropy, margin"):  # as an s2dnas error at the boundary
        calibrate(StageLogits(logits=torch.zeros(3, 2, 10), labels=torch.zeros(2, dtype=torch.int64)),
                  stage_macs=[1, 2, 3], target_accuracy=0.5, confidence="energy")


@pytest.mark.parametrize("measure", CONFIDENCE_MEASURES)
def test_executed_macs_equal_the_expected_macs_reported(msnet3, data3, measure: str) -> None:
    """MACs counted while the DynamicNet runs == expected MACs x N from calibrate and evaluate_dynamic."""
    x, y = data3
    net = DynamicNet(msnet3, ExitPolicy(thresholds=(0.0, 0.0), confidence=measure))
    stage_macs = net.stage_macs
    assert stage_macs == msnet3.analytic_macs
    with torch.no_grad():
        stage_logits = StageLogits(logits=torch.stack(msnet3(x)), labels=y)
    # A budget halfway between "all leave at stage 1" and "all run every stage" forces early exits.
    budget = (stage_macs[0] + sum(stage_macs)) / 2
    cal = calibrate(stage_logits, stage_macs=stage_macs, macs_budget=budget, confidence=measure)
    net.policy = cal.policy
    out = net(x)
    assert len(set(out.exit_stage.tolist())) >= 2, "the chosen thresholds should use several exits"
    executed = count_macs(net, x)  # counted by execution, around the dynamic forward
    report = evaluate_dynamic(stage_logits, cal.policy, stage_macs=stage_macs)
    assert executed == net.macs_of(out.exit_stage) == report["total_macs"]
    assert report["total_macs"] == round(cal.expected_macs * len(x))
    assert report["exit_counts"] == torch.bincount(out.exit_stage, minlength=3).tolist()
    assert report["accuracy"] == cal.accuracy == (out.logits.argmax(1) == y).double().mean().item()


def test_wrong_input_is_a_typed_error_and_float64_is_cast(msnet3, data3) -> None:
    x, _ = data3
    net = DynamicNet(msnet3, [0.5, 0.5])
    with pytest.raises(DataError, match=r"shape \(B, 1, 8, 8\).*got \(4, 1, 16, 16\)"):
        net(torch.zeros(4, 1, 16, 16))
    with pytest.raises(DataError, match=r"got \(1, 8, 8\)"):
        net(torch.zeros(1, 8, 8))  # a single image without the batch axis
    with pytest.raises(DataError, match="float images"):
        net(torch.zeros(4, *INPUT_SHAPE, dtype=torch.uint8))
    out64 = net(x.double())
    out32 = net(x)
    assert torch.equal(out64.exit_stage, out32.exit_stage) and torch.equal(out64.logits, out32.logits)


@pytest.mark.parametrize("measure", CONFIDENCE_MEASURES)
def test_batch_of_one_takes_the_fast_path_with_the_general_paths_exits_and_logits(msnet3, data3, measure) -> None:
    x, _ = data3
    thresholds = _random_thresholds(_all_logits(msnet3, x[:60]), measure, torch.Generator().manual_seed(7))
    net = DynamicNet(msnet3, ExitPolicy(thresholds=thresholds, confidence=measure))
    calls, handles = _count_stage_calls(msnet3)
    seen = set()
    try:
        for i in range(60):
            one = x[i:i + 1]
            with torch.inference_mode():
                general = net._forward_batch(one)  # the gather/scatter path, forced at batch 1
            calls[:] = [[], [], []]
            fast = net(one)
            stage = int(fast.exit_stage)
            # the fast path ran stages 0..stage on the one input, nothing after
            assert calls == [[1] if s <= stage else [] for s in range(3)]
            assert fast.exit_stage.dtype == torch.int64 and fast.exit_stage.shape == (1,)
            assert torch.equal(fast.exit_stage, general.exit_stage)
            assert torch.equal(fast.logits, general.logits)
            seen.add(stage)
    finally:
        for h in handles:
            h.remove()
    assert seen == {0, 1, 2}  # every exit was exercised
    assert net(x[:1]).logits.is_inference()


def test_batch_of_one_compares_in_float32_like_the_general_path(msnet3, data3) -> None:
    x, _ = data3
    # a threshold a hair above the float32 confidence that rounds to it in float32: "leave", on the batch-1
    # path and on the general one (each against the confidence its own batch gives: a convolution over a
    # batch of 2 may round its last bit differently from one over a batch of 1, depending on the CPU)
    for batch in (1, 2):
        with torch.inference_mode():
            conf = confidence(msnet3(x[:batch])[0], "max_softmax")[0]
        t = float(conf) + 1e-12
        assert torch.tensor(t, dtype=torch.float32) == conf
        assert DynamicNet(msnet3, [t, 3.0])(x[:batch]).exit_stage.tolist()[0] == 0
    assert DynamicNet(msnet3, [0.0, 0.0])(x[:1]).exit_stage.tolist() == [0]
    assert DynamicNet(msnet3, [3.0, 3.0])(x[:1]).exit_stage.tolist() == [2]
