"""`make bench`: every benchmark in one run, results in benchmarks/results/.

1. methods (issue 6): S2DNAS against the static model, thinner static models, SDN exits, a
   cascade, random search and one-shot search, on the shipped ResNet-20 and on VGG-16-BN x0.25
   (trained here); training first, then the timing of every network in the same process;
2. rank check: brief-training scores against final-training scores of the methods' architectures;
3. speed: the demo's dynamic model against the shipped base (`s2dnas bench --profile`, batch
   1/32/256); runs `s2dnas demo` first when runs/demo/model does not exist;
4. why the speed-up trails the MAC ratio: conv throughput against width, and the hand-picked
   architecture's speed-up at several model widths;
5. torchvision support: which torchvision CNN families the transformation handles;
6. ranking (only with --ranking): Kendall tau of one-shot vs briefly trained vs longer trained scores.
Everything is cached under runs/, so a killed `make bench` resumes where it stopped.
About 3 hours on a 2-core CPU (ours), most of it training.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
             "| batch | base img/s | dynamic img/s | measured speed-up | MAC ratio | speed-up / MAC ratio |",
             "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['batch_size']} | {r['base_images_per_second']:.0f} | {r['dynamic_images_per_second']:.0f} | "
                     f"{r['measured_speedup']:.2f}x | {r['macs_ratio']:.2f}x | {r['speedup_over_macs_ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranking", action="store_true", help="also run the (long) ranking benchmark")
    p.add_argument("--scale", default="small", help="scale of the method benchmark (small; smoke for a dry run)")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "s2dnas"
    methods = "static_base,static_x0.5,static_x0.75,sdn_frozen,sdn_joint,cascade,s2dnas_handpicked," \
              "s2dnas_random,s2dnas_rl,s2dnas_oneshot"
    for model in ("resnet20", "vgg16_bn_w25"):
        # train and evaluate everything first, then time every network on the quiet machine
        _run(sys.executable, "-m", "benchmarks.methods", "--model", model, "--scale", args.scale, "--no-speed",
             "--methods", methods)
        _run(sys.executable, "-m", "benchmarks.methods", "--model", model, "--scale", args.scale, "--methods", methods)
        _run(sys.executable, "-m", "benchmarks.rank_check", "--model", model, "--scale", args.scale)
    _run(sys.executable, "-m", "benchmarks.methods", "--model", "resnet20", "--scale", args.scale, "--no-speed",
         "--methods", "ablation_no_concat,ablation_no_distillation,ablation_s2", "--out", "runs/bench/resnet20",
         "--result", str(RESULTS / "ablations_resnet20.json"))
    if not Path("runs/demo/model/model.json").exists():
        _run(str(exe), "demo", "--no-progress")
    _run(str(exe), "bench", "runs/demo/model", "--json", str(RESULTS / "speed.json"), "--repeats", "5", "--profile")
    _run(sys.executable, "-m", "benchmarks.conv_efficiency", "--out", str(RESULTS / "conv_efficiency.json"))
    _run(sys.executable, "-m", "benchmarks.width_scaling", "--out", str(RESULTS / "width_scaling.json"))
    _run(sys.executable, "-m", "benchmarks.torchvision_support", "--out", str(RESULTS / "torchvision_support.json"))
    if args.ranking:
        _run(sys.executable, "-m", "benchmarks.ranking", "--out", str(RESULTS / "ranking.json"))
    table = speed_table(RESULTS / "speed.json")
    (RESULTS / "speed.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
