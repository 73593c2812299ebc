"""Measured latency: a cost model of the machine a dynamic network will run on.

MACs do not predict wall-clock time on small CNNs: a 3x3 convolution with 4 channels runs its
MACs ~9x slower than one with 64 on a CPU, and each op has a fixed overhead that dominates at
batch 1. This module measures what a candidate really executes, **one stage of a MultiStageNet at
a time** (BN folded, traced and frozen as ``s2dnas bench`` deploys it, on the target device, at the
given batch size and memory format), and keeps
the seconds in an on-disk cache so a candidate's stage is timed once per machine:

- the cache is one JSON file per *machine fingerprint* (torch version, CPU model or CUDA device
  name, thread count; :func:`device_fingerprint`) under :func:`default_cache_dir`; nothing is
  pickled, and a file that does not parse or does not match its fingerprint is set aside with a
  warning and rebuilt;
- an entry's key is the stage's structural fingerprint (graph code, every layer's type and shape,
  the shapes of its inputs: :func:`stage_fingerprint`), the batch size, the memory format and how
  it ran (``frozen``: :data:`DEPLOYED_MODE`), so the same slice in two candidates is one entry.

Per stage rather than per layer (a lookup table summed over layers, as FBNet / Once-for-All do):
on this CPU the sum of per-layer times missed whole stages by the per-op and Python overhead that
dominates at batch 1 (see docs/design.md, "Latency cost model", for the numbers). A stage costs a
few milliseconds to time, and the search builds each candidate anyway.

:func:`expected_latency` turns per-stage latencies and exit fractions into the expected latency of
the dynamic network; :func:`stage_cost_vector` gives the per-stage cost (seconds per input) that a
cost-agnostic calibration minimises in place of MACs. :class:`LatencyStageCost` is the latency
implementation of the per-stage cost hook (:mod:`s2dnas.cost.stage_cost`): milliseconds per input
of each stage at the deployment batch size, cached; :func:`measure_model` times a plain model
(the base) the same way.

Example:
    >>> expected_latency(stage_seconds=[1.0, 2.0, 4.0], exit_fractions=[0.5, 0.25, 0.25])
    3.0
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import fx, nn

from s2dnas._device import cpu_model
from s2dnas._io import atomic_write_json
from s2dnas.errors import ConfigError

if TYPE_CHECKING:  # cost/ sits below space/: the network is only used through its attributes
    from s2dnas.space.multistage import MultiStageNet

__all__ = ["CACHE_FORMAT", "DEPLOYED_MODE", "LatencyCache", "StageLatency", "default_cache_dir", "device_fingerprint",
           "stage_fingerprint", "fold_bn", "freeze", "time_call", "MIN_SAMPLE_SECONDS", "TIMING_VERSION", "measure_stages", "predict_latency", "expected_latency",
           "stage_cost_vector", "measure_model", "LatencyStageCost"]

_logger = logging.getLogger(__name__)

#: Version of the cache file layout; a file with another version is rebuilt.
CACHE_FORMAT = 1
#: How stages (and the base) are timed, the last field of every cache key: traced and frozen, as
#: ``s2dnas bench`` deploys them. Entries timed eager (keys without it, before) are not reused.
DEPLOYED_MODE = "frozen"

#: What ``torch.jit.trace``/``torch.jit.freeze`` raise for a model TorchScript cannot run (outputs
#: that are not tensors, unsupported ops or argument types; ``torch.jit.Error`` is a
#: ``RuntimeError``): such a model is timed eager. Anything else is a real error and propagates.
_UNTRACEABLE = (RuntimeError,)


def default_cache_dir() -> Path:
    """``$S2DNAS_CACHE_DIR/latency`` if set, else ``$XDG_CACHE_HOME/s2dnas/latency`` (``~/.cache``)."""
    if os.environ.get("S2DNAS_CACHE_DIR"):
        return Path(os.environ["S2DNAS_CACHE_DIR"]) / "latency"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s2dnas" / "latency"


TIMING_VERSION = 2
"""How :func:`time_call` measures (2: samples of at least ``MIN_SAMPLE_SECONDS``); part of the
fingerprint, so timings cached by another method are not reused."""


def device_fingerprint(device: str | torch.device = "cpu", *, threads: int | None = None) -> dict[str, Any]:
    """What a latency depends on besides the network: software version, device, threads, and the
    timing method (:data:`TIMING_VERSION`).

    Args:
        device: the device the timings are for.
        threads: torch intra-op threads (default: ``torch.get_num_threads()`` now).

    Returns:
        A JSON-able dict; two timings are comparable only under equal fingerprints.
    """
    dev = torch.device(device)
    info: dict[str, Any] = {"torch": torch.__version__, "device_type": dev.type,
                            "threads": int(threads if threads is not None else torch.get_num_threads()),
                            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "timing": TIMING_VERSION}
    if dev.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _fingerprint_id(fingerprint: dict[str, Any]) -> str:
    blob = json.dumps(fingerprint, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class LatencyCache:
    """Measured seconds on one machine, kept in one JSON file per fingerprint.

    Entries are ``key -> seconds``; :meth:`get` returns ``None`` for a miss. :meth:`save` writes
    atomically. A file that is not valid JSON, has another format version or another fingerprint
    (a hash collision or a hand-edited file) is never trusted: it is renamed to ``*.corrupt``
    with a warning and the cache starts empty.

    Args:
        fingerprint: :func:`device_fingerprint` of the machine the entries are for.
        directory: where cache files live (default :func:`default_cache_dir`).
    """

    def __init__(self, fingerprint: dict[str, Any], *, directory: str | Path | None = None) -> None:
        self.fingerprint = dict(fingerprint)
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / f"latency-{_fingerprint_id(self.fingerprint)}.json"
        self.entries: dict[str, float] = self._read()
        self.hits = 0
        self.misses = 0

    def _read(self) -> dict[str, float]:
        if not self.path.exists():
            return {}
        problem = None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            data, problem = None, f"not readable JSON ({e})"
        if problem is None:
            if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
                problem = f"expected format {CACHE_FORMAT}"
            elif data.get("fingerprint") != self.fingerprint:
                problem = "written for another machine fingerprint"
            elif not isinstance(data.get("entries"), dict) or not all(
                    isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in data["entries"].values()):
                problem = "entries must map keys to positive seconds"
        if problem is not None:
            aside = self.path.with_suffix(".corrupt")
            warnings.warn(f"Latency cache {self.path} is {problem}; moved it to {aside.name} and starting an "
                          "empty cache (stages will be timed again)", stacklevel=3)
            os.replace(self.path, aside)
            return {}
        return {str(k): float(v) for k, v in data["entries"].items()}

    def get(self, key: str) -> float | None:
        """Seconds stored under ``key``, or ``None`` (counted as a hit or a miss)."""
        value = self.entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, seconds: float) -> None:
        """Store ``seconds`` (finite, > 0) under ``key`` (in memory; :meth:`save` writes)."""
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"Expected a positive finite latency, but got {seconds!r} for {key!r}")
        self.entries[key] = float(seconds)

    def save(self) -> Path:
        """Write the cache file atomically and return its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"format": CACHE_FORMAT, "fingerprint": self.fingerprint,
                                      "entries": dict(sorted(self.entries.items()))})
        return self.path


