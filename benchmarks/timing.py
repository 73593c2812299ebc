"""Timing for the method comparison: every network against the base at batch 256 and 1, in one
process, each model at its best (:class:`SpeedMeter`); the timings a network's cache keeps, with
what they depend on, so a killed timing pass resumes (:func:`timed_as`, :func:`timing_passes`)."""
from __future__ import annotations

import json
from typing import Any, Sequence

import torch

from s2dnas.bench.speed import check_thread_options, in_layout, prepare_variants, time_fastest, time_interleaved
from s2dnas.dynamic import DynamicNet, ExitPolicy
from s2dnas.space import MultiStageNet

__all__ = ["SPEED_BATCHES", "SPEED_METHOD", "TIMING_FIELDS", "SpeedMeter", "measure_speed", "seed_entries",
           "timed_as", "timing_passes"]

#: Batch sizes every network is timed at (issue 14: batch 1 and batch 256), with the key suffix of
#: their fields in a point (``measured_speedup`` at 256, ``measured_speedup_b1`` at 1, ...).
SPEED_BATCHES = {256: "", 1: "_b1"}

#: How :class:`SpeedMeter` times (1: variants chosen on the first setting, then each setting
#: interleaved with the base, ratio of medians); part of its identity, so a change here retimes.
SPEED_METHOD = 1

#: How a point's network and the base were timed (per batch size, with the suffix of :data:`SPEED_BATCHES`).
TIMING_FIELDS = ("layout", "mode", "threads", "base_layout", "base_mode", "base_threads")


class SpeedMeter:
    """Times networks against the base at batch 256 and at batch 1 on the same test images, in one process.

    Every model is at its best, as ``s2dnas bench`` has it (:func:`~s2dnas.bench.speed.benchmark_speed`):
    BN folded, inference mode, and at each batch size the fastest of its variants over memory format
    (NCHW, channels-last) x mode (eager, frozen TorchScript trace: :data:`~s2dnas.bench.speed.MODES`)
    x intra-op thread count (``thread_options``; default 1 and the current count), the passes of all
    variants of the base and of the network interleaved (:func:`~s2dnas.bench.speed.time_fastest`).
    The variants are chosen on a network's first threshold setting; then every setting is timed
    again in the chosen variant, its passes interleaved with the base's chosen variant, so each
    speed-up is the ratio of two medians of the same run (not of a fastest-of-8 minimum, which
    would favour the first setting) and a machine that gets busier (or quieter) during the run
    does not tilt it. A setting that sends more inputs to the later stages might have preferred
    another variant (not tried: cheaper). Batch 1 times the first ``images_batch1`` images (it is
    the slow one per image). With the default ``thread_options`` (1 and the current count) this is
    ``s2dnas bench --thread-options 1,N``.

    Raises:
        ConfigError: a thread count below 1.
    """

    def __init__(self, base: torch.nn.Module, images: torch.Tensor, *, base_macs: int, repeats: int,
                 images_batch1: int, thread_options: Sequence[int] | None = None) -> None:
        self.thread_options = check_thread_options(
            tuple(thread_options) if thread_options is not None else (1, torch.get_num_threads()))
        self.base_macs = base_macs
        self.batches = {bs: list(torch.split(images[: images_batch1 if bs == 1 else len(images)], bs))
                        for bs in SPEED_BATCHES}
        self.repeats = repeats
        self.example = images[:2]  # what the frozen variants are traced on
        self.base = prepare_variants(base, example=self.example)
        self.base_layout, self.base_mode, self.base_threads, self.base_seconds = {}, {}, {}, {}
        for bs in SPEED_BATCHES:
            best = self._fastest({"base": self.base}, bs)["base"]
            self.base_layout[bs], self.base_mode[bs], self.base_threads[bs], self.base_seconds[bs] = best

    def identity(self) -> dict[str, Any]:
        """What a timing depends on besides the two models: the machine (CPU model, cores, torch,
        threads: :func:`~s2dnas.cost.latency.device_fingerprint`), how this meter times
        (:data:`SPEED_METHOD`), its thread options, repeats and images per batch size. A network
        timed under an equal identity is not timed again by a later pass (:func:`timed_as`)."""
        from s2dnas.cost.latency import device_fingerprint

        return json.loads(json.dumps({"machine": device_fingerprint("cpu"), "method": SPEED_METHOD,
                                      "thread_options": list(self.thread_options), "repeats": self.repeats,
                                      "images": {str(bs): sum(len(b) for b in batches)
                                                 for bs, batches in self.batches.items()}}))

    def _fastest(self, variants: dict[str, dict[tuple[bool, str], Any]], bs: int
                 ) -> dict[str, tuple[str, str, int, float]]:
        """For each model of ``variants``: (layout, mode, threads, seconds per pass) of its fastest
        variant at batch size ``bs``, all variants interleaved."""
        best = time_fastest(variants, self.batches[bs], thread_counts=self.thread_options, repeats=self.repeats)
        return {name: ("channels_last" if key[0] else "nchw", key[1], threads, seconds)
                for name, (seconds, key, threads) in best.items()}

    def speedups(self, net: DynamicNet, thresholds: list[tuple[float, ...]]) -> list[dict[str, Any]]:
        """For each threshold setting (in order): measured speed-up over the base at each batch size
        of :data:`SPEED_BATCHES` (with the seconds, layout, mode and threads of both models), and
        the MAC ratio on the timed (batch-256) images themselves."""
        variants = prepare_variants(net, example=self.example)
        out: list[dict[str, Any]] = [{} for _ in thresholds]
        for bs, suffix in SPEED_BATCHES.items():
            for v in variants.values():
                v.set_thresholds(thresholds[0])
            best = self._fastest({"base": self.base, "dynamic": variants}, bs)  # choose the variants ...
            base_layout, base_mode, base_threads, _ = best["base"]
            layout, mode, threads, _ = best["dynamic"]
            base_cl, cl = base_layout == "channels_last", layout == "channels_last"
            pair = {"base": (self.base[(base_cl, base_mode)], in_layout(self.batches[bs], channels_last=base_cl)),
                    "dynamic": (variants[(cl, mode)], in_layout(self.batches[bs], channels_last=cl))}
            for i, t in enumerate(thresholds):  # ... then time each setting against the base, interleaved
                variants[(cl, mode)].set_thresholds(t)
                timed = time_interleaved(pair, repeats=self.repeats,
                                         threads={"base": base_threads, "dynamic": threads})
                out[i].update({f"measured_speedup{suffix}": timed["base"] / timed["dynamic"],
                               f"base_seconds{suffix}": timed["base"], f"seconds{suffix}": timed["dynamic"],
                               f"layout{suffix}": layout, f"mode{suffix}": mode, f"threads{suffix}": threads,
                               f"base_layout{suffix}": base_layout, f"base_mode{suffix}": base_mode,
                               f"base_threads{suffix}": base_threads})
        for i, t in enumerate(thresholds):
            net.set_thresholds(t)
            with torch.inference_mode():
                exits = torch.cat([net(b).exit_stage for b in self.batches[256]])
            out[i]["timed_macs_ratio"] = self.base_macs * len(exits) / net.macs_of(exits)
        net.set_thresholds(thresholds[0])
        return out


