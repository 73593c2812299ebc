"""The latency cost model: frozen stages, cache keyed by machine, batch, layout and mode; prediction arithmetic."""
from __future__ import annotations

import json

import pytest
import torch

from s2dnas.cost import latency
from s2dnas.cost.latency import (LatencyCache, device_fingerprint, expected_latency, measure_model, measure_stages,
                                 stage_cost_vector, stage_fingerprint)
from s2dnas.dynamic import DynamicNet
from s2dnas.errors import ConfigError




def _measure(msnet, cache, batch_size=2):
    return measure_stages(msnet, batch_size=batch_size, channels_last=False, cache=cache, repeats=1, warmup=0)


def test_same_key_is_a_hit_and_survives_a_new_process(msnet, tmp_path, seed):
    fp = device_fingerprint("cpu")
    cache = LatencyCache(fp, directory=tmp_path)
    first = _measure(msnet, cache)
    assert first.cached == (False, False, False)
    assert cache.path.exists()
    data = json.loads(cache.path.read_text())  # plain JSON, no pickle
    assert data["fingerprint"] == fp and len(data["entries"]) == 3
    again = LatencyCache(fp, directory=tmp_path)  # a later run reads the file
    second = _measure(msnet, again)
    assert second.cached == (True, True, True)
    assert second.seconds == first.seconds
    assert (again.hits, again.misses) == (3, 0)


def test_other_batch_size_or_layout_is_a_miss(msnet, tmp_path, seed):
    cache = LatencyCache(device_fingerprint("cpu"), directory=tmp_path)
    _measure(msnet, cache, batch_size=2)
    assert _measure(msnet, cache, batch_size=3).cached == (False, False, False)
    cl = measure_stages(msnet, batch_size=2, channels_last=True, cache=cache, repeats=1, warmup=0)
    assert cl.cached == (False, False, False) and cl.channels_last
    assert len(cache.entries) == 9


def test_other_threads_or_version_is_another_file(msnet, tmp_path, seed):
    fp = device_fingerprint("cpu")
    cache = LatencyCache(fp, directory=tmp_path)
    _measure(msnet, cache)
    assert device_fingerprint("cpu", threads=fp["threads"] + 1)["threads"] == fp["threads"] + 1
    for other in (device_fingerprint("cpu", threads=fp["threads"] + 1), {**fp, "torch": "0.0.1"},
                  {**fp, "cpu": "another CPU"}, {**fp, "timing": latency.TIMING_VERSION - 1}):
        c = LatencyCache(other, directory=tmp_path)
        assert c.path != cache.path and c.entries == {}
    # measuring with a cache made for other threads than the ones in use is refused
    with pytest.raises(ConfigError, match="latency cache for this machine"):
        _measure(msnet, LatencyCache(device_fingerprint("cpu", threads=fp["threads"] + 1), directory=tmp_path))
    torch.set_num_threads(2)  # the same cache file is not used once the thread count changes
    assert LatencyCache(device_fingerprint("cpu"), directory=tmp_path).path != cache.path


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 1, "fingerprint": {}, "entries": {}}),
                                     json.dumps({"format": 99}), "__PICKLE__"])
def test_corrupt_or_foreign_file_is_set_aside_and_rebuilt(msnet, tmp_path, content, seed):
    fp = device_fingerprint("cpu")
    path = LatencyCache(fp, directory=tmp_path).path
    if content == "__PICKLE__":
        import pickle

        path.write_bytes(pickle.dumps({"format": 1, "fingerprint": fp, "entries": {}}))
    else:
        path.write_text(content)
    with pytest.warns(UserWarning, match="Latency cache .* moved it to .*corrupt"):
        cache = LatencyCache(fp, directory=tmp_path)
    assert cache.entries == {}
    assert path.with_suffix(".corrupt").exists()
    _measure(msnet, cache)
    assert json.loads(path.read_text())["fingerprint"] == fp  # rebuilt


def test_bad_entry_values_are_refused(tmp_path):
    fp = device_fingerprint("cpu")
    path = LatencyCache(fp, directory=tmp_path).path
    path.write_text(json.dumps({"format": 1, "fingerprint": fp, "entries": {"k": -1.0}}))
    with pytest.warns(UserWarning, match="positive seconds"):
        assert LatencyCache(fp, directory=tmp_path).entries == {}


