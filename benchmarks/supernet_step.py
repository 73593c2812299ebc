"""One sandwich step of the super-network against one plain training step of the base model.

    python -m benchmarks.supernet_step --threads 1 --out benchmarks/results/supernet_step.json

ResNet-20 (1x28x28, 10 classes), batch 128, on the same batches. The plain step is what training
the base model costs (forward, cross-entropy, backward, SGD). The sandwich step trains the most
expensive, the cheapest and ``N`` sampled architectures (every stage of each: ``N + 2``
sub-network forward/backward passes) plus one teacher forward, then one SGD step; the parts are
timed separately: teacher forward, building the sampled architectures' views, forward/backward.
Median over ``--repeats`` steps after one warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from s2dnas._io import atomic_write_json
from s2dnas._device import machine_info
from s2dnas.space import Space
from s2dnas.train.sandwich import sandwich
from s2dnas.train.supernet import SuperNet
from s2dnas.config import SupernetConfig
from s2dnas.train.supernet_training import SupernetTrainer
from s2dnas.zoo import create_model


def _median(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        fn(i)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-sampled", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = create_model("resnet20", num_classes=10, in_channels=1)
    space = Space(base, input_shape=(1, 28, 28))
    batches = [(torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,)))
               for _ in range(args.repeats + 1)]

    plain = SuperNet(space).model.train()  # a copy of the base, so the teacher is not touched
    opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def plain_step(i: int) -> None:
        x, y = batches[i]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(plain(x), y).backward()
        opt.step()

    supernet = SuperNet(space).train()
    trainer = SupernetTrainer(supernet, config=SupernetConfig(num_sampled=args.num_sampled))
    gen = torch.Generator().manual_seed(0)
    parts: dict[str, list[float]] = {"teacher_forward": [], "build_views": []}

    steps = [sandwich(supernet.space, num_sampled=args.num_sampled, generator=gen) for _ in batches]
    for i, (x, _) in enumerate(batches):  # the parts, timed outside the step (the step repeats them)
        start = time.perf_counter()
        with torch.no_grad():
            supernet.teacher.eval()(x)
        parts["teacher_forward"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for arch in steps[i][2:]:
            trainer.view(arch)
        parts["build_views"].append(time.perf_counter() - start)

    def sandwich_step(i: int) -> None:
        x, y = batches[i]
        trainer.step(x, y, archs=steps[i], lr=0.01)

    t_plain = _median(plain_step, args.repeats)
    t_sandwich = _median(sandwich_step, args.repeats)
    result = {
        "machine": machine_info(), "model": "resnet20", "input": [1, 28, 28], "batch_size": args.batch_size,
        "threads": args.threads, "num_sampled": args.num_sampled, "subnet_passes": args.num_sampled + 2,
        "plain_step_s": t_plain, "sandwich_step_s": t_sandwich, "ratio": t_sandwich / t_plain,
        "teacher_forward_s": statistics.median(parts["teacher_forward"][1:]),
        "build_sampled_views_s": statistics.median(parts["build_views"][1:]),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
