"""`make bench`: the benchmarks that exist so far, in one run, results in benchmarks/results/.

1. speed: the demo's dynamic model against the shipped base (`s2dnas bench`, batch 1/32/256);
   runs `s2dnas demo` first when runs/demo/model does not exist;
2. torchvision support: which torchvision CNN families the transformation handles;
3. ranking (only with --ranking; long): Kendall tau of one-shot vs briefly trained vs longer
   trained scores.
Writes benchmarks/results/speed.json, torchvision_support.json (and ranking.json) and prints the
markdown table that README.md includes.
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
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "s2dnas"
    if not Path("runs/demo/model/model.json").exists():
        _run(str(exe), "demo", "--no-progress")
    _run(str(exe), "bench", "runs/demo/model", "--json", str(RESULTS / "speed.json"), "--repeats", "5")
    _run(sys.executable, "-m", "benchmarks.torchvision_support", "--out", str(RESULTS / "torchvision_support.json"))
    if args.ranking:
        _run(sys.executable, "-m", "benchmarks.ranking", "--out", str(RESULTS / "ranking.json"))
    table = speed_table(RESULTS / "speed.json")
    (RESULTS / "speed.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