def test_stage_fingerprint_is_structural(space, msnet):
    x = torch.zeros(1, 1, 8, 8)
    other_weights = space.build(space.default_architecture()).eval()
    with torch.no_grad():
        for p in other_weights.parameters():
            p.add_(1.0)
    assert stage_fingerprint(other_weights.stages[0], [x]) == stage_fingerprint(msnet.stages[0], [x])
    wider = space.build(space.architecture(splits=[(4, 2, 2)], concat=[0, 0])).eval()
    assert stage_fingerprint(wider.stages[0], [x]) != stage_fingerprint(msnet.stages[0], [x])
    assert stage_fingerprint(msnet.stages[0], [torch.zeros(1, 1, 9, 9)]) != stage_fingerprint(msnet.stages[0], [x])


def test_expected_latency_equals_per_input_sum():
    # 10 inputs leaving at known stages: the time of each input is the sum of the stages it ran
    stage_seconds = [0.001, 0.003, 0.010]
    exits = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]
    per_input = [sum(stage_seconds[: e + 1]) for e in exits]
    fractions = [exits.count(s) / len(exits) for s in range(3)]
    assert expected_latency(stage_seconds=stage_seconds, exit_fractions=fractions) == pytest.approx(
        sum(per_input) / len(exits))
    # routing overhead is paid by every input that reaches the stage
    assert expected_latency(stage_seconds=stage_seconds, exit_fractions=fractions,
                            overhead_seconds=[0.5, 0.0, 0.0]) == pytest.approx(sum(per_input) / 10 + 0.5)


def test_expected_latency_with_macs_as_cost_matches_executed_macs(msnet, seed):
    # the same arithmetic as the executor's exact MAC count when seconds are replaced by MACs
    x = torch.randn(40, 1, 8, 8)
    with torch.no_grad():
        conf = torch.softmax(msnet(x)[0], 1).max(1).values
    t = float(conf.median())
    net = DynamicNet(msnet, [t, t]).eval()
    exits = net(x).exit_stage
    fractions = torch.bincount(exits, minlength=3).float() / len(x)
    assert expected_latency(stage_seconds=net.stage_macs, exit_fractions=fractions.tolist()) == pytest.approx(
        net.macs_of(exits) / len(x))


def test_stage_cost_vector_is_seconds_per_input(msnet, seed):
    lat = measure_stages(msnet, batch_size=4, channels_last=False, repeats=1, warmup=0)
    assert stage_cost_vector(lat) == pytest.approx([s / 4 for s in lat.seconds])
    assert lat.cached == (False, False, False) and all(s > 0 for s in lat.seconds)


