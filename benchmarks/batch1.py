"""Batch 1: the base and the dynamic network under each way of running them, side by side.

    python -m benchmarks.batch1 --threads 1 --onnx [--compile] --out benchmarks/results/batch1.json

The shipped ResNet-20 (Fashion-MNIST, 28x28) cut into the default 3 stages with the configured
channel multiple 8 (split 1/4, 1/4, 1/2, full concat), thresholds set so that about 56/35/9% of
the images leave at stages 1/2/3 (the demo's exits), no training (timing only). Approaches, each
applied to BOTH models (BN folded everywhere):

- ``eager_nchw`` / ``eager_channels_last``: eager PyTorch (the DynamicNet executor, whose
  batch-1 path skips gathering);
- ``frozen``: every model / stage traced and ``torch.jit.freeze``-d;
- ``frozen_onednn``: the same plus ``torch.jit.optimize_for_inference`` (oneDNN convolutions);
- ``compiled`` (``--compile``): ``torch.compile``, static shapes (minutes to compile on 2 cores);
- ``onnxruntime`` (``--onnx``): the base as one graph, the dynamic network as exported stages
  with ``s2dnas_runtime``'s numpy exit rule.

Timed interleaved (every approach, each pass in turn, median of the rounds) so that load from
other processes hits all of them alike; the ratio is base / dynamic within one approach, and
"at its best" is each model's fastest approach.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections import defaultdict
from typing import Any, Callable

import torch

from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.bench.speed import prepare_dynamic, prepare_static
from s2dnas.dynamic import DynamicNet
from s2dnas.space import Space
from s2dnas.zoo import create_model
from s2dnas.zoo.weights import get_weights_meta, load_pretrained

from benchmarks.latency import thresholds_for


def _onednn(module: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.optimize_for_inference(module)


def _approaches(base: torch.nn.Module, net: DynamicNet, example: torch.Tensor, *, compile: bool,
                ) -> dict[str, tuple[Callable, Callable, bool]]:
    out: dict[str, tuple[Callable, Callable, bool]] = {}
    for cl in (False, True):
        out["eager_" + ("channels_last" if cl else "nchw")] = (
            prepare_static(base, channels_last=cl), prepare_dynamic(net, channels_last=cl), cl)
    out["frozen"] = (prepare_static(base, channels_last=False, freeze_on=example),
                     prepare_dynamic(net, channels_last=False, freeze_on=example), False)
    dyn = prepare_dynamic(net, channels_last=False, freeze_on=example)
    for s, stage in enumerate(dyn.msnet.stages):
        dyn.msnet.stages[s] = _onednn(stage)
    out["frozen_onednn"] = (_onednn(prepare_static(base, channels_last=False, freeze_on=example)), dyn, False)
    if compile:
        start = time.time()
        b, d = prepare_static(base, channels_last=False), prepare_dynamic(net, channels_last=False)
        b = torch.compile(b, dynamic=False)
        for s, stage in enumerate(d.msnet.stages):
            d.msnet.stages[s] = torch.compile(stage, dynamic=False)
        out["compiled"] = (b, d, False)
        print(f"torch.compile set up in {time.time() - start:.0f} s (compiles on first calls)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/batch1.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--onnx", action="store_true", help="also time the exported ONNX Runtime path")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = load_pretrained(create_model("resnet20", num_classes=10, in_channels=1),
                           get_weights_meta("resnet20", num_classes=10, in_channels=1)).eval()
    space = Space(base, input_shape=(1, 28, 28), channel_multiple=8)
    msnet = space.build(space.default_architecture()).eval()
    images = torch.randn(512, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    net = DynamicNet(msnet, thresholds_for(msnet, images)).eval()
    x = images[: args.images]
    with torch.inference_mode():
        ref = net(x)
    fractions = (torch.bincount(ref.exit_stage, minlength=3).float() / len(x)).tolist()
    singles = list(torch.split(x, 1))
    runners = _approaches(base, net, images[:2], compile=args.compile)
    check = {}
    with torch.inference_mode():  # warm-up (compiles) and the same exits everywhere
        for name, (b, d, cl) in runners.items():
            ins = [s.contiguous(memory_format=torch.channels_last) if cl else s for s in singles]
            for s in ins[:8]:
                b(s)
                d(s)
            exits = torch.cat([d(s).exit_stage for s in ins])
            check[name] = bool(torch.equal(exits, ref.exit_stage))
    if args.onnx:
        import tempfile

        import numpy as np

        from s2dnas.bench.onnx_speed import ort_session
        from s2dnas.export.onnx import export_dynamic, export_stage_onnx
        from s2dnas_runtime import OnnxDynamicNet

        tmp = tempfile.mkdtemp(prefix="s2dnas-b1-")
        export_dynamic(msnet, tmp + "/d", policy=net.policy, torchscript=False, check=False)
        ort_net = OnnxDynamicNet(tmp + "/d", num_threads=args.threads)
        export_stage_onnx(base, (torch.zeros(2, 1, 28, 28),), tmp + "/base.onnx", input_names=["image"],
                          output_names=["logits"])
        ort_base = ort_session(tmp + "/base.onnx", threads=args.threads)
        arrays = [np.ascontiguousarray(s.numpy()) for s in singles]
        check["onnxruntime"] = bool(np.array_equal(np.concatenate([ort_net.predict(a)[1] for a in arrays]),
                                                   ref.exit_stage.numpy()))
        runners["onnxruntime"] = (lambda a: ort_base.run(["logits"], {"image": a}), ort_net.predict, None)
    times: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, (b, d, cl) in runners.items():
                ins = arrays if cl is None else [s.contiguous(memory_format=torch.channels_last) if cl else s
                                                 for s in singles]
                for tag, fn in (("base", b), ("dynamic", d)):
                    start = time.perf_counter()
                    for s in ins:
                        fn(s)
                    times[f"{name}/{tag}"].append((time.perf_counter() - start) / len(ins))
    med = {k: statistics.median(v) for k, v in times.items()}
    table = {}
    for name in runners:
        b, d = med[f"{name}/base"], med[f"{name}/dynamic"]
        table[name] = {"base_us": b * 1e6, "dynamic_us": d * 1e6, "ratio": b / d, "same_exits": check[name]}
        print(f"{name:20s} base {b * 1e6:8.0f} us  dynamic {d * 1e6:8.0f} us  base/dynamic {b / d:.2f}x  "
              f"exits {'same' if check[name] else 'DIFFER'}")
    torch_names = [n for n in runners if n != "onnxruntime"]
    best = {tag: min(torch_names, key=lambda n: med[f"{n}/{tag}"]) for tag in ("base", "dynamic")}
    best_ratio = med[f"{best['base']}/base"] / med[f"{best['dynamic']}/dynamic"]
    print(f"PyTorch, each at its best: base {best['base']}, dynamic {best['dynamic']}: {best_ratio:.2f}x")
    load = open("/proc/loadavg").read().split()[:3]
    atomic_write_json(args.out, {"machine": machine_info(), "load_average": load, "exit_fractions": fractions,
                                 "images": len(singles), "rounds": args.rounds, "approaches": table,
                                 "pytorch_best": {**best, "ratio": best_ratio}, "all_rounds": dict(times)})
    print(json.dumps({"written": args.out}))


if __name__ == "__main__":
    main()
