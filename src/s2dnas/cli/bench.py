"""``s2dnas bench``: time the static base model and a DynamicNet in one process, same inputs."""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from s2dnas._device import machine_info, resolve_device
from s2dnas._io import atomic_write_json
from s2dnas.cli.common import add_data_args, check_model_dir
from s2dnas.cost import count_macs
from s2dnas.data import check_splits_fit, splits_for_model
from s2dnas.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from s2dnas.bench.speed import SpeedRow
    from s2dnas.dynamic.executor import DynamicNet

__all__ = ["add_parser", "run", "slower_than_base", "best_across_runtimes"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the speed-up of a dynamic model over its base model",
                       description="Times the static base model and the DynamicNet on the same test images "
                                   "(warm-up, repeats, median) at several batch sizes; prints the measured "
                                   "speed-up next to the MAC ratio.")
    p.add_argument("model_dir", help="a dynamic model directory (s2dnas run writes RUN/model)")
    p.add_argument("--base-weights", default=None,
                   help="the base model's model.safetensors (default: the run's model.weights when DIR is "
                        "RUN/model, else the shipped pretrained weights)")
    add_data_args(p, stored=True)
    p.add_argument("--num-images", type=int, default=2048, help="test images to time (default 2048)")
    p.add_argument("--batch-sizes", default="1,32,256", help="comma-separated (default 1,32,256)")
    p.add_argument("--max-batches", type=int, default=256, help="batches per pass at most (bounds batch size 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile both models (slow to start)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--thread-options", default=None,
                   help="comma-separated intra-op thread counts tried for each model and runtime, the fastest kept "
                        "(default: 1 and --threads; at batch 1 thin stages can run faster on one thread)")
    p.add_argument("--no-onnx", action="store_true",
                   help="skip the ONNX Runtime rows (default: timed when onnxruntime is installed)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for the PyTorch rows (default: cpu)")
    p.add_argument("--profile", action="store_true",
                   help="also time each stage on whole batches of 256 and print its share of the MACs and of the time")
    p.add_argument("--predict", action="store_true",
                   help="also predict each batch size's speed with the latency cost model (stages timed alone, "
                        "weighted by the exits on the images timed at that batch size) and print its error "
                        "against the measurement")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=run)


def run_base_weights(model_dir: Path) -> str | None:
    """The base weights of the run that wrote ``model_dir`` (``RUN/config.yaml``'s model.weights), if any.

    A relative path is taken from the directory ``s2dnas run`` was started in: the run directory
    less its recorded ``out`` (``out: runs/demo`` and RUN ``/home/u/runs/demo`` give ``/home/u``),
    wherever bench runs from. When that cannot be told (``out`` absolute, or not the end of the run
    directory's path because the run was moved), from the current directory.

    Raises:
        CheckpointError: the recorded file is not there (one line naming it and ``--base-weights``).
    """
    config = model_dir.parent / "config.yaml"
    if not config.is_file():
        return None
    from s2dnas.config import load_config

    cfg = load_config(str(config), [])
    if cfg.model.weights is None:
        return None
    path = Path(cfg.model.weights).expanduser()
    if not path.is_absolute():
        path = (_launch_dir(model_dir.parent, cfg.out) or Path.cwd()) / path
    if not path.is_file():
        raise CheckpointError(f"Expected the base weights that {config} records (model.weights: "
                              f"{cfg.model.weights}) at {path}, but there is no such file; pass the base model "
                              "with --base-weights PATH")
    return str(path)


def _launch_dir(run_dir: Path, out: str | None) -> Path | None:
    """The directory a run was started in: ``run_dir`` (absolute) less the relative ``out`` it was given."""
    if not out:
        return None
    rel = Path(os.path.normpath(out))
    if rel.is_absolute() or ".." in rel.parts:
        return None
    run_abs = Path(os.path.abspath(run_dir))
    n = len(rel.parts)
    if n == 0:  # out: .
        return run_abs
    if len(run_abs.parts) <= n or run_abs.parts[-n:] != rel.parts:
        return None
    return Path(*run_abs.parts[:-n])


def slower_than_base(rows: Sequence[SpeedRow]) -> list[str]:
    """One plain line per row where the dynamic network ran slower than the base, saying what to do
    (the latency search and calibration time PyTorch stages, so they are suggested for PyTorch rows)."""
    lines = []
    for r in rows:
        if r.measured_speedup >= 1.0:
            continue
        head = (f"At batch {r.batch_size} in {r.runtime} the dynamic network is slower than the base "
                f"({r.measured_speedup:.2f}x): ")
        if r.runtime == "pytorch":
            lines.append(head + "deploy the base at that batch size, or search and calibrate for it (--set "
                         f"calibration.cost=latency calibration.latency_batch={r.batch_size} calibration.latency_budget=0.5 "
                         "calibration.macs_budget=null calibration.target_accuracy=null search.reward=accuracy_in_budget)")
        else:
            lines.append(head + "deploy the base in that runtime at that batch size, or the dynamic network with "
                         "PyTorch (s2dnas.dynamic.load) if it is faster there")
    return lines


