"""A VGG super-network's sandwich step with the shared views slicing their weights by advanced
indexing (before 2026-12-04) and by ``index_select`` (since), side by side in one process.

    python -m benchmarks.shared_slicing --threads 2 --steps 5 --out benchmarks/results/shared_slicing.json

``benchmarks.models:vgg16_bn_w50`` (1x28x28, 10 classes, random weights), the default space and
super-network recipe; the same batches and sandwich architectures for both, a fresh super-network
per variant and round, alternating variants over ``--rounds``; median step time after one warm-up
step per round, at each ``--batch-sizes``. The "before" forwards are kept here as the reference,
without the old ones' branches for non-zero padding modes and affine-free batch norms, which VGG
does not take.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.models import vgg16_bn_w50
from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.config import SpaceConfig, SupernetConfig
from s2dnas.space import modules
from s2dnas.space.factory import build_space
from s2dnas.train.sandwich import sandwich
from s2dnas.train.supernet import SuperNet
from s2dnas.train.supernet_training import SupernetTrainer


def _conv_indexing(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    b = self.base
    w = b.weight[self.out_idx]
    if b.groups == 1:
        w = w[:, self.in_idx]
    bias = b.bias[self.out_idx] if b.bias is not None else None
    return F.conv2d(x, w, bias, b.stride, b.padding, b.dilation, self.groups)


def _linear_indexing(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    b = self.base
    bias = b.bias[self.out_idx] if b.bias is not None else None
    return F.linear(x, b.weight[self.out_idx][:, self.in_idx], bias)


def _bn_indexing(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    b = self.base
    return F.batch_norm(x, None, None, b.weight[self.out_idx], b.bias[self.out_idx], True, 0.0, b.eps)


VARIANTS = {
    "advanced_indexing": (_conv_indexing, _linear_indexing, _bn_indexing),
    "index_select": (modules.SharedConv2d.forward, modules.SharedLinear.forward, modules.SharedBatchNorm.forward),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="128,8")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = build_space(vgg16_bn_w50(num_classes=10, in_channels=1), config=SpaceConfig(), input_shape=(1, 28, 28))
    results = []
    try:
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            gen = torch.Generator().manual_seed(0)
            steps = [(torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,)),
                      sandwich(space, num_sampled=2, generator=gen)) for _ in range(args.steps + 1)]
            times: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, (conv, linear, bn) in VARIANTS.items():
                    modules.SharedConv2d.forward, modules.SharedLinear.forward = conv, linear
                    modules.SharedBatchNorm.forward = bn
                    trainer = SupernetTrainer(SuperNet(space).train(), config=SupernetConfig())
                    for i, (x, y, archs) in enumerate(steps):
                        start = time.perf_counter()
                        trainer.step(x, y, archs=archs, lr=0.01)
                        if i:
                            times[name].append(time.perf_counter() - start)
            median = {name: statistics.median(t) for name, t in times.items()}
            results.append({"batch_size": batch, "median_step_s": median, "steps_timed": len(times["index_select"]),
                            "speedup": median["advanced_indexing"] / median["index_select"]})
            print(json.dumps(results[-1]), flush=True)
    finally:
        modules.SharedConv2d.forward, modules.SharedLinear.forward, modules.SharedBatchNorm.forward = \
            VARIANTS["index_select"]
    out = {"machine": machine_info(), "model": "benchmarks.models:vgg16_bn_w50", "threads": args.threads,
           "num_sampled": 2, "steps": args.steps, "rounds": args.rounds, "results": results}
    if args.out:
        atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
