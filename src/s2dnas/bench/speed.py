"""Measured wall-clock speed of the static base model and the DynamicNet, side by side.

Both run in the same process on the same images, with the same threads, under inference mode,
and both get the same optimisations (batch norm folded into convolutions; the fastest of NCHW or
channels-last, each eager or as a frozen TorchScript trace, for each model), so the speed-up is
not measured against a handicapped baseline.

Why frozen TorchScript (docs/design.md, "Batch 1 and the bench"): at batch 1 on a CPU eager
PyTorch runs every small convolution through ``aten::_slow_conv2d_forward``; a frozen trace
(``torch.jit.freeze``) ran the same networks 20-35% faster on this machine, the dynamic network
more than the base, where channels-last, oneDNN conversion (``optimize_for_inference``) and
``torch.compile`` did not help. The bench keeps whichever is fastest for each model.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from s2dnas.cost.latency import LatencyCache, fold_bn, freeze, measure_model, predict_latency
from s2dnas.dynamic.executor import DynamicNet
from s2dnas.errors import ConfigError

__all__ = ["SpeedRow", "StageProfile", "prepare_static", "prepare_dynamic", "prepare_variants", "check_thread_options",
           "in_layout", "time_passes", "benchmark_speed", "time_interleaved", "time_fastest", "profile_stages", "LatencyPrediction",
           "predict_speed", "MODES"]

#: How a model runs in the PyTorch rows: ``eager``, or ``frozen`` (a ``torch.jit.freeze``-d trace).
MODES = ("eager", "frozen")

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedRow:
    """One batch size: median seconds per pass over the images, images per second, ratios.

    ``runtime`` is ``pytorch`` or ``onnxruntime``; ``dynamic_path`` is ``executor`` (the
    DynamicNet, whose batch-1 path skips gathering) or ``onnx``; ``base_mode`` and
    ``dynamic_mode`` say how each model ran at its best (:data:`MODES`, or ``compiled``/``onnx``),
    ``base_threads`` and ``dynamic_threads`` with how many intra-op threads (0: not recorded).
    """

    batch_size: int
    num_images: int
    base_seconds: float
    dynamic_seconds: float
    base_images_per_second: float
    dynamic_images_per_second: float
    measured_speedup: float
    macs_ratio: float
    speedup_over_macs_ratio: float
    base_layout: str
    dynamic_layout: str
    compiled: bool = False
    runtime: str = "pytorch"
    dynamic_path: str = "executor"
    device: str = "cpu"
    base_mode: str = "eager"
    dynamic_mode: str = "eager"
    base_threads: int = 0
    dynamic_threads: int = 0

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain-data form."""
        return asdict(self)


