"""The speed benchmark: prepared models compute the same thing; rows are consistent."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from s2dnas.bench.speed import (benchmark_speed, predict_speed, prepare_dynamic, prepare_static, profile_stages,
                                time_interleaved)
from s2dnas.cost.latency import LatencyCache, device_fingerprint
from s2dnas.cli.main import main
from s2dnas.dynamic import DynamicNet
from s2dnas.errors import ConfigError
from s2dnas.space import Space
from s2dnas.zoo import create_model


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    base = create_model("resnet20", num_classes=10, in_channels=1).eval()
    for m in base.modules():  # non-trivial BN so that folding is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    space = Space(base, input_shape=(1, 12, 12), num_stages=3)
    msnet = space.build(space.default_architecture()).eval()
    x = torch.randn(40, 1, 12, 12)
    with torch.no_grad():
        conf = torch.softmax(msnet(x)[0], 1).max(1).values
    t = float(conf.median())  # about half the inputs leave at stage 1
    return base, DynamicNet(msnet, [t, t]).eval(), space, x


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_prepared_models_compute_the_same(nets, channels_last, frozen, seed):
    base, dyn, _, x = nets
    xs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    freeze_on = x[:2] if frozen else None  # traced on 2 images, run on 40 and on 1
    fast_base = prepare_static(base, channels_last=channels_last, freeze_on=freeze_on)
    fast_dyn = prepare_dynamic(dyn, channels_last=channels_last, freeze_on=freeze_on)
    assert isinstance(fast_base, torch.jit.ScriptModule) == frozen
    assert all(isinstance(s, torch.jit.ScriptModule) == frozen for s in fast_dyn.msnet.stages)
    with torch.inference_mode():
        torch.testing.assert_close(fast_base(xs), base(x), rtol=1e-4, atol=1e-4)
        ref, out = dyn(x), fast_dyn(xs)
        assert torch.equal(out.exit_stage, ref.exit_stage)
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)
        for i in range(0, 40, 7):  # batch 1: the executor's own path, on the frozen stages too
            one = fast_dyn(xs[i:i + 1])
            assert torch.equal(one.exit_stage, ref.exit_stage[i:i + 1])
            torch.testing.assert_close(one.logits, ref.logits[i:i + 1], rtol=1e-4, atol=1e-4)


def test_benchmark_rows(nets, seed):
    base, dyn, space, x = nets
    rows = benchmark_speed(base, dyn, x, batch_sizes=(1, 16), repeats=1, warmup=0, base_macs=space.base_macs(),
                           max_batches=8, device=torch.device("cpu"))
    assert [r.batch_size for r in rows] == [1, 16]
    assert [(r.runtime, r.device) for r in rows] == [("pytorch", "cpu")] * 2
    assert [r.dynamic_path for r in rows] == ["executor"] * 2
    assert all(r.base_mode in ("eager", "frozen") and r.dynamic_mode in ("eager", "frozen") for r in rows)
    assert rows[0].num_images == 8 and rows[1].num_images == 40
    with torch.inference_mode():
        exits = dyn(x).exit_stage
    assert rows[1].macs_ratio == pytest.approx(space.base_macs() / (dyn.macs_of(exits) / 40))
    for r in rows:
        assert r.base_seconds > 0 and r.dynamic_seconds > 0
        assert r.measured_speedup == pytest.approx(r.base_seconds / r.dynamic_seconds)
        assert r.speedup_over_macs_ratio == pytest.approx(r.measured_speedup / r.macs_ratio)


def test_predicted_speed_weights_each_stage_by_the_inputs_that_reach_it(nets, tmp_path, seed):
    """With every timing in the cache set to 2 s, the prediction is exact: all inputs leaving at
    stage 1 cost what the base costs (1x); none leaving early cost the three stages (1/3x); and
    the second pass times nothing."""
    base, dyn, _, x = nets
    cache = LatencyCache(device_fingerprint("cpu"), directory=tmp_path)
    every = DynamicNet(dyn.msnet, [0.0, 0.0]).eval()  # confidence >= 0: everyone leaves at stage 1
    none = DynamicNet(dyn.msnet, [1.01, 1.01]).eval()  # max softmax <= 1: everyone runs all stages
    predict_speed(base, every, x, batch_sizes=(1, 8), cache=cache, repeats=1)
    assert cache.entries
    cache.entries = dict.fromkeys(cache.entries, 2.0)
    cache.misses = 0
    first = predict_speed(base, every, x, batch_sizes=(1, 8), cache=cache, repeats=1)
    last = predict_speed(base, none, x, batch_sizes=(1, 8), cache=cache, repeats=1)
    assert cache.misses == 0
    assert [p.exit_fractions for p in first] == [(1.0, 0.0, 0.0)] * 2
    assert [p.exit_fractions for p in last] == [(0.0, 0.0, 1.0)] * 2
    assert [(p.base_seconds_per_input, p.dynamic_seconds_per_input) for p in first] == [(2.0, 2.0), (0.25, 0.25)]
    assert [p.dynamic_seconds_per_input for p in last] == [6.0, 0.75]
    assert [p.to_dict()["predicted_speedup"] for p in last] == pytest.approx([1 / 3, 1 / 3])


def test_interleaved_timing_takes_the_passes_in_turn() -> None:
    """Warm-up passes first, then one pass of each entry per round, the order reversed every other
    round; each entry gets the median of its own passes."""
    import time

    calls = []
    x = torch.zeros(1)

    def run(name: str, pause: float):
        def fn(_x: torch.Tensor) -> None:
            calls.append(name)
            time.sleep(pause)
        return fn, [x, x]

    runs = {"a": run("a", 0.0), "b": run("b", 0.0), "slow": run("slow", 0.03)}
    medians = time_interleaved(runs, warmup=1, repeats=3)
    forward, backward = ["a", "a", "b", "b", "slow", "slow"], ["slow", "slow", "b", "b", "a", "a"]
    assert calls == forward + forward + backward + forward
    assert set(medians) == {"a", "b", "slow"}
    assert medians["slow"] >= 0.06  # two batches of 30 ms: its own passes, not another entry's
    assert medians["a"] < 0.06 and medians["b"] < 0.06


def test_interleaved_timing_runs_each_entry_on_its_own_thread_count() -> None:
    """Thread counts are part of a model's best way of running: each pass runs on its entry's count
    (set before the pass, not per call), and the caller's count is back afterwards."""
    seen: dict[str, set[int]] = {"one": set(), "two": set(), "mine": set()}
    x = torch.zeros(1)

    def run(name: str):
        return (lambda _x: seen[name].add(torch.get_num_threads())), [x, x]

    original = torch.get_num_threads()
    torch.set_num_threads(3)  # the caller's count, distinct from both entries'
    try:
        time_interleaved({"one": run("one"), "two": run("two"), "mine": run("mine")}, warmup=1, repeats=3,
                         threads={"one": 1, "two": 2})
        assert seen == {"one": {1}, "two": {2}, "mine": {3}}
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(original)


