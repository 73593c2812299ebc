"""``s2dnas profile``: time each stage of a dynamic model on this machine and cache the numbers."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from s2dnas._io import atomic_write_json
from s2dnas.cli.common import add_device_arg
from s2dnas.errors import ConfigError

__all__ = ["add_parser", "run", "parse_fractions"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure each stage's latency on this machine (cached) and predict the "
                                       "dynamic model's expected latency",
                       description="Times every stage of a dynamic model on whole batches on the target device "
                                   "(BN folded, faster memory format), caches the timings per machine and software "
                                   "version, and predicts the expected latency per image from the exit fractions "
                                   "(the model's calibration, or --exit-fractions).")
    p.add_argument("model_dir", help="a dynamic model directory (s2dnas run writes RUN/model)")
    p.add_argument("--batch-sizes", default="1,32,256", help="comma-separated (default 1,32,256)")
    p.add_argument("--exit-fractions", default=None,
                   help="comma-separated fraction of inputs leaving at each stage (default: the calibration's)")
    add_device_arg(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cache-dir", default=None, help="latency cache folder (default: $S2DNAS_CACHE_DIR/latency or "
                                                     "~/.cache/s2dnas/latency)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=run)


def parse_fractions(text: str, *, num_stages: int) -> list[float]:
    """``"0.5,0.3,0.2"`` -> floats; one per stage, each in [0, 1], summing to 1."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"Expected --exit-fractions like 0.5,0.3,0.2, but got {text!r}") from None
    if len(values) != num_stages or any(not 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 1e-3:
        raise ConfigError(f"Expected {num_stages} exit fractions in [0, 1] summing to 1 (one per stage), but got "
                          f"{text!r}")
    total = sum(values)
    return [v / total for v in values]


def _calibrated_fractions(net: Any) -> list[float] | None:
    """The exit fractions the model's calibration measured on val (``None`` without a calibration)."""
    record = net.policy.calibration or {}
    fractions = record.get("exit_fractions")
    return [float(v) for v in fractions] if fractions else None


def run(args: argparse.Namespace) -> int:
    from s2dnas._device import resolve_device
    from s2dnas.cost.latency import LatencyCache, device_fingerprint, measure_stages, predict_latency
    from s2dnas.dynamic import load

    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"Expected --batch-sizes like 1,32,256, but got {args.batch_sizes!r}") from None
    if not batch_sizes or min(batch_sizes) < 1 or args.repeats < 1:
        raise ConfigError("Expected positive --batch-sizes and --repeats")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"Expected --threads >= 1, but got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    net = load(args.model_dir, device=device).eval()
    msnet = net.msnet
    fractions = (parse_fractions(args.exit_fractions, num_stages=msnet.num_stages) if args.exit_fractions
                 else _calibrated_fractions(net))
    cache = LatencyCache(device_fingerprint(device), directory=args.cache_dir)
    fp = cache.fingerprint
    print(f"{args.model_dir} on {fp.get('cuda_device') or fp['cpu']}, torch {fp['torch']}, {fp['threads']} threads; "
          f"cache {cache.path}")
    header = "batch | layout | " + " | ".join(f"stage {s + 1} ms/img" for s in range(msnet.num_stages))
    print(header + (" | predicted ms/img" if fractions else ""))
    rows = []
    for b in batch_sizes:
        lat = measure_stages(msnet, batch_size=b, device=device, cache=cache, repeats=args.repeats, progress=True)
        pred = (predict_latency(msnet, batch_size=b, exit_fractions=fractions, device=device,
                                channels_last=lat.channels_last, cache=cache, repeats=args.repeats)
                if fractions else None)
        layout = "channels_last" if lat.channels_last else "nchw"
        cells = " | ".join(f"{1e3 * t:.3f}" for t in lat.seconds_per_input)
        print(f"{b:5d} | {layout} | {cells}" + (f" | {1e3 * pred:.3f}" if pred is not None else ""))
        rows.append({**lat.to_dict(), "seconds_per_input": lat.seconds_per_input,
                     "predicted_seconds_per_input": pred})
    if fractions is None:
        print("no exit fractions (no calibration in the model; pass --exit-fractions) - prediction skipped")
    print(f"cache: {cache.hits} hit(s), {cache.misses} timed")
    if args.json:
        atomic_write_json(args.json, {"model_dir": args.model_dir, "fingerprint": fp, "exit_fractions": fractions,
                                      "rows": rows})
    return 0