def best_across_runtimes(rows: Sequence[SpeedRow]) -> list[dict[str, object]]:
    """Per batch size, the fastest base and the fastest dynamic network over every runtime timed, and
    the speed-up between the two: what a user deploying at that batch size gets from switching.
    (The PyTorch and the ONNX Runtime rows are timed one after the other, not interleaved: a ratio
    across runtimes carries the machine's drift between the two phases.)"""
    out = []
    for batch in sorted({r.batch_size for r in rows}):
        mine = [r for r in rows if r.batch_size == batch]
        base = max(mine, key=lambda r: r.base_images_per_second)
        dyn = max(mine, key=lambda r: r.dynamic_images_per_second)
        where = lambda r: r.runtime if r.device == "cpu" else f"{r.runtime} on {r.device}"  # noqa: E731
        out.append({"batch_size": batch, "base_runtime": where(base), "base_threads": base.base_threads,
                    "base_images_per_second": base.base_images_per_second, "dynamic_runtime": where(dyn),
                    "dynamic_threads": dyn.dynamic_threads, "dynamic_images_per_second": dyn.dynamic_images_per_second,
                    "speedup": dyn.dynamic_images_per_second / base.base_images_per_second})
    return out


def _print_best(best: Sequence[dict[str, object]]) -> None:
    print("each at its best, any runtime | batch | fastest base (img/s) | fastest dynamic (img/s) | speed-up")
    for b in best:
        print(f"{'':29s} | {b['batch_size']:5d} | {b['base_runtime']:11s} {b['base_threads']}t "
              f"{b['base_images_per_second']:8.0f} | {b['dynamic_runtime']:11s} {b['dynamic_threads']}t "
              f"{b['dynamic_images_per_second']:8.0f} | {b['speedup']:8.2f}")
    for b in best:
        if b["speedup"] < 1.0:
            print(f"At batch {b['batch_size']} the fastest on this machine is the base in {b['base_runtime']} with "
                  f"{b['base_threads']} thread(s) ({b['base_images_per_second']:.0f} img/s); the dynamic network's "
                  f"best is {b['dynamic_images_per_second']:.0f} img/s ({b['dynamic_runtime']}, {b['dynamic_threads']} "
                  f"thread(s)), {b['speedup']:.2f}x: deploy the base there at that batch size")


def _predictions(base: torch.nn.Module, dynamic: DynamicNet, images: torch.Tensor, rows: Sequence[SpeedRow], *,
                 max_batches: int | None, device: torch.device, repeats: int) -> list[dict[str, object]]:
    """The cost model's prediction per PyTorch row, on the images that row timed, printed and returned
    with two errors: ``error``, predicted over measured seconds per image of the dynamic network,
    minus 1; ``speedup_error``, predicted over measured speed-up, minus 1 (each speed-up the base's
    time over the dynamic network's from the same measurement, so a machine that runs both slower
    during one of them moves it less)."""
    from s2dnas.bench.speed import predict_speed

    measured = {r.batch_size: r for r in rows if r.runtime == "pytorch"}
    out: list[dict[str, object]] = []
    print("cost model | batch | images | exits (% per stage) | predicted speed-up | measured speed-up | "
          "error of the predicted dynamic time | error of the predicted speed-up")
    threads = {bs: (r.base_threads, r.dynamic_threads) for bs, r in measured.items()}  # as each model was timed
    for p in predict_speed(base, dynamic, images, batch_sizes=sorted(measured), max_batches=max_batches,
                           device=device, repeats=repeats, threads=threads):
        row = measured[p.batch_size]
        seconds = row.dynamic_seconds / row.num_images
        error = p.dynamic_seconds_per_input / seconds - 1.0
        speedup_error = p.predicted_speedup / row.measured_speedup - 1.0
        exits = "/".join(f"{100 * f:.0f}" for f in p.exit_fractions)
        print(f"{'':10s} | {p.batch_size:5d} | {p.num_images:6d} | {exits:19s} | {p.predicted_speedup:18.2f} | "
              f"{row.measured_speedup:17.2f} | {100 * error:+34.0f}% | {100 * speedup_error:+30.0f}%")
        out.append({**p.to_dict(), "base_threads": row.base_threads, "dynamic_threads": row.dynamic_threads,
                    "measured_dynamic_seconds_per_input": seconds,
                    "measured_speedup": row.measured_speedup, "error": error, "speedup_error": speedup_error})
    return out