def test_benchmark_keeps_each_models_fastest_thread_count(nets, seed, monkeypatch):
    """Timings rigged so that the base is fastest on 2 threads and the dynamic network on 1: the rows
    keep exactly those, and the caller's thread count is unchanged afterwards."""
    import s2dnas.bench.speed as speed

    base, dyn, space, x = nets
    real = speed.time_interleaved

    def rigged(runs, *, warmup, repeats, threads=None):
        real(runs, warmup=0, repeats=1, threads=threads)  # really runs each entry once
        return {k: (1.0 if k[0] == "base" else 2.0) / k[2] for k in runs}  # both fastest on 2 threads
    monkeypatch.setattr(speed, "time_interleaved", rigged)
    before = torch.get_num_threads()
    rows = benchmark_speed(base, dyn, x, batch_sizes=(1,), repeats=1, warmup=0, base_macs=space.base_macs(),
                           max_batches=4, thread_options=(1, 2))
    assert [(r.base_threads, r.dynamic_threads) for r in rows] == [(2, 2)]
    monkeypatch.setattr(speed, "time_interleaved",
                        lambda runs, **kw: {k: (1.0 / k[2] if k[0] == "base" else float(k[2])) for k in runs})
    rows = benchmark_speed(base, dyn, x, batch_sizes=(1,), repeats=1, warmup=0, base_macs=space.base_macs(),
                           max_batches=4, thread_options=(1, 2))
    assert [(r.base_threads, r.dynamic_threads) for r in rows] == [(2, 1)]
    monkeypatch.setattr(speed, "time_interleaved", real)
    rows = benchmark_speed(base, dyn, x, batch_sizes=(1,), repeats=1, warmup=0, base_macs=space.base_macs(),
                           max_batches=4, thread_options=(1, 2), onnx=importlib.util.find_spec("onnxruntime") is not None)
    assert rows and all(r.base_threads in (1, 2) and r.dynamic_threads in (1, 2) for r in rows)
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="thread counts >= 1"):
        benchmark_speed(base, dyn, x, batch_sizes=(1,), repeats=1, warmup=0, base_macs=1, thread_options=(0, 2))