def stage_fingerprint(stage: nn.Module, inputs: Sequence[torch.Tensor]) -> str:
    """A structural hash of a stage: what it computes and on which shapes, not its weight values.

    Two stages with equal fingerprints run the same ops on the same shapes, so they take the same
    time; weights do not change the time of dense kernels.
    """
    h = hashlib.sha256()
    if isinstance(stage, fx.GraphModule):
        h.update(stage.code.encode())
    for name, m in stage.named_modules():
        if not list(m.children()):
            h.update(f"{name}:{type(m).__name__}:{m.extra_repr()};".encode())
    for name, t in itertools.chain(stage.named_parameters(), stage.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    for t in inputs:
        h.update(f"in:{tuple(t.shape[1:])}:{t.dtype};".encode())
    return h.hexdigest()[:24]


def fold_bn(module: nn.Module) -> nn.Module:
    """An eval-mode copy with batch norms folded into the preceding convolutions (traced if needed)."""
    from torch.fx.experimental.optimization import fuse

    gm = module if isinstance(module, fx.GraphModule) else fx.symbolic_trace(module)
    return fuse(copy.deepcopy(gm).eval(), inplace=True)


def freeze(module: nn.Module, args: tuple[torch.Tensor, ...]) -> nn.Module:
    """``module`` traced on ``args`` and frozen (``torch.jit.freeze``: weights inlined; eval mode).

    How ``s2dnas bench`` runs a model in its ``frozen`` mode (after :func:`fold_bn`), and so how
    the latency cost model times stages: the deployed form, which ran 20-35% faster than eager at
    batch 1 on a CPU (docs/design.md, "Batch 1 and the bench").
    """
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # torch 2.x marks TorchScript as deprecated
        return torch.jit.freeze(torch.jit.trace(module, args, check_trace=False).eval())


MIN_SAMPLE_SECONDS = 0.02
"""The shortest timed sample of :func:`time_call`: shorter calls are repeated back to back."""
_MAX_CALLS_PER_SAMPLE = 1000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], *, device: str | torch.device = "cpu", warmup: int = 2,
              repeats: int = 5, min_seconds: float = MIN_SAMPLE_SECONDS) -> float:
    """Median wall-clock seconds of one ``fn()`` after ``warmup`` untimed calls.

    Each of the ``repeats`` samples runs ``fn`` back to back ``n`` times and is divided by ``n``,
    ``n`` chosen from the fastest of the untimed calls (the warm-up and one more) so that a sample lasts at least
    ``min_seconds``: a sub-millisecond call (a stage at batch 1) timed alone is mostly timer and
    scheduler noise, and the deployed network runs such calls back to back too. On CUDA the
    device is synchronised around each sample, so the time is the kernels' time, not the launch
    time.
    """
    dev = torch.device(device)

    def sample(n: int) -> float:
        _sync(dev)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(dev)
        return time.perf_counter() - start

    with torch.inference_mode():
        one = min(sample(1) for _ in range(warmup + 1))  # the fastest: one slow call must not size every sample
        n = min(_MAX_CALLS_PER_SAMPLE, max(1, math.ceil(min_seconds / max(one, 1e-9))))
        times = [sample(n) / n for _ in range(repeats)]
    return statistics.median(times)