@dataclass(frozen=True)
class StageProfile:
    """Where the time goes: one stage run on a whole batch, against the base model.

    ``macs_share`` and ``time_share`` are the stage's MACs and seconds over the base model's.
    ``time_share / macs_share`` is 1 when the stage runs its MACs as fast as the base does and
    above 1 when slower (``gmacs_per_second`` below ``base_gmacs_per_second``): thin stages on a
    CPU are memory-bound and score well above 1.
    """

    stage: int
    macs: int
    seconds: float
    macs_share: float
    time_share: float
    gmacs_per_second: float
    base_gmacs_per_second: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain-data form."""
        return asdict(self)


@dataclass(frozen=True)
class LatencyPrediction:
    """What the latency cost model predicts for one batch size, before anything is run dynamically.

    ``exit_fractions`` are those of the DynamicNet on the ``num_images`` images that
    :func:`benchmark_speed` times at this batch size (the first batches, at most ``max_batches``);
    the base's seconds per input come from :func:`~s2dnas.cost.latency.measure_model`, the dynamic
    network's from :func:`~s2dnas.cost.latency.predict_latency` (each stage timed alone at the batch it sees,
    weighted by the share of inputs that reach it; routing not included).
    """

    batch_size: int
    num_images: int
    exit_fractions: tuple[float, ...]
    base_seconds_per_input: float
    dynamic_seconds_per_input: float

    @property
    def predicted_speedup(self) -> float:
        """Predicted base seconds over predicted dynamic seconds per input."""
        return self.base_seconds_per_input / self.dynamic_seconds_per_input

    def to_dict(self) -> dict[str, object]:
        """Plain-data form, with the predicted speed-up."""
        return {**asdict(self), "predicted_speedup": self.predicted_speedup}


_fold_bn = fold_bn


def _compile(module: nn.Module) -> nn.Module:
    # dynamic shapes: later stages see whatever batch is left after the exits
    return torch.compile(module, dynamic=True)


def prepare_static(model: nn.Module, *, channels_last: bool, compile: bool = False,
                   freeze_on: torch.Tensor | None = None) -> nn.Module:
    """An inference copy of a static model: BN folded, in the given memory format, optionally
    compiled with ``torch.compile`` or (``freeze_on``: an example batch) traced and frozen."""
    out = _fold_bn(model.eval())
    out = out.to(memory_format=torch.channels_last) if channels_last else out
    if freeze_on is not None:
        example = freeze_on.contiguous(memory_format=torch.channels_last) if channels_last else freeze_on
        out = freeze(out.to(freeze_on.device), (example,))
    return _compile(out) if compile else out


def prepare_dynamic(net: DynamicNet, *, channels_last: bool, compile: bool = False,
                    freeze_on: torch.Tensor | None = None) -> DynamicNet:
    """An inference copy of a DynamicNet: every stage with BN folded, in the given memory format,
    optionally compiled, or (``freeze_on``: an example batch) traced and frozen, stage by stage
    (the routing stays eager)."""
    out = copy.deepcopy(net).eval()
    for s, stage in enumerate(out.msnet.stages):
        out.msnet.stages[s] = _fold_bn(stage)
    out = out.to(memory_format=torch.channels_last) if channels_last else out
    if freeze_on is not None:
        x = freeze_on.contiguous(memory_format=torch.channels_last) if channels_last else freeze_on
        out = out.to(freeze_on.device)
        msnet, cache = out.msnet, {}
        with torch.no_grad():
            for s in range(msnet.num_stages):
                args = (x, *[cache[k] for k in msnet.reads[s]])
                frozen = freeze(msnet.stages[s], args)
                msnet.forward_stage(s, x, cache)
                msnet.stages[s] = frozen
    if compile:
        for s, stage in enumerate(out.msnet.stages):
            out.msnet.stages[s] = _compile(stage)
    return out


def check_thread_options(options: Sequence[int]) -> tuple[int, ...]:
    """``options`` as distinct ascending intra-op thread counts.

    Raises:
        ConfigError: empty, or a count below 1.
    """
    if not options or min(options) < 1:
        raise ConfigError(f"Expected thread counts >= 1, but got {list(options)}")
    return tuple(sorted(set(options)))


def prepare_variants(model: nn.Module, *, example: torch.Tensor, modes: Sequence[str] = MODES
                     ) -> dict[tuple[bool, str], nn.Module]:
    """Inference copies of ``model`` (a static model: :func:`prepare_static`; a DynamicNet:
    :func:`prepare_dynamic`) in each memory format (NCHW, then channels-last) and each of ``modes``
    (:data:`MODES`: ``eager``, or ``frozen``: traced on ``example`` and frozen; or ``compiled``:
    ``torch.compile``), keyed ``(channels_last, mode)``, on ``example``'s device."""
    def one(cl: bool, mode: str) -> nn.Module:
        compiled, freeze_on = mode == "compiled", example if mode == "frozen" else None
        if isinstance(model, DynamicNet):
            return prepare_dynamic(model, channels_last=cl, compile=compiled, freeze_on=freeze_on)
        return prepare_static(model, channels_last=cl, compile=compiled, freeze_on=freeze_on)

    return {(cl, mode): one(cl, mode).to(example.device) for cl in (False, True) for mode in modes}