def test_predicted_speed_uses_the_images_each_batch_size_times(nets, seed):
    """With ``max_batches``, batch 1 times only the first images: the exits of those images, not of
    all, weight the stages (here the first four all leave at stage 1, the rest do not)."""
    base, dyn, _, x = nets
    with torch.inference_mode():
        exits = dyn(x).exit_stage
    ordered = x[torch.argsort(exits, stable=True)]  # the early leavers first
    assert int((exits == 0).sum()) >= 4 and int((exits > 0).sum()) > 0
    one, sixteen = predict_speed(base, dyn, ordered, batch_sizes=(1, 16), max_batches=4, repeats=1)
    rows = benchmark_speed(base, dyn, ordered, batch_sizes=(1, 16), repeats=1, warmup=0, base_macs=1,
                           max_batches=4)
    assert [(p.batch_size, p.num_images) for p in (one, sixteen)] == [(r.batch_size, r.num_images) for r in rows]
    assert (one.num_images, sixteen.num_images) == (4, 40)
    assert one.exit_fractions == (1.0, 0.0, 0.0)
    assert sixteen.exit_fractions[0] < 1.0 and sum(sixteen.exit_fractions) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="max_batches=0"):
        predict_speed(base, dyn, x, batch_sizes=(1,), max_batches=0)


def test_benchmark_onnx_rows(nets, seed):
    pytest.importorskip("onnxruntime")
    base, dyn, space, x = nets
    rows = benchmark_speed(base, dyn, x, batch_sizes=(1, 16), repeats=1, warmup=0, base_macs=space.base_macs(),
                           max_batches=4, onnx=True)
    assert [(r.runtime, r.batch_size) for r in rows] == [("pytorch", 1), ("pytorch", 16), ("onnxruntime", 1),
                                                         ("onnxruntime", 16)]
    for torch_row, ort_row in zip(rows[:2], rows[2:]):  # same images, same MAC ratio
        assert ort_row.num_images == torch_row.num_images
        assert ort_row.macs_ratio == torch_row.macs_ratio
        assert ort_row.base_seconds > 0 and ort_row.dynamic_seconds > 0 and ort_row.dynamic_path == "onnx"
        assert (ort_row.base_mode, ort_row.dynamic_mode) == ("onnx", "onnx")


@pytest.mark.parametrize("channels_last", [False, True, None])
def test_stage_profile_shares(nets, channels_last, seed):
    base, dyn, space, x = nets
    prof = profile_stages(base, dyn, x, base_macs=space.base_macs(), batch_size=16, repeats=1,
                          channels_last=channels_last)
    assert [p.stage for p in prof] == [0, 1, 2]
    assert [p.macs for p in prof] == dyn.stage_macs  # the executed counter, not a formula
    assert sum(p.macs_share for p in prof) == pytest.approx(sum(dyn.stage_macs) / space.base_macs())
    for p in prof:
        assert p.seconds > 0 and p.time_share > 0
        assert p.gmacs_per_second == pytest.approx(p.macs * 40 / p.seconds / 1e9)
    # one base time for every stage
    assert len({p.base_gmacs_per_second for p in prof}) == 1


def test_stage_profile_rejects_bad_options(nets, seed):
    from s2dnas import ConfigError

    base, dyn, space, x = nets
    with pytest.raises(ConfigError, match=r"batch_size=0"):
        profile_stages(base, dyn, x, base_macs=space.base_macs(), batch_size=0)
    with pytest.raises(ConfigError, match=r"0 images"):
        profile_stages(base, dyn, x[:0], base_macs=space.base_macs())


def test_bench_cli_help(capsys):
    with pytest.raises(SystemExit) as err:
        main(["bench", "--help"])
    assert err.value.code == 0
    assert "MAC ratio" in capsys.readouterr().out


def test_bench_cli_bad_batch_sizes(tmp_path, capsys):
    assert main(["bench", str(tmp_path), "--batch-sizes", "a,b"]) == 2
    assert "Expected --batch-sizes like 1,32,256" in capsys.readouterr().err