@dataclass(frozen=True)
class StageLatency:
    """Measured seconds of each stage run on a whole batch (no exits).

    Attributes:
        seconds: per stage, median seconds for one batch of ``batch_size``.
        batch_size: the batch the stages were timed on.
        channels_last: the memory format they ran in.
        device: the device (``"cpu"``, ``"cuda:0"``).
        fingerprint: :func:`device_fingerprint` of the machine.
        cached: per stage, whether the number came from the cache.
    """

    seconds: tuple[float, ...]
    batch_size: int
    channels_last: bool
    device: str
    fingerprint: dict[str, Any]
    cached: tuple[bool, ...]

    @property
    def seconds_per_input(self) -> list[float]:
        """Per stage, seconds per input (batch time / batch size)."""
        return [t / self.batch_size for t in self.seconds]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return asdict(self)


def _progress(total: int, *, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="stage", leave=False)



def _check_timing(*, batch_size: int, repeats: int, warmup: int, device: str | torch.device,
                  cache: LatencyCache | None) -> tuple[torch.device, str]:
    """The timing arguments checked, and ``(device, its fingerprint)``; a cache made for another
    machine is refused."""
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"Expected batch_size >= 1, repeats >= 1 and warmup >= 0, but got batch_size={batch_size}, "
                          f"repeats={repeats}, warmup={warmup}")
    dev = torch.device(device)
    fingerprint = device_fingerprint(dev)
    if cache is not None and cache.fingerprint != fingerprint:
        raise ConfigError(f"Expected a latency cache for this machine ({fingerprint}), but got one for "
                          f"{cache.fingerprint}; build it with LatencyCache(device_fingerprint(device))")
    return dev, fingerprint