@pytest.mark.parametrize("kwargs, match", [
    ({"stage_seconds": [1.0, 2.0], "exit_fractions": [0.5, 0.25, 0.25]}, "one latency"),
    ({"stage_seconds": [1.0, 2.0], "exit_fractions": [0.5, 0.4]}, "sum to 1"),
    ({"stage_seconds": [1.0, -2.0], "exit_fractions": [0.5, 0.5]}, "finite latencies"),
])
def test_expected_latency_rejects_bad_input(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        expected_latency(**kwargs)


def test_measure_rejects_bad_options(msnet):
    with pytest.raises(ConfigError, match="batch_size=0"):
        measure_stages(msnet, batch_size=0)


def test_stages_are_timed_frozen_as_bench_deploys_them(msnet, tmp_path, monkeypatch, seed):
    timed = []

    def fake_time_call(fn, **kwargs):
        timed.extend(c.cell_contents for c in fn.__closure__ or ())
        return 1e-3

    monkeypatch.setattr(latency, "time_call", fake_time_call)
    _measure(msnet, LatencyCache(device_fingerprint("cpu"), directory=tmp_path))
    runners = [c for c in timed if isinstance(c, torch.nn.Module)]
    assert len(runners) == 3 and all(isinstance(r, torch.jit.ScriptModule) for r in runners)


def test_cache_keys_name_the_frozen_mode_and_eager_entries_are_not_reused(msnet, tmp_path, seed):
    fp = device_fingerprint("cpu")
    cache = LatencyCache(fp, directory=tmp_path)
    _measure(msnet, cache)
    assert len(cache.entries) == 3 and all(k.endswith("|nchw|frozen") for k in cache.entries)
    old = LatencyCache(fp, directory=tmp_path / "old")  # entries as the eager cost model wrote them
    for key in cache.entries:
        old.put(key.removesuffix("|frozen"), 123.0)
    again = _measure(msnet, old)
    assert again.cached == (False, False, False) and 123.0 not in again.seconds
    base = measure_model(msnet.stages[0], input_shape=msnet.input_shape, batch_size=2, channels_last=False,
                         cache=old, repeats=1, warmup=0)
    assert base > 0 and any(k.startswith("model|") and k.endswith("|nchw|frozen") for k in old.entries)


def _measure_model(model, cache, shape=(1, 8, 8)):
    return measure_model(model, input_shape=shape, batch_size=2, channels_last=False, cache=cache, repeats=1,
                         warmup=0)


def test_a_cached_model_is_not_frozen_again(msnet, tmp_path, monkeypatch, seed):
    """measure_model looks its key up before tracing: a hit costs no freeze (patched here to fail)."""
    cache = LatencyCache(device_fingerprint("cpu"), directory=tmp_path)
    first = _measure_model(msnet.stages[0], cache, msnet.input_shape)
    assert cache.misses == 1 and len(cache.entries) == 1

    def no_freeze(module, args):
        raise AssertionError("froze a model whose timing is cached")

    monkeypatch.setattr(latency, "freeze", no_freeze)
    again = LatencyCache(device_fingerprint("cpu"), directory=tmp_path)  # a later run reads the file
    assert _measure_model(msnet.stages[0], again, msnet.input_shape) == first
    assert (again.hits, again.misses) == (1, 0)


class _DictOut(torch.nn.Module):
    """Returns a dict holding a non-tensor: torch.jit.trace refuses it (a RuntimeError)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return {"logits": self.conv(x), "note": "not a tensor"}


def test_an_untraceable_model_is_timed_eager_and_its_entry_reused(tmp_path, monkeypatch, seed):
    cache = LatencyCache(device_fingerprint("cpu"), directory=tmp_path)
    first = _measure_model(_DictOut(), cache)
    assert first > 0 and len(cache.entries) == 1 and next(iter(cache.entries)).endswith("|nchw|eager")
    monkeypatch.setattr(latency, "freeze", lambda module, args: pytest.fail("traced again"))
    assert _measure_model(_DictOut(), cache) == first  # the eager entry: no second (failing) trace


def test_other_errors_while_freezing_are_not_hidden_as_eager(msnet, tmp_path, monkeypatch, seed):
    def broken(module, args):
        raise OSError("disk full")

    monkeypatch.setattr(latency, "freeze", broken)
    with pytest.raises(OSError, match="disk full"):
        _measure_model(msnet.stages[0], LatencyCache(device_fingerprint("cpu"), directory=tmp_path),
                       msnet.input_shape)


def test_short_calls_are_timed_back_to_back_and_long_ones_once_per_sample() -> None:
    """A 1 ms call timed alone is mostly noise: time_call repeats it until a sample lasts
    min_seconds and reports the time of one call; a call longer than that runs once per sample."""
    import time

    calls = []

    def short() -> None:
        calls.append(1)
        time.sleep(0.001)

    t = latency.time_call(short, warmup=3, repeats=3, min_seconds=0.02)
    per_sample = (len(calls) - 4) / 3  # 3 warm-up calls + 1 more, the fastest sizes the samples
    assert per_sample == int(per_sample) and 2 <= per_sample <= 20  # ceil(0.02 / (>= 1 ms))
    assert 0.001 <= t < 0.02  # one call's time, not a sample's
    calls.clear()

    def long() -> None:
        calls.append(1)
        time.sleep(0.03)

    t = latency.time_call(long, warmup=1, repeats=3, min_seconds=0.02)
    assert len(calls) == 1 + 1 + 3 and t >= 0.03