def test_bench_cli_end_to_end_with_profile(tmp_path, capsys, seed):
    import json

    from s2dnas.dynamic.io import build_model_spec
    from tests.cli._synthetic import write_band_dataset

    base = create_model("resnet20", num_classes=10, in_channels=1, pretrained=True).eval()
    space = Space(base, input_shape=(1, 28, 28), num_stages=3, model_name="resnet20")
    spec = build_model_spec(space, num_classes=10, model="resnet20", class_names=[str(i) for i in range(10)],
                            mean=[0.5], std=[0.5], base_accuracy=0.9)
    DynamicNet(space.build(space.default_architecture()).eval(), [0.9, 0.9], model_spec=spec).save(tmp_path / "m")
    data = write_band_dataset(tmp_path, n_train=200, n_test=64)
    out = tmp_path / "bench.json"
    code = main(["bench", str(tmp_path / "m"), "--data-dir", str(data), "--val-size", "50", "--num-images", "64",
                 "--batch-sizes", "1,32", "--max-batches", "8", "--repeats", "1", "--profile", "--predict",
                 "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "speed-up / MAC ratio" in text and "GMAC/s (base:" in text
    result = json.loads(out.read_text())
    runtimes = ["pytorch"] + (["onnxruntime"] if importlib.util.find_spec("onnxruntime") else [])
    assert [r["runtime"] for r in result["rows"]] == [rt for rt in runtimes for _ in (1, 32)]
    assert [r["batch_size"] for r in result["rows"]] == [1, 32] * len(runtimes)
    assert [r["num_images"] for r in result["rows"][:2]] == [8, 64]  # batch 1: 8 batches of one image
    assert [p["stage"] for p in result["stage_profile"]] == [0, 1, 2]
    assert [p["macs"] for p in result["stage_profile"]] == space.build(space.default_architecture()).stage_macs()
    # the cost model against each PyTorch row, on the images that row timed (8 at batch 1, not 64)
    preds, measured_rows = result["predictions"], result["rows"][:2]
    assert [p["batch_size"] for p in preds] == [1, 32]
    assert [p["num_images"] for p in preds] == [r["num_images"] for r in measured_rows] == [8, 64]
    for pred, row in zip(preds, measured_rows):
        assert sum(pred["exit_fractions"]) == pytest.approx(1.0)
        measured = row["dynamic_seconds"] / row["num_images"]
        assert pred["error"] == pytest.approx(pred["dynamic_seconds_per_input"] / measured - 1)
        assert pred["speedup_error"] == pytest.approx(pred["predicted_speedup"] / row["measured_speedup"] - 1)
    assert "error of the predicted dynamic time" in text and "error of the predicted speed-up" in text


def test_bench_says_in_plain_words_where_the_dynamic_network_is_slower() -> None:
    from s2dnas.bench.speed import SpeedRow
    from s2dnas.cli.bench import slower_than_base

    def row(batch_size: int, speedup: float, runtime: str) -> SpeedRow:
        return SpeedRow(batch_size=batch_size, num_images=64, base_seconds=1.0, dynamic_seconds=1.0 / speedup,
                        base_images_per_second=64.0, dynamic_images_per_second=64.0 * speedup,
                        measured_speedup=speedup, macs_ratio=4.0, speedup_over_macs_ratio=speedup / 4.0,
                        base_layout="nchw", dynamic_layout="nchw", runtime=runtime)

    lines = slower_than_base([row(1, 0.89, "pytorch"), row(256, 1.85, "pytorch"), row(1, 1.0, "onnxruntime"),
                              row(256, 0.80, "onnxruntime")])
    assert len(lines) == 2
    assert lines[0].startswith("At batch 1 in pytorch the dynamic network is slower than the base (0.89x)")
    assert "calibration.latency_batch=1 " in lines[0]
    assert lines[1].startswith("At batch 256 in onnxruntime the dynamic network is slower than the base (0.80x)")
    assert "PyTorch" in lines[1] and "calibration" not in lines[1]  # the latency search times PyTorch stages


def test_bench_compares_each_model_at_its_best_across_runtimes() -> None:
    """A runtime that runs the base fastest and another that runs the dynamic network fastest: the
    speed-up a user gets is between those two, not within one runtime."""
    from s2dnas.bench.speed import SpeedRow
    from s2dnas.cli.bench import best_across_runtimes

    def row(batch_size: int, base: float, dynamic: float, runtime: str) -> SpeedRow:
        return SpeedRow(batch_size=batch_size, num_images=64, base_seconds=64 / base, dynamic_seconds=64 / dynamic,
                        base_images_per_second=base, dynamic_images_per_second=dynamic,
                        measured_speedup=dynamic / base, macs_ratio=4.0, speedup_over_macs_ratio=dynamic / base / 4,
                        base_layout="nchw", dynamic_layout="nchw", runtime=runtime)

    best = best_across_runtimes([row(1, 1269, 1903, "pytorch"), row(1, 4069, 2649, "onnxruntime"),
                                 row(256, 4037, 14410, "pytorch"), row(256, 6672, 6559, "onnxruntime")])
    assert [(b["batch_size"], b["base_runtime"], b["dynamic_runtime"]) for b in best] == [
        (1, "onnxruntime", "onnxruntime"), (256, "onnxruntime", "pytorch")]
    assert best[0]["speedup"] == pytest.approx(2649 / 4069) and best[1]["speedup"] == pytest.approx(14410 / 6672)

