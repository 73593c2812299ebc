"""Does the measured speed-up follow the MAC ratio once the stages are wide enough?

The executor's overheads are the same for any model; what changes with width is how fast a CPU
runs a thin convolution (see conv_efficiency.py). This benchmark times the hand-picked S2DNAS
architecture (split 1/4, 1/4, 1/2, full concat) of ResNet-20 and VGG-16-BN at several widths
against its base, with the thresholds set so that the same fractions of the images leave at each
stage (by default the demo model's 55% / 35% / 10%). Weights are random: speed does not depend on
them, only on the shapes and the exit fractions, which are fixed here.

    python -m benchmarks.width_scaling --out benchmarks/results/width_scaling.json
"""
from __future__ import annotations

import argparse
import torch

from s2dnas._io import atomic_write_json
from s2dnas._device import machine_info
from s2dnas.bench.speed import benchmark_speed
from s2dnas.dynamic import DynamicNet
from s2dnas.dynamic.confidence import confidence
from s2dnas.space import Space
from s2dnas.zoo import create_model

CASES = [("resnet20", 1.0), ("resnet20", 2.0), ("resnet20", 4.0),
         ("vgg16_bn", 0.25), ("vgg16_bn", 0.5), ("vgg16_bn", 1.0)]


def thresholds_for(net: DynamicNet, images: torch.Tensor, exits: list[float]) -> list[float]:
    """Thresholds under which ``exits[s]`` of ``images`` leave at stage ``s`` (max-softmax)."""
    with torch.inference_mode():
        logits = net.msnet(images)
    if len(exits) != net.num_stages or min(exits) < 0 or abs(sum(exits) - 1) > 1e-6:
        raise SystemExit(f"error: expected {net.num_stages} exit fractions >= 0 summing to 1, got {exits}")
    remaining = torch.ones(len(images), dtype=torch.bool)
    out = []
    for s, frac in enumerate(exits[:-1]):
        conf = confidence(logits[s], "max_softmax")
        pool = conf[remaining]
        want = min(round(frac * len(images)), len(pool))  # leave here, out of everyone
        t = float(pool.sort(descending=True).values[want - 1]) if want > 0 else 2.0
        out.append(t)
        remaining &= conf < t
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/width_scaling.json")
    p.add_argument("--exits", default="0.55,0.35,0.10", help="fraction of images leaving at each stage")
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    exits = [float(v) for v in args.exits.split(",")]
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.num_images, 1, 28, 28, generator=gen)
    rows = []
    for name, width in CASES:
        torch.manual_seed(0)
        base = create_model(name, num_classes=10, in_channels=1, width_mult=width).eval()
        space = Space(base, input_shape=(1, 28, 28), num_stages=len(exits))
        msnet = space.build(space.default_architecture()).eval()
        net = DynamicNet(msnet, [2.0] * (len(exits) - 1)).eval()
        net.set_thresholds(thresholds_for(net, images, exits))
        row = benchmark_speed(base, net, images, batch_sizes=(256,), repeats=args.repeats,
                              base_macs=space.base_macs())[0].to_dict()
        with torch.inference_mode():
            got = torch.bincount(net(images).exit_stage, minlength=len(exits)).double() / len(images)
        rows.append({"model": name, "width_mult": width, "base_macs": space.base_macs(),
                     "stage_macs": net.stage_macs, "exit_fractions": got.tolist(), **row})
        print(f"{name} x{width}: base {space.base_macs() / 1e6:.1f}M MACs, exits {[round(v, 2) for v in got.tolist()]}, "
              f"speed-up {row['measured_speedup']:.2f}x at MAC ratio {row['macs_ratio']:.2f}x "
              f"({row['speedup_over_macs_ratio']:.2f})", flush=True)
    atomic_write_json(args.out, {"machine": machine_info(),
                                 "exits": exits, "rows": rows,
                                 "command": "python -m benchmarks.width_scaling"})


if __name__ == "__main__":
    main()