def _int_list(text: str, *, flag: str, example: str) -> list[int]:
    """``text`` as comma-separated integers (empty items skipped), or one clear error naming ``flag``."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"Expected {flag} like {example}, but got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from s2dnas.bench.speed import benchmark_speed
    from s2dnas.dynamic import load
    from s2dnas.train.evaluate import load_base_model

    batch_sizes = _int_list(args.batch_sizes, flag="--batch-sizes", example="1,32,256")
    if not batch_sizes or min(batch_sizes) < 1 or args.num_images < 1 or args.repeats < 1 or args.max_batches < 1:
        raise ConfigError("Expected positive --batch-sizes, --num-images, --max-batches and --repeats")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    example = "1,2 (counts >= 1)"
    thread_options = sorted({1, torch.get_num_threads()} if args.thread_options is None
                            else set(_int_list(args.thread_options, flag="--thread-options", example=example)))
    if not thread_options or min(thread_options) < 1:
        raise ConfigError(f"Expected --thread-options like {example}, but got {args.thread_options!r}")
    device = resolve_device(args.device)
    onnx = not args.no_onnx and importlib.util.find_spec("onnxruntime") is not None
    model_dir = check_model_dir(args.model_dir, command="bench")
    weights = args.base_weights or run_base_weights(model_dir)
    dynamic = load(model_dir, device="cpu").eval()
    spec = dynamic.model_spec or {}
    # The data set and preprocessing stored with the model; bench times test images only (no val cut).
    splits = splits_for_model(spec.get("data"), dataset=args.dataset, data_dir=args.data_dir, need_val=False,
                              source=str(model_dir))
    check_splits_fit(spec, splits)  # a model of another input shape would fail deep inside torch
    base, name, source = load_base_model(splits=splits, model_name=spec.get("model"), weights=weights)
    n = min(args.num_images, len(splits.test))
    images = torch.stack([splits.test[i][0] for i in range(n)])
    base_macs = int(spec.get("base_macs") or 0) or count_macs(base, images[:1])
    rows = benchmark_speed(base, dynamic, images, batch_sizes=batch_sizes, repeats=args.repeats,
                           base_macs=base_macs, max_batches=args.max_batches, compile=args.compile,
                           onnx=onnx, device=device, thread_options=thread_options)
    print(f"base {name} ({source}) vs {args.model_dir}, {n} test images, threads tried: "
          f"{', '.join(map(str, thread_options))} (CPU rows), PyTorch on {device}")
    if not onnx and not args.no_onnx:
        print("onnxruntime is not installed: ONNX Runtime rows skipped (pip install 's2dnas[export]')")
    print("runtime     | batch | base img/s | dynamic img/s | measured speed-up | MAC ratio | speed-up / MAC ratio "
          "| best mode (base, dynamic)")
    for r in rows:
        print(f"{r.runtime:11s} | {r.batch_size:5d} | {r.base_images_per_second:10.0f} | "
              f"{r.dynamic_images_per_second:13.0f} | {r.measured_speedup:17.2f} | {r.macs_ratio:9.2f} | "
              f"{r.speedup_over_macs_ratio:20.2f} | {r.base_mode} {r.base_layout} {r.base_threads}t, "
              f"{r.dynamic_mode} {r.dynamic_layout} {r.dynamic_threads}t")
    slower = slower_than_base(rows)
    for line in slower:
        print(line)
    best = best_across_runtimes(rows)
    if len({r.runtime for r in rows}) > 1:
        _print_best(best)
    profile = []
    if args.profile:
        from s2dnas.bench.speed import profile_stages

        profile = profile_stages(base, dynamic, images, base_macs=base_macs, repeats=args.repeats)
        print("stage | MACs (% of base) | time (% of base) | GMAC/s (base: "
              f"{profile[0].base_gmacs_per_second:.1f})")
        for st in profile:
            print(f"{st.stage + 1:5d} | {100 * st.macs_share:16.1f} | {100 * st.time_share:16.1f} | "
                  f"{st.gmacs_per_second:.1f}")
    predictions = (_predictions(base, dynamic, images, rows, max_batches=args.max_batches, device=device,
                                repeats=args.repeats) if args.predict else [])
    if args.json:
        atomic_write_json(args.json, {"machine": machine_info(), "model_dir": args.model_dir, "base_model": name,
                                      "rows": [r.to_dict() for r in rows],
                                      "stage_profile": [st.to_dict() for st in profile], "predictions": predictions,
                                      "slower_than_base": slower, "best_across_runtimes": best,
                                      "command": shlex.join(["s2dnas", *sys.argv[1:]])})
    return 0
