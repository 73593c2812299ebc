"""Where the dynamic network's time goes at batch 1, and what the batch-1 fast path removes.

    python -m benchmarks.batch1 --threads 1 --out benchmarks/results/batch1.json

The shipped ResNet-20 (Fashion-MNIST, 28x28) cut into the default 3 stages (split 1/4, 1/4, 1/2,
full concat), thresholds set so that about 56/35/9% of the images leave at stages 1/2/3 (the
demo's exits), no training (timing only). Everything BN-folded, NCHW. Timed interleaved (base,
executor, fast path, ONNX Runtime, each pass in turn, median of the rounds) so that load from
other processes hits all of them alike; then one torch.profiler pass of the executor splits its
time into stage compute and routing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch

from s2dnas._io import atomic_write_json
from s2dnas.bench.fast import FastDynamicNet
from s2dnas.bench.speed import prepare_dynamic, prepare_static
from s2dnas._device import machine_info
from s2dnas.dynamic import DynamicNet
from s2dnas.space import Space
from s2dnas.zoo import create_model
from s2dnas.zoo.weights import get_weights_meta, load_pretrained

from benchmarks.latency import thresholds_for

ROUTING = ("aten::nonzero", "aten::index_select", "aten::cat", "aten::index_copy", "aten::_softmax",
           "aten::max", "aten::ge", "aten::full_like", "aten::empty_like", "aten::arange", "aten::squeeze",
           "aten::logical_not", "aten::bitwise_not", "aten::item", "aten::_local_scalar_dense")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/batch1.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--onnx", action="store_true", help="also time the exported ONNX Runtime path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = load_pretrained(create_model("resnet20", num_classes=10, in_channels=1),
                           get_weights_meta("resnet20", num_classes=10, in_channels=1)).eval()
    space = Space(base, input_shape=(1, 28, 28))
    msnet = space.build(space.default_architecture()).eval()
    images = torch.randn(512, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    net = DynamicNet(msnet, thresholds_for(msnet, images)).eval()
    x = images[: args.images]
    with torch.inference_mode():
        exits = net(x).exit_stage
    fractions = (torch.bincount(exits, minlength=3).float() / len(x)).tolist()
    runners = {"base": prepare_static(base, channels_last=False), "executor": prepare_dynamic(net, channels_last=False)}
    runners["fast"] = FastDynamicNet(runners["executor"])
    singles = list(torch.split(x, 1))
    if args.onnx:
        import tempfile

        import numpy as np

        from s2dnas.export.onnx import export_dynamic
        from s2dnas_runtime import OnnxDynamicNet

        tmp = tempfile.mkdtemp(prefix="s2dnas-b1-")
        export_dynamic(msnet, tmp + "/d", thresholds=net.thresholds, confidence=net.confidence, torchscript=False,
                       check=False)
        ort_net = OnnxDynamicNet(tmp + "/d", num_threads=args.threads)
        from s2dnas.bench.onnx_speed import ort_session
        from s2dnas.export.onnx import export_stage_onnx

        export_stage_onnx(base, (torch.zeros(2, 1, 28, 28),), tmp + "/base.onnx", input_names=["image"],
                          output_names=["logits"])
        ort_base = ort_session(tmp + "/base.onnx", threads=args.threads)
        arrays = [np.ascontiguousarray(s.numpy()) for s in singles]
    times: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode():
        for name, fn in runners.items():  # warm-up
            for s in singles[:8]:
                fn(s)
        for _ in range(args.rounds):
            for name, fn in runners.items():
                start = time.perf_counter()
                for s in singles:
                    fn(s)
                times[name].append((time.perf_counter() - start) / len(singles))
            if args.onnx:
                start = time.perf_counter()
                for a in arrays:
                    ort_net.predict(a)
                times["onnxruntime"].append((time.perf_counter() - start) / len(arrays))
                start = time.perf_counter()
                for a in arrays:
                    ort_base.run(["logits"], {"image": a})
                times["onnxruntime_base"].append((time.perf_counter() - start) / len(arrays))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:12s} {v * 1e6:8.1f} us/image  ({med['base'] / v:.2f}x the base)")
    # Profile one pass of the executor: stage compute vs routing.
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in singles:
            runners["executor"](s)
    by_op = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(by_op.values())
    routing = sum(v for k, v in by_op.items() if k in ROUTING)
    conv = sum(v for k, v in by_op.items() if "conv" in k or k in ("aten::mkldnn_convolution", "aten::addmm"))
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:15]
    print(f"profiled executor: routing ops {100 * routing / total:.1f}% of self CPU time, conv/linear "
          f"{100 * conv / total:.1f}%")
    for k, v in top:
        print(f"  {k:40s} {100 * v / total:5.1f}%")
    atomic_write_json(args.out, {"machine": machine_info(), "exit_fractions": fractions, "images": len(singles),
                                 "seconds_per_image": med, "all_rounds": dict(times),
                                 "profile_share": {"routing": routing / total, "conv_linear": conv / total},
                                 "profile_top": [[k, v / total] for k, v in top]})
    print(json.dumps({"written": args.out}))


if __name__ == "__main__":
    main()