def in_layout(batches: Sequence[torch.Tensor], *, channels_last: bool) -> list[torch.Tensor]:
    """``batches`` in channels-last memory format, or as they are (NCHW)."""
    return [b.contiguous(memory_format=torch.channels_last) if channels_last else b for b in batches]


def time_passes(fn: Callable[[torch.Tensor], object], batches: Sequence[torch.Tensor], *, warmup: int = 1,
                repeats: int = 5) -> float:
    """Median wall-clock seconds of one pass of ``fn`` over ``batches`` (after ``warmup`` passes).

    On CUDA inputs the device is synchronised before the clock starts and before it stops.
    """
    first = batches[0] if len(batches) else None
    first = first[0] if isinstance(first, (tuple, list)) and first else first  # (x, *cached) argument tuples
    cuda = isinstance(first, torch.Tensor) and first.is_cuda
    sync = (lambda: torch.cuda.synchronize(first.device)) if cuda else (lambda: None)  # type: ignore[union-attr]
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            for x in batches:
                fn(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_interleaved(runs: dict[object, tuple[Callable[[torch.Tensor], object], Sequence[torch.Tensor]]], *,
                     warmup: int = 1, repeats: int = 5, threads: dict[object, int] | None = None
                     ) -> dict[object, float]:
    """Median seconds of one pass per entry of ``runs`` (``key -> (fn, batches)``), the passes of
    all entries taken in turn, round after round: a machine that slows down for a while slows every
    entry alike instead of whichever was being timed (the base's and the dynamic network's times
    moved by +-20% between runs on the 2-core development machine). The order is reversed every
    other round (a, b, c, then c, b, a, ...), so that no entry always runs first or always after
    the same one (caches, turbo). The ``warmup`` passes come first, in the order of ``runs``.
    ``threads`` (key -> PyTorch intra-op threads) sets the thread count before each pass of that
    entry (the other entries run on the caller's count, which is restored at the end)."""
    threads = threads or {}
    before = torch.get_num_threads()

    def one_pass(key: object, fn: Callable[[torch.Tensor], object], batches: Sequence[torch.Tensor]) -> float:
        if threads:
            torch.set_num_threads(threads.get(key, before))
        return time_passes(fn, batches, warmup=0, repeats=1)

    try:
        for key, (fn, batches) in runs.items():
            for _ in range(warmup):
                one_pass(key, fn, batches)
        times: dict[object, list[float]] = {key: [] for key in runs}
        order = list(runs.items())
        for i in range(repeats):
            for key, (fn, batches) in (order if i % 2 == 0 else order[::-1]):
                times[key].append(one_pass(key, fn, batches))
    finally:
        torch.set_num_threads(before)
    return {key: statistics.median(t) for key, t in times.items()}


def time_fastest(variants: Mapping[str, Mapping[tuple[bool, str], Callable[[torch.Tensor], object]]],
                 batches: Sequence[torch.Tensor], *, thread_counts: Sequence[int] = (0,), warmup: int = 1,
                 repeats: int = 5) -> dict[str, tuple[float, tuple[bool, str], int]]:
    """Each model at its best on ``batches``: every variant of every model (``name -> {(channels_last,
    mode): fn}``, as :func:`prepare_variants` makes them) on each of ``thread_counts`` (PyTorch
    intra-op threads; 0: the caller's count, left as it is), the passes of all of them interleaved
    (:func:`time_interleaved`, whose keys are ``(name, (channels_last, mode), threads)``; the
    batches put in each variant's memory format). Returns, for each name, ``(median seconds per
    pass, (channels_last, mode), threads)`` of its fastest variant (threads: 0 where so given). The
    caller's thread count is the same afterwards."""
    runs = {(name, key, t): (fn, in_layout(batches, channels_last=key[0]))
            for name, models in variants.items() for key, fn in models.items() for t in thread_counts}
    timed = time_interleaved(runs, warmup=warmup, repeats=repeats, threads={k: k[2] for k in runs if k[2] > 0})
    return {name: min((t, key, th) for (which, key, th), t in timed.items() if which == name) for name in variants}


def _layout(channels_last: bool) -> str:
    return "channels_last" if channels_last else "nchw"


def _timed_batches(images: torch.Tensor, batch_size: int, max_batches: int | None) -> list[torch.Tensor]:
    """The batches a pass at ``batch_size`` runs: ``images`` split in order, the first ``max_batches``."""
    batches = list(torch.split(images, batch_size))
    return batches if max_batches is None else batches[:max_batches]


def benchmark_speed(base: nn.Module, dynamic: DynamicNet, images: torch.Tensor, *,
                    batch_sizes: Sequence[int] = (1, 32, 256), repeats: int = 5, warmup: int = 1,
                    base_macs: int, max_batches: int | None = None, compile: bool = False,
                    onnx: bool = False, device: str | torch.device = "cpu",
                    onnx_threads: int | None = None, thread_options: Sequence[int] | None = None) -> list[SpeedRow]:
    """Time ``base`` and ``dynamic`` on the same ``images`` at each batch size.

    Each model is prepared in both memory formats, eager and frozen (:data:`MODES`; with
    ``compile``: compiled instead), and the fastest is kept (each at its best). The passes of
    all variants of both models are interleaved (:func:`time_interleaved`). With ``onnx``,
    both models are exported to a
    temporary folder and timed again in ONNX Runtime (base: one graph; dynamic: the exported
    stages and the numpy exit rule of ``s2dnas_runtime``), one more row per batch size. The MAC
    ratio is ``base_macs`` over the MACs the DynamicNet executes on these images.

    Args:
        base: the static base model.
        dynamic: the dynamic network (thresholds set).
        images: ``(N, C, H, W)`` normalised inputs (e.g. the first N test images).
        batch_sizes: batch sizes to measure.
        repeats: timed passes per setting (the median is reported).
        warmup: untimed passes first.
        base_macs: the base model's MACs per input.
        max_batches: cap the number of batches per pass (batch size 1 over many images is slow).
        compile: compile both models with ``torch.compile`` (both or neither: same treatment).
        onnx: also time both models in ONNX Runtime (CPU; needs ``s2dnas[export]``).
        device: where the PyTorch rows run (on CUDA, timings synchronise the device).
        onnx_threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``); ignored
            with ``thread_options``.
        thread_options: intra-op thread counts to try, for each model and runtime on the CPU (the
            fastest kept, like the memory format: at batch 1 a thin stage can run faster on one
            thread than on several); None = the current count only.

    Returns:
        One :class:`SpeedRow` per batch size (``runtime="pytorch"``), then, with ``onnx``, one per
        batch size with ``runtime="onnxruntime"``.
    """
    dev = torch.device(device)
    example = images[:2].to(dev)
    modes = ("compiled",) if compile else MODES
    options = list(check_thread_options(thread_options)) if thread_options is not None else None
    counts = options if options and dev.type == "cpu" else [0]  # 0: leave as they are
    variants = {"base": prepare_variants(base, example=example, modes=modes),
                "dynamic": prepare_variants(dynamic, example=example, modes=modes)}
    current = torch.get_num_threads() if dev.type == "cpu" else 0  # what an entry without a count runs on
    rows = []
    splits = {}
    for bs in batch_sizes:
        batches = _timed_batches(images, bs, max_batches)
        splits[bs] = batches
        n = sum(len(b) for b in batches)
        with torch.inference_mode():
            exits = torch.cat([dynamic(b).exit_stage for b in batches])
        dyn_macs = dynamic.macs_of(exits) / n
        best = time_fastest(variants, [b.to(dev) for b in batches], thread_counts=counts, warmup=warmup,
                            repeats=repeats)
        best_base, best_dyn = best["base"], best["dynamic"]
        rows.append(_row(bs, n, best_base[0], best_dyn[0], base_macs / dyn_macs, base_layout=_layout(best_base[1][0]),
                         dynamic_layout=_layout(best_dyn[1][0]), compiled=compile, runtime="pytorch",
                         dynamic_path="executor", device=str(dev), base_mode=best_base[1][1],
                         dynamic_mode=best_dyn[1][1],
                         base_threads=best_base[2] or current, dynamic_threads=best_dyn[2] or current))
    if onnx:
        from s2dnas.bench.onnx_speed import time_onnx

        ort_counts = options or [onnx_threads if onnx_threads is not None else torch.get_num_threads()]
        for bs, (base_best, dyn_best) in time_onnx(base, dynamic, splits, repeats=repeats, warmup=warmup,
                                                   threads=ort_counts).items():
            ref = next(r for r in rows if r.batch_size == bs)
            rows.append(_row(bs, ref.num_images, base_best[0], dyn_best[0], ref.macs_ratio, base_layout="nchw",
                             dynamic_layout="nchw", compiled=False, runtime="onnxruntime", dynamic_path="onnx",
                             device="cpu", base_mode="onnx", dynamic_mode="onnx", base_threads=base_best[1],
                             dynamic_threads=dyn_best[1]))
    return rows


def predict_speed(base: nn.Module, dynamic: DynamicNet, images: torch.Tensor, *, batch_sizes: Sequence[int],
                  max_batches: int | None = None, device: str | torch.device = "cpu",
                  cache: LatencyCache | None = None, repeats: int = 5,
                  threads: Mapping[int, tuple[int, int]] | None = None) -> list[LatencyPrediction]:
    """The latency cost model's prediction of the base's and the DynamicNet's seconds per input at
    each batch size, for the exits the DynamicNet takes on the images :func:`benchmark_speed` times
    at that batch size with the same ``images`` and ``max_batches`` (the first ``max_batches``
    batches): compare it with that measurement for the cost model's error on the same images.

    ``cache=None`` times every stage afresh in this process (the fair comparison with a
    measurement made in the same process); a :class:`~s2dnas.cost.latency.LatencyCache` reuses
    the timings a search made. ``threads`` (batch size -> PyTorch threads of the base, of the
    dynamic network) times each model on the thread count its measurement used (bench's rows).

    Raises:
        ConfigError: no images, or a batch size, ``max_batches`` or repeat count below 1.
    """
    if len(images) == 0 or not batch_sizes or min(batch_sizes) < 1 or (max_batches is not None and max_batches < 1):
        raise ConfigError(f"Expected images, batch sizes >= 1 and max_batches >= 1, but got {len(images)} images, "
                          f"{list(batch_sizes)} and max_batches={max_batches}")
    counts = {bs: sum(len(b) for b in _timed_batches(images, bs, max_batches)) for bs in batch_sizes}
    with torch.inference_mode():  # the timed images are a prefix of ``images``: their exits, once
        exits = torch.cat([dynamic(b).exit_stage for b in torch.split(images[:max(counts.values())], 256)])
    shape = tuple(images.shape[1:])
    out = []
    for bs in batch_sizes:
        n = counts[bs]
        per_stage = torch.bincount(exits[:n], minlength=dynamic.msnet.num_stages)
        fractions = tuple(float(c) / n for c in per_stage)
        base_threads, dyn_threads = (threads or {}).get(bs, (0, 0))
        with _num_threads(base_threads):
            base_s = measure_model(base, input_shape=shape, batch_size=bs, device=device, cache=cache, repeats=repeats)
        with _num_threads(dyn_threads):
            dyn_s = predict_latency(dynamic.msnet, batch_size=bs, exit_fractions=fractions, device=device,
                                    cache=cache, repeats=repeats)
        out.append(LatencyPrediction(batch_size=bs, num_images=n, exit_fractions=fractions,
                                     base_seconds_per_input=base_s / bs, dynamic_seconds_per_input=dyn_s))
    return out


@contextlib.contextmanager
def _num_threads(count: int) -> Iterator[None]:
    """PyTorch intra-op threads set to ``count`` inside the block (0: left as they are)."""
    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _row(bs: int, n: int, base_s: float, dyn_s: float, macs_ratio: float, **labels: object) -> SpeedRow:
    speedup = base_s / dyn_s
    _logger.info("batch %d (%s): speed-up %.2fx, MAC ratio %.2fx", bs, labels.get("runtime"), speedup, macs_ratio)
    return SpeedRow(batch_size=bs, num_images=n, base_seconds=base_s, dynamic_seconds=dyn_s,
                    base_images_per_second=n / base_s, dynamic_images_per_second=n / dyn_s,
                    measured_speedup=speedup, macs_ratio=macs_ratio, speedup_over_macs_ratio=speedup / macs_ratio,
                    **labels)  # type: ignore[arg-type]


def profile_stages(base: nn.Module, dynamic: DynamicNet, images: torch.Tensor, *, base_macs: int,
                   batch_size: int = 256, repeats: int = 5, channels_last: bool | None = None) -> list[StageProfile]:
    """Time each stage on whole batches (every input, no exits) next to the base model.

    Both are prepared as in :func:`benchmark_speed`; ``channels_last=None`` picks the faster
    layout for each (for the stages: the layout with the smaller sum of stage times).

    Args:
        base: the static base model.
        dynamic: the dynamic network.
        images: ``(N, C, H, W)`` inputs.
        base_macs: the base model's MACs per input.
        batch_size: images per batch.
        repeats: timed passes (median).
        channels_last: the layout, or None for the faster one of each.

    Raises:
        ConfigError: no images, or a batch size, repeat count or base MAC count below 1.
    """
    if len(images) == 0 or batch_size < 1 or repeats < 1 or base_macs < 1:
        raise ConfigError(f"Expected images, batch_size >= 1, repeats >= 1 and base_macs >= 1, but got "
                          f"{len(images)} images, batch_size={batch_size}, repeats={repeats}, base_macs={base_macs}")
    batches = list(torch.split(images, batch_size))
    n = sum(len(b) for b in batches)
    stage_macs = dynamic.stage_macs

    def layout(cl: bool) -> list[torch.Tensor]:
        return in_layout(batches, channels_last=cl)

    def time_base(cl: bool) -> float:
        return time_passes(prepare_static(base, channels_last=cl), layout(cl), repeats=repeats)

    def time_stages(cl: bool) -> list[float]:
        msnet = prepare_dynamic(dynamic, channels_last=cl).msnet
        caches = []  # features of the earlier stages, computed once, outside the timed region
        with torch.inference_mode():
            for x in layout(cl):
                cache: dict[str, torch.Tensor] = {}
                for s in range(msnet.num_stages):
                    msnet.forward_stage(s, x, cache)
                caches.append(cache)
        seconds = []
        for s in range(msnet.num_stages):
            args = [(x, *[c[k] for k in msnet.reads[s]]) for x, c in zip(layout(cl), caches)]
            stage = msnet.stages[s]
            seconds.append(time_passes(lambda a: stage(*a), args, repeats=repeats))  # type: ignore[arg-type]
        return seconds

    layouts = (False, True) if channels_last is None else (channels_last,)
    base_seconds = min(time_base(cl) for cl in layouts)
    stage_seconds = min((time_stages(cl) for cl in layouts), key=sum)
    base_rate = base_macs * n / base_seconds / 1e9
    return [StageProfile(stage=s, macs=int(m), seconds=t, macs_share=m / base_macs, time_share=t / base_seconds,
                         gmacs_per_second=m * n / t / 1e9, base_gmacs_per_second=base_rate)
            for s, (m, t) in enumerate(zip(stage_macs, stage_seconds))]
