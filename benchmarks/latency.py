"""Granularity and the latency cost model, measured on this machine (issue 13, items 1 and 3).

    python -m benchmarks.latency --threads 1 --out benchmarks/results/latency.json

Part A (granularity): one 3x3 convolution (C in, C out, stride 1, BN folded away) at the
resolutions of ResNet-20 on Fashion-MNIST (28, 14, 7), for channel counts around the slice sizes
a split produces, at batch 1, 32 and 256, in the faster memory format. Read: does the time step
at multiples of some channel count (then slices between steps waste nothing by being rounded up)?

Part B (cost model): the shipped ResNet-20 cut into 3 stages (several architectures, channel
multiple 1 and 8), exits at about 56/35/9% (the demo's) by thresholds set on the images used.
For each batch size the DynamicNet's measured seconds per image are compared with four
predictions: MACs (base time x expected MACs / base MACs), a per-layer lookup table (each conv
and linear timed alone, summed per stage), per-stage timings at the full batch (the cost vector
the calibration uses), and per-stage timings at the batch each stage really sees (B x reach).
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

from s2dnas._io import atomic_write_json
from s2dnas._device import machine_info
from s2dnas.cost import count_macs
from s2dnas.cost.latency import expected_latency, fold_bn, measure_stages, time_call
from s2dnas.dynamic import DynamicNet
from s2dnas.space import Space
from s2dnas.zoo import create_model

SWEEP = {28: (2, 4, 6, 8, 10, 12, 14, 16), 14: (4, 8, 12, 16, 20, 24, 28, 32), 7: (8, 16, 24, 32, 40, 48, 56, 64)}
EXITS = (0.56, 0.35, 0.09)


def conv_seconds(channels: int, size: int, batch: int, *, repeats: int) -> dict[str, float]:
    """Median seconds of one 3x3 conv, both layouts."""
    conv = nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(batch, channels, size, size)
    out = {}
    for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        m, xi = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        out[layout] = time_call(lambda: m(xi), warmup=2, repeats=repeats)
    return out


def part_a(batches: tuple[int, ...]) -> list[dict[str, object]]:
    rows = []
    for batch in batches:
        for size, channels in SWEEP.items():
            for c in channels:
                t = conv_seconds(c, size, batch, repeats=5 if batch < 256 else 3)
                best = min(t.values())
                macs = batch * c * c * 9 * size * size
                rows.append({"batch": batch, "size": size, "channels": c, **t, "best": best,
                             "gmacs_per_second": macs / best / 1e9})
                print(f"A b={batch:3d} {size:2d}x{size:<2d} C={c:2d}: {best * 1e6:9.1f} us  "
                      f"{macs / best / 1e9:6.1f} GMAC/s", flush=True)
    return rows


def thresholds_for(msnet, x: torch.Tensor) -> list[float]:
    """Thresholds that make about EXITS[s] of ``x`` leave at stage s (quantiles of confidence)."""
    with torch.inference_mode():
        logits = msnet(x)
    conf = [torch.softmax(z, 1).max(1).values for z in logits[:-1]]
    alive = torch.ones(len(x), dtype=torch.bool)
    out, left = [], 1.0
    for s, c in enumerate(conf):
        share = EXITS[s] / left  # of those still in flight
        t = float(torch.quantile(c[alive], 1 - share)) if share < 1 else 0.0
        out.append(t)
        alive &= c < t
        left -= EXITS[s]
    return out


def layer_table(stage: nn.Module, args: tuple[torch.Tensor, ...], table: dict, *, repeats: int) -> float:
    """Per-layer lookup table: each conv/linear of the BN-folded stage timed alone, summed."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(inp[0].shape)))
             for n, m in stage.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        stage(*args)
    for h in hooks:
        h.remove()
    mods = dict(stage.named_modules())
    total = 0.0
    for name, shape in shapes.items():
        m = mods[name]
        key = (repr(m), shape)
        if key not in table:
            x = torch.randn(shape)
            table[key] = time_call(lambda: m(x), warmup=1, repeats=repeats)
        total += table[key]
    return total


def measured_dynamic(net: DynamicNet, images: torch.Tensor, batch: int, *, repeats: int) -> float:
    batches = list(torch.split(images, batch))

    def one_pass() -> None:
        for b in batches:
            net(b)

    return time_call(one_pass, warmup=1, repeats=repeats) / len(images)


