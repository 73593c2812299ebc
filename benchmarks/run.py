"""`make bench`: every benchmark in one run, results in benchmarks/results/.

What it runs, one job at a time (each a subprocess, in this order):

1. methods (issue 14), for each family, ResNet-20 (shipped base) and VGG-16-BN at half
   width (``vgg16_bn_w50``: the base committed in benchmarks/bases/, else trained here): static
   x0.25/x0.375/x0.5/x0.75, SDN exits (frozen, joint), cascades from x0.25 and x0.5 (and the
   static x0.25/x0.375/x0.5 models and both cascades again with the base's epochs plus the final
   training's: the ``*_long`` rows), S2DNAS
   hand-picked, random, RL and one-shot (final training from the super-network and from
   inherited weights; and searching within the demo's MACs budget, with the RL controller and
   with random search over the same scores), the searched ones for each
   seed of ``--seeds``; every operating point chosen on val per accuracy level. First every network is
   trained and evaluated (``--no-speed``), then a second pass times them at batch 256 and 1
   on the quiet machine (each network's timings kept in its cache, so a rerun times only those
   without timings of this machine and method). At scale ``full`` the ResNet-20 comparison also imports ``make demo``'s
   network (``--run s2dnas_demo=runs/demo``; the demo runs first when runs/demo has no model),
   whose final training is that scale's;
2. rank check (scale small only): brief-training scores against final-training scores of the
   methods' architectures;
3. ablations of the hand-picked architecture (ResNet-20);
4. speed: the demo's dynamic model against the shipped base (`s2dnas bench --profile`, batch
   1/32/256); runs `s2dnas demo` first when runs/demo/model does not exist;
5. why the speed-up trails the MAC ratio: conv throughput against width, and the hand-picked
   architecture's speed-up at several model widths;
6. torchvision support: which torchvision CNN families the transformation handles;
7. ranking (only with --ranking): Kendall tau of one-shot vs briefly trained vs longer trained scores;
8. super-network evidence (only with --evidence, issue 12): on the shipped super-network,
   ``benchmarks.supernet_ranking`` (12 architectures scored from it, then each fine-tuned for 3
   epochs on 40,000 images; about 9 min per architecture here), ``benchmarks.ranking_proxies``
   (other scores of the same 12 against their fine-tuning, and the ceiling val noise leaves) and
   ``benchmarks.search_seeds`` (RL vs random vs hand-picked, 3 seeds, 200 candidates each).

It resumes: every method, seed, search, super-network and training is cached under
``runs/bench/<model>[-<scale>]/`` (checkpoints each epoch, results per method and seed), so a
killed `make bench` rerun picks up where it stopped and does not retrain what finished.
Run time: scale ``small`` (one seed) took about 3 hours on a 2-core CPU (ours, the previous
protocol). Scale ``full`` with seeds 0,1,2 (the default of ``--scale full``) has not run end to end
here; from its parts, each measured on the 2-core CPU (README, "Method comparison", "Run time"),
it needed about 44 hours there, almost a third of it the six one-shot super-networks (VGG's three
are no longer trained: its one-shot rows at scale full load the super-network committed beside its
committed base, 37 min of CPU training once, 4 epochs as in both VGG tables: about 41 hours
now): a GPU job, or one to run in resumable pieces (``--methods``, ``--seeds``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from s2dnas.config import DEMO_CONFIG, load_config

RESULTS = Path("benchmarks/results")


def _run(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def speed_table(path: Path) -> str:
    """Markdown table of a `s2dnas bench --json` file."""
    data = json.loads(path.read_text())
    m = data["machine"]
    lines = [f"Measured on {m['processor']} ({m['cpu_count']} cores, {m['threads']} torch threads), "
             f"torch {m['torch']}; our measurements.", "",
             "| runtime | batch | base img/s | dynamic img/s | measured speed-up | MAC ratio | speed-up / MAC ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r.get('runtime', 'pytorch')} | {r['batch_size']} | {r['base_images_per_second']:.0f} | "
                     f"{r['dynamic_images_per_second']:.0f} | {r['measured_speedup']:.2f}x | {r['macs_ratio']:.2f}x | "
                     f"{r['speedup_over_macs_ratio']:.2f} |")
    for p in data.get("predictions", []):
        lines.append(f"\nbatch {p['batch_size']}: cost model predicted {p['predicted_speedup']:.2f}x "
                     f"(measured {p['measured_speedup']:.2f}x; predicted dynamic time {100 * p['error']:+.0f}%)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranking", action="store_true", help="also run the (long) ranking benchmark")
    p.add_argument("--evidence", action="store_true", help="also run the super-network evidence (issue 12)")
    p.add_argument("--scale", default="small", help="scale of the method benchmark (small, full; smoke for a dry run)")
    p.add_argument("--seeds", default=None, help="seeds of the searched methods (default: 0,1,2 at scale full, else 0)")
    p.add_argument("--supernet", default=None, help="a trained super-network directory for the one-shot rows "
                   "(ResNet-20 only: a super-network belongs to one base model; VGG's rows at scale full load the "
                   "one committed beside its committed base)")
    args = p.parse_args()
    seeds = args.seeds or ("0,1,2" if args.scale == "full" else "0")
    RESULTS.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "s2dnas"
    demo = Path(load_config(DEMO_CONFIG).out)  # where `s2dnas demo` writes
    if args.scale == "full" and not (demo / "model/model.json").exists():
        _run(str(exe), "demo", "--no-progress")  # the demo's network is a ResNet-20 row at this scale
    for model in ("resnet20", "vgg16_bn_w50"):
        extra = ["--seeds", seeds] + (["--supernet", args.supernet] if args.supernet and model == "resnet20" else [])
        if args.scale == "full" and model == "resnet20":  # its final training is this scale's (16 epochs, all images)
            extra += ["--run", f"s2dnas_demo={demo}"]
        # train and evaluate everything first, then time every network on the quiet machine
        _run(sys.executable, "-m", "benchmarks.methods", "--model", model, "--scale", args.scale, "--no-speed", *extra)
        _run(sys.executable, "-m", "benchmarks.methods", "--model", model, "--scale", args.scale, *extra)
        if args.scale == "small":  # rank_check reads runs/bench/<model>, the cache of scale small only
            _run(sys.executable, "-m", "benchmarks.rank_check", "--model", model, "--scale", args.scale)
    _run(sys.executable, "-m", "benchmarks.methods", "--model", "resnet20", "--scale", args.scale, "--no-speed",
         "--methods", "ablation_no_concat,ablation_no_distillation,ablation_s2",
         "--result", str(RESULTS / "ablations_resnet20.json"))
    if not (demo / "model/model.json").exists():
        _run(str(exe), "demo", "--no-progress")
    _run(str(exe), "bench", str(demo / "model"), "--json", str(RESULTS / "speed.json"), "--repeats", "5", "--profile",
         "--predict")
    _run(sys.executable, "-m", "benchmarks.conv_efficiency", "--out", str(RESULTS / "conv_efficiency.json"))
    _run(sys.executable, "-m", "benchmarks.width_scaling", "--out", str(RESULTS / "width_scaling.json"))
    _run(sys.executable, "-m", "benchmarks.torchvision_support", "--out", str(RESULTS / "torchvision_support.json"))
    if args.ranking:
        _run(sys.executable, "-m", "benchmarks.ranking", "--out", str(RESULTS / "ranking.json"))
    if args.evidence:
        from s2dnas.zoo.weights import shipped_supernet_dir

        shipped = str(shipped_supernet_dir("resnet20_fashion_mnist"))
        _run(sys.executable, "-m", "benchmarks.supernet_ranking", "--supernet", shipped, "--final-epochs", "3",
             "--limit-train", "40000", "--dir", "runs/supernet_ranking",
             "--out", str(RESULTS / "supernet_ranking.json"))
        _run(sys.executable, "-m", "benchmarks.ranking_proxies", "--supernet", shipped, "--dir", "runs/supernet_ranking",
             "--out", str(RESULTS / "ranking_proxies.json"))
        _run(sys.executable, "-m", "benchmarks.search_seeds", "--supernet", shipped, "--budget", "200",
             "--seeds", "0,1,2", "--dir", "runs/search_seeds", "--out", str(RESULTS / "search_seeds.json"))
    table = speed_table(RESULTS / "speed.json")
    (RESULTS / "speed.md").write_text(table + "\n")
    print(table)
    _run(sys.executable, "-m", "benchmarks.readme_tables")  # README.md and docs/results.md tables from the JSON


if __name__ == "__main__":
    main()