def measure_stages(msnet: MultiStageNet, *, batch_size: int, device: str | torch.device = "cpu",
                   channels_last: bool | None = None, cache: LatencyCache | None = None, repeats: int = 5,
                   warmup: int = 2, progress: bool = False) -> StageLatency:
    """Time every stage of ``msnet`` on whole batches on ``device``, reusing cached timings.

    Each stage runs as it will in deployment: BN folded, traced and frozen (:func:`freeze`, as
    ``s2dnas bench`` runs it), eval mode, inference mode, inputs the
    image batch and the cached features it reads (computed once by the earlier stages, outside
    the timed region). With ``channels_last=None`` both memory formats are timed and the one with
    the smaller sum over stages is kept (as ``s2dnas bench`` keeps each model's faster format).

    Args:
        msnet: the multi-stage network (not modified).
        batch_size: images per batch.
        device: where to time (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        channels_last: the memory format, or ``None`` for the faster one.
        cache: a :class:`LatencyCache` for this device (its fingerprint must match ``device``
            and the current thread count); ``None`` times everything and stores nothing.
        repeats: timed calls per stage (median).
        warmup: untimed calls first.
        progress: show a progress bar (stderr).

    Returns:
        A :class:`StageLatency`.

    Raises:
        ConfigError: ``batch_size``/``repeats`` below 1, or a cache for another machine fingerprint.
    """
    dev, fingerprint = _check_timing(batch_size=batch_size, repeats=repeats, warmup=warmup, device=device,
                                     cache=cache)
    layouts = (False, True) if channels_last is None else (channels_last,)
    bar = _progress(len(layouts) * msnet.num_stages, enabled=progress, desc="timing stages")
    results = []
    try:
        for cl in layouts:
            results.append(_measure_layout(msnet, batch_size=batch_size, device=dev, channels_last=cl, cache=cache,
                                           repeats=repeats, warmup=warmup, bar=bar))
    finally:
        if bar is not None:
            bar.close()
    if cache is not None and cache.misses:
        cache.save()
    seconds, cached, cl = min(results, key=lambda r: sum(r[0]))
    return StageLatency(seconds=tuple(seconds), batch_size=batch_size, channels_last=cl, device=str(dev),
                        fingerprint=fingerprint, cached=tuple(cached))