def part_b(batches: tuple[int, ...], *, num_archs: int) -> list[dict[str, object]]:
    from s2dnas.zoo.weights import get_weights_meta, load_pretrained

    base = load_pretrained(create_model("resnet20", num_classes=10, in_channels=1),
                           get_weights_meta("resnet20", num_classes=10, in_channels=1)).eval()
    base_folded = fold_bn(base)
    base_macs = count_macs(base, torch.zeros(1, 1, 28, 28))
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(512, 1, 28, 28, generator=gen)
    rows = []
    table: dict = {}
    for multiple in (1, 8):
        space = Space(base, input_shape=(1, 28, 28), channel_multiple=multiple)
        archs = [space.default_architecture()] + [space.sample(gen) for _ in range(num_archs - 1)]
        for a_i, arch in enumerate(archs):
            msnet = space.build(arch).eval()
            net = DynamicNet(msnet, thresholds_for(msnet, images)).eval()
            folded = DynamicNet(msnet, net.thresholds).eval()
            for s in range(msnet.num_stages):
                folded.msnet.stages[s] = fold_bn(msnet.stages[s])
            with torch.inference_mode():
                exits = folded(images).exit_stage
            fr = (torch.bincount(exits, minlength=3).float() / len(images)).tolist()
            reach = [1.0, 1 - fr[0], fr[2]]
            exp_macs = folded.macs_of(exits) / len(images)
            for batch in batches:
                n = min(len(images), 64 if batch == 1 else 512)
                imgs = images[:n]
                reps = 3
                meas = measured_dynamic(folded, imgs, batch, repeats=reps)
                base_s = time_call(lambda: [base_folded(b) for b in torch.split(imgs, batch)], warmup=1,
                                   repeats=reps) / n
                full = measure_stages(msnet, batch_size=batch, channels_last=False, repeats=reps)
                per_stage = expected_latency(stage_seconds=full.seconds_per_input, exit_fractions=fr)
                at_reach = 0.0
                for s in range(3):
                    b_s = max(1, math.ceil(batch * reach[s]))
                    if b_s == batch:
                        at_reach += reach[s] * full.seconds_per_input[s]
                    elif reach[s] > 0:
                        t = measure_stages(msnet, batch_size=b_s, channels_last=False, repeats=reps)
                        at_reach += reach[s] * t.seconds[s] / b_s
                lut_stage = []
                x = torch.randn(batch, 1, 28, 28)
                feats: dict[str, torch.Tensor] = {}
                with torch.inference_mode():
                    for s in range(3):
                        st = fold_bn(msnet.stages[s])
                        args = (x, *[feats[k] for k in msnet.reads[s]])
                        lut_stage.append(layer_table(st, args, table, repeats=reps) / batch)
                        feats.update(zip(msnet.writes[s], st(*args)[1:]))
                lut = expected_latency(stage_seconds=lut_stage, exit_fractions=fr)
                macs_pred = base_s * exp_macs / base_macs
                row = {"multiple": multiple, "arch": a_i, "splits": [list(p) for p in arch.splits],
                       "concat": list(arch.concat), "batch": batch, "exit_fractions": fr,
                       "stage_macs": folded.stage_macs, "expected_macs": exp_macs, "base_macs": base_macs,
                       "base_s": base_s, "measured_s": meas, "pred_macs_s": macs_pred, "pred_lut_s": lut,
                       "pred_stage_s": per_stage, "pred_stage_at_reach_s": at_reach,
                       "stage_seconds_per_input": full.seconds_per_input}
                rows.append(row)
                err = lambda p: 100 * (p / meas - 1)  # noqa: E731
                print(f"B m={multiple} arch {a_i} b={batch:3d}: measured {meas * 1e6:8.1f} us/img (base "
                      f"{base_s * 1e6:8.1f}); error MACs {err(macs_pred):+6.1f}%  LUT {err(lut):+6.1f}%  "
                      f"stage {err(per_stage):+6.1f}%  stage@reach {err(at_reach):+6.1f}%", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/latency.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--archs", type=int, default=3, help="architectures per channel multiple (default first)")
    p.add_argument("--skip-a", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    a = [] if args.skip_a else part_a((1, 32, 256))
    b = part_b((1, 32, 256), num_archs=args.archs)
    atomic_write_json(args.out, {"machine": machine_info(), "conv_sweep": a, "cost_model": b,
                                 "seconds": time.perf_counter() - start})
    print(json.dumps({"written": args.out, "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
