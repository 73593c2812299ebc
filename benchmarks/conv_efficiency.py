"""Why thin stages do not run as fast as their MACs promise on a CPU: 3x3 convolution throughput
(GMAC/s) against the channel count, at the resolutions of ResNet-20 on Fashion-MNIST.

    python -m benchmarks.conv_efficiency --out benchmarks/results/conv_efficiency.json

Each conv (C in, C out, 3x3, stride 1, BN folded away) runs on a batch of 256 in NCHW and in
channels-last under inference mode; the faster layout counts. A stage cut to a quarter of the
channels has 1/16 of the MACs but runs them several times slower per MAC.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from s2dnas._io import atomic_write_json
from s2dnas._device import machine_info


def gmacs_per_second(channels: int, size: int, *, batch: int = 256, repeats: int = 10) -> dict[str, float]:
    """Throughput of one 3x3 conv in both layouts."""
    conv = nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(batch, channels, size, size)
    macs = batch * channels * channels * 9 * size * size
    out = {}
    for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        m, xi = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        times = []
        with torch.inference_mode():
            for i in range(repeats + 2):
                start = time.perf_counter()
                m(xi)
                if i >= 2:
                    times.append(time.perf_counter() - start)
        out[layout] = macs / statistics.median(times) / 1e9
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/conv_efficiency.json")
    args = p.parse_args()
    rows = []
    for size in (28, 14, 7):
        for c in (2, 4, 6, 8, 12, 16, 24, 32, 48, 64):
            r = gmacs_per_second(c, size)
            rows.append({"size": size, "channels": c, **r, "best": max(r.values())})
            print(f"{size}x{size} C={c:3d}: nchw {r['nchw']:6.1f}  channels_last {r['channels_last']:6.1f} GMAC/s",
                  flush=True)
    atomic_write_json(args.out, {"machine": machine_info(), "batch": 256, "rows": rows})
    print(json.dumps({"written": args.out}))


if __name__ == "__main__":
    main()