def _measure_layout(msnet: MultiStageNet, *, batch_size: int, device: torch.device, channels_last: bool,
                    cache: LatencyCache | None, repeats: int, warmup: int, bar: Any,
                    only: frozenset[int] | None = None) -> tuple[list[float], list[bool], bool]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref = next(msnet.parameters(), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x = torch.randn(batch_size, *msnet.input_shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
    layout = "channels_last" if channels_last else "nchw"
    seconds, cached = [], []
    feats: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for s in range(msnet.num_stages):
            if only is not None and s > max(only):
                break
            stage = fold_bn(msnet.stages[s]).to(device=device, memory_format=fmt)
            args = (x, *[feats[k] for k in msnet.reads[s]])
            key = f"{stage_fingerprint(stage, args)}|b{batch_size}|{layout}|{DEPLOYED_MODE}"
            skip = only is not None and s not in only  # not asked for: only its features are needed
            value = cache.get(key) if cache is not None and not skip else None
            if skip:
                value, hit = math.nan, False
            elif value is None:
                frozen = freeze(stage, args)  # what s2dnas bench deploys
                value = time_call(lambda: frozen(*args), device=device, warmup=warmup, repeats=repeats)
                if cache is not None:
                    cache.put(key, value)
                hit = False
            else:
                hit = True
            seconds.append(value)
            cached.append(hit)
            if s + 1 < msnet.num_stages and (only is None or max(only) > s):  # features for later stages
                out = stage(*args)
                feats.update(zip(msnet.writes[s], out[1:]))
            if bar is not None and (only is None or s in only):
                bar.update(1)
    return seconds, cached, channels_last


def predict_latency(msnet: MultiStageNet, *, batch_size: int, exit_fractions: Sequence[float],
                    device: str | torch.device = "cpu", channels_last: bool | None = None,
                    cache: LatencyCache | None = None, repeats: int = 5, warmup: int = 2,
                    progress: bool = False) -> float:
    """Predicted seconds per input of the DynamicNet of ``msnet`` at ``batch_size`` with these exits.

    Stage ``s`` is timed at the batch it really sees, ``b_s = ceil(batch_size * reach_s)`` inputs,
    and :func:`expected_latency` of the per-input times ``t_s(b_s) / b_s`` is returned (at batch 1
    every stage is timed on one input and weighted by its reach). On this CPU this predicted the measured
    time within a few percent where the full-batch cost vector (:func:`stage_cost_vector`)
    underestimated batched runs by 20-50% (a stage on a quarter of the batch runs each input
    slower); at batch 1 both are the same. Routing (confidence, gather) is not included.

    Args:
        msnet: the multi-stage network.
        batch_size: B, inputs per batch.
        exit_fractions: per stage, the fraction of inputs leaving there (sums to 1).
        device, channels_last, cache, repeats, warmup, progress: as in :func:`measure_stages`
            (``channels_last=None`` picks the faster format at the full batch and keeps it).

    Raises:
        ConfigError: as :func:`measure_stages` and :func:`expected_latency`.
    """
    reach = _reach(exit_fractions)
    if len(reach) != msnet.num_stages:
        raise ConfigError(f"Expected {msnet.num_stages} exit fractions (one per stage), but got {len(reach)}")
    full = measure_stages(msnet, batch_size=batch_size, device=device, channels_last=channels_last, cache=cache,
                          repeats=repeats, warmup=warmup, progress=progress)
    per_batch = {}
    for s, r in enumerate(reach):
        if r > 0:
            per_batch.setdefault(max(1, math.ceil(batch_size * r - 1e-9)), set()).add(s)
    per_input = [0.0] * len(reach)  # seconds per input of each stage at the batch it sees
    dev = torch.device(device)
    for b, stages in per_batch.items():
        secs = list(full.seconds) if b == batch_size else _measure_layout(
            msnet, batch_size=b, device=dev, channels_last=full.channels_last, cache=cache, repeats=repeats,
            warmup=warmup, bar=None, only=frozenset(stages))[0]
        for s in stages:
            per_input[s] = secs[s] / b
    if cache is not None and cache.misses:
        cache.save()
    return expected_latency(stage_seconds=per_input, exit_fractions=exit_fractions)


def _reach(exit_fractions: Sequence[float]) -> list[float]:
    fr = [float(f) for f in exit_fractions]
    if not fr or any(f < 0 or not math.isfinite(f) for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"Expected exit fractions >= 0 that sum to 1 (one per stage), but got {fr}")
    reach, left = [], 1.0
    for f in fr:
        reach.append(max(left, 0.0))
        left -= f
    return reach


def expected_latency(*, stage_seconds: Sequence[float], exit_fractions: Sequence[float],
                     overhead_seconds: Sequence[float] | None = None) -> float:
    """Expected seconds per input of a dynamic network.

    ``sum_s reach_s * (stage_seconds[s] + overhead_seconds[s])`` with ``reach_s`` the fraction of
    inputs that reach stage ``s`` (1 for the first stage, ``1 - f_0 - ... - f_{s-1}`` after it):
    the same form as expected MACs, with measured seconds per input in place of MACs.

    Args:
        stage_seconds: per stage, seconds per input (e.g. :attr:`StageLatency.seconds_per_input`).
        exit_fractions: per stage, the fraction of inputs that leave there (sums to 1).
        overhead_seconds: per stage, routing overhead per input after it (confidence, gather);
            default 0.

    Raises:
        ConfigError: lengths differ, negative seconds, or fractions that are not a distribution.
    """
    reach = _reach(exit_fractions)
    over = [0.0] * len(reach) if overhead_seconds is None else [float(v) for v in overhead_seconds]
    secs = [float(v) for v in stage_seconds]
    if len(secs) != len(reach) or len(over) != len(reach):
        raise ConfigError(f"Expected one latency and one exit fraction per stage, but got {len(secs)} latencies, "
                          f"{len(reach)} fractions and {len(over)} overheads")
    if any(v < 0 or not math.isfinite(v) for v in secs + over):
        raise ConfigError(f"Expected finite latencies >= 0, but got {secs} (overhead {over})")
    return sum(r * (t + o) for r, t, o in zip(reach, secs, over))


def stage_cost_vector(latency: StageLatency) -> list[float]:
    """The per-stage cost a calibration minimises in place of MACs: seconds per input.

    Expected cost under any thresholds is then ``sum_s reach_s * cost[s]``, i.e.
    :func:`expected_latency` with no overhead, so a MAC-minimising optimiser that takes a cost
    vector minimises expected latency unchanged.
    """
    return latency.seconds_per_input


def measure_model(model: nn.Module, *, input_shape: Sequence[int], batch_size: int,
                  device: str | torch.device = "cpu", channels_last: bool | None = None,
                  cache: LatencyCache | None = None, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of one batch through a plain model (e.g. the base), timed as the stages are.

    BN folded when the model traces with ``torch.fx`` (else timed as it is, in eval mode), then
    frozen (:func:`freeze`; eager when TorchScript cannot trace or freeze it, with ``eager`` in
    the key), on ``device``, in the given memory format or the faster of the two (``None``);
    cached under the model's structural fingerprint, batch size and layout. The cache is read
    before anything is frozen: a hit (frozen, or eager for a model that did not freeze) costs no
    tracing.

    Raises:
        ConfigError: ``batch_size``/``repeats`` below 1, or a cache for another machine fingerprint.
    """
    dev, fingerprint = _check_timing(batch_size=batch_size, repeats=repeats, warmup=warmup, device=device,
                                     cache=cache)
    try:
        runner = fold_bn(model)
    except Exception:  # noqa: BLE001 - not traceable: time it unfolded (what a user's model runs)
        runner = copy.deepcopy(model).eval()
    ref = next(model.parameters(), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    best = math.inf
    for cl in ((False, True) if channels_last is None else (channels_last,)):
        fmt = torch.channels_last if cl else torch.contiguous_format
        net = runner.to(device=dev, memory_format=fmt)
        x = torch.randn(batch_size, *input_shape, device=dev, dtype=dtype).contiguous(memory_format=fmt)
        prefix = f"model|{stage_fingerprint(net, [x])}|b{batch_size}|{'channels_last' if cl else 'nchw'}"
        # frozen first; an eager entry exists only for a model that failed to freeze (same structure)
        hit = next((k for k in (f"{prefix}|{DEPLOYED_MODE}", f"{prefix}|eager")
                    if cache is not None and k in cache.entries), None)
        if cache is not None and hit is not None:
            cache.get(hit)  # counted as a hit
            value = cache.entries[hit]
        else:
            try:
                run, mode = freeze(net, (x,)), DEPLOYED_MODE
            except _UNTRACEABLE:  # not traceable by torch.jit: timed eager, as bench would run it
                run, mode = net, "eager"
            key = f"{prefix}|{mode}"
            if cache is not None:
                cache.get(key)  # counted as a miss: the file is rewritten below
            value = time_call(lambda: run(x), device=dev, warmup=warmup, repeats=repeats)
            if cache is not None:
                cache.put(key, value)
        best = min(best, value)
    if cache is not None and cache.misses:
        cache.save()
    return best


class LatencyStageCost:
    """The latency cost hook: ``hook(msnet) -> (milliseconds per input of each stage, "ms")``.

    Each stage is timed by :func:`measure_stages` on ``device`` at ``batch_size`` inputs (the
    deployment batch: every stage is timed on the whole batch, so the vector is exact for batch 1,
    where an input's latency is the sum of the stages it runs), in the faster memory format, and
    cached on disk per machine fingerprint: a stage seen before (in this run, an earlier run or
    ``s2dnas profile``) is not timed again. :meth:`model_cost` times the base model the same way,
    so a latency budget can be a fraction of it.

    Args:
        device: the device the model will run on.
        batch_size: the deployment batch size (``calibration.latency_batch``).
        cache_dir: where cache files live (``None``: :func:`default_cache_dir`).
        use_cache: read and write the on-disk cache (``False``: time everything, store nothing).
        repeats, warmup: timed and untimed calls per stage (median of the timed ones).
        progress: show a progress bar while timing.
    """

    unit = "ms"

    def __init__(self, *, device: str | torch.device = "cpu", batch_size: int = 1,
                 cache_dir: str | Path | None = None, use_cache: bool = True, repeats: int = 5, warmup: int = 2,
                 progress: bool = False) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"Expected the latency batch size to be an integer >= 1, but got {batch_size!r}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.repeats = repeats
        self.warmup = warmup
        self.progress = progress
        self._caches: dict[str, LatencyCache] = {}

    def cache(self) -> LatencyCache | None:
        """The cache for this device under the current thread count (``None`` with ``use_cache=False``)."""
        if not self.use_cache:
            return None
        fingerprint = device_fingerprint(self.device)
        key = _fingerprint_id(fingerprint)
        if key not in self._caches:
            self._caches[key] = LatencyCache(fingerprint, directory=self.cache_dir)
        return self._caches[key]

    def __call__(self, msnet: MultiStageNet) -> tuple[tuple[float, ...], str]:
        """Per stage, milliseconds per input at the deployment batch, and the unit ``"ms"``."""
        latency = measure_stages(msnet, batch_size=self.batch_size, device=self.device, cache=self.cache(),
                                 repeats=self.repeats, warmup=self.warmup, progress=self.progress)
        return tuple(1e3 * t for t in latency.seconds_per_input), self.unit

    def model_cost(self, model: nn.Module, *, input_shape: Sequence[int]) -> float:
        """Milliseconds per input of a plain model (the base) at the deployment batch, same method."""
        seconds = measure_model(model, input_shape=input_shape, batch_size=self.batch_size, device=self.device,
                                cache=self.cache(), repeats=self.repeats, warmup=self.warmup)
        return 1e3 * seconds / self.batch_size

    def __repr__(self) -> str:
        return f"LatencyStageCost(device={str(self.device)!r}, batch_size={self.batch_size})"