def measure_speed(meter: SpeedMeter, msnet: MultiStageNet, entry: dict[str, Any]) -> None:
    """Fill in the measured speed-ups of every point of ``entry`` (same thresholds as evaluated;
    points of equal thresholds are timed once)."""
    settings = list(dict.fromkeys(tuple(p["thresholds"]) for p in entry["points"]))
    policy = ExitPolicy(thresholds=settings[0], confidence=entry["points"][0]["confidence"])  # the points' measure
    net = DynamicNet(msnet.cpu().eval(), policy, stage_macs=entry["stage_macs"])
    timings = dict(zip(settings, meter.speedups(net, settings)))
    for p in entry["points"]:
        p.update(timings[tuple(p["thresholds"])])


def timed_as(entry: dict[str, Any], identity: dict[str, Any]) -> bool:
    """Whether every point of a cached ``entry`` was timed under ``identity`` (:meth:`SpeedMeter.identity`)."""
    return (entry.get("timing") or {}).get("identity") == identity and all(
        p.get(f"measured_speedup{suffix}") is not None for p in entry["points"] for suffix in SPEED_BATCHES.values())


def seed_entries(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A result row's entry per seed: its ``per_seed`` entries (a searched row), else the row itself."""
    return list((row.get("per_seed") or {"0": row}).values())


def timing_passes(data: dict[str, Any]) -> list[str]:
    """When each timing pass whose speed-ups a result file holds started (sorted; every row and
    seed, imported rows included; none for rows timed before passes were recorded)."""
    entries = [e for r in data["methods"].values() for e in seed_entries(r)]
    return sorted({e["timing"]["pass"] for e in entries if "pass" in (e.get("timing") or {})})
