"""Which torchvision classification CNNs s2dnas can transform (measured, not hoped).

For each model (one builder per family; random weights, 10 classes, 64x64 input): build the space
with S=3, check that S=1 reproduces the base logits, that the default architecture and one
sampled architecture build, run, and cost no more than the base, with MACs by execution equal to
the formula; a refusal records the node that stops it. Run (one model at a time, one thread):

    OMP_NUM_THREADS=1 python -m benchmarks.torchvision_support
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch
import torchvision

from s2dnas._io import atomic_write_json
from torch import nn

from s2dnas.errors import S2DNASError
from s2dnas.space import Space

__all__ = ["check_model", "write_markdown"]

MODELS = [
    "alexnet", "vgg11_bn", "vgg16", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "efficientnet_b0",
    "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf", "densenet121", "googlenet", "inception_v3",
    "shufflenet_v2_x0_5", "squeezenet1_0", "squeezenet1_1", "convnext_tiny", "vit_b_16",
]
TRANSFORMERS = {"vit_b_16"}  # may stay refused (issue 15): not counted as CNNs
SIZES = {"vit_b_16": 224, "inception_v3": 96}  # the smallest inputs these builders accept


def check(name: str, size: int) -> dict:
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, num_classes=10, weights=None, **kwargs).eval()
    return check_model(model, name=name, shape=(3, size, size))


def check_model(model: nn.Module, *, name: str, shape: tuple[int, int, int]) -> dict:
    """One row: S=1 exact, S=3 (else 2) valid for the default and a sampled architecture, or why not."""
    x = torch.randn(2, *shape)
    row: dict = {"model": name, "input": list(shape)}
    try:
        one = Space(model, input_shape=shape, num_stages=1).build().eval()
        with torch.no_grad():
            ref = model(x)
            row["s1_max_rel_diff"] = float((one(x)[0] - ref).abs().max() / ref.abs().max().clamp_min(1))
        for stages in (3, 2):
            try:
                space = Space(model, input_shape=shape, num_stages=stages)
                break
            except S2DNASError as err:
                row[f"s{stages}_error"] = str(err)
        row["num_stages"] = space.num_stages
        row["groups"] = space.num_groups
        row["space_size"] = space.size()
        for label, arch in (("default", space.default_architecture()),
                            ("sampled", space.sample(torch.Generator().manual_seed(1)))):
            net = space.build(arch).eval()
            macs = net.stage_macs()
            assert macs == net.analytic_macs, "MACs by execution differ from the formula"
            assert sum(macs) <= space.base_macs()
            row[f"{label}_macs_fraction"] = [m / space.base_macs() for m in macs]
        row["supported"] = True
    except S2DNASError as err:
        row["supported"] = False
        row["error"] = str(err)
        found = re.search(r"node '([^']+)' \(([^)]*)\)", str(err))
        row["stopped_at"] = f"{found.group(1)} ({found.group(2)})" if found else str(err).split(";")[0][:120]
    return row


def write_markdown(path: Path, title: str, rows: list[dict], *, excluded: set[str]) -> str:
    """A table of the rows; the share counts only the models not in ``excluded``."""
    counted = [r for r in rows if r["model"] not in excluded]
    ok = sum(r["supported"] for r in counted)
    lines = [f"# {title}", "", f"{ok} of {len(counted)} CNNs work ({100 * ok / max(1, len(counted)):.0f}%): "
             "S=1 reproduces the base logits, S=3 builds, runs and costs no more than the base.", "",
             "| model | input | works | S=1 max rel. diff | stages | groups | default MACs per stage (x base) "
             "| stopped at |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fractions = " / ".join(f"{f:.2f}" for f in r.get("default_macs_fraction", []))
        note = " (transformer)" if r["model"] in excluded else ""
        lines.append(f"| {r['model']}{note} | {'x'.join(map(str, r['input']))} | {'yes' if r['supported'] else 'no'} "
                     f"| {r.get('s1_max_rel_diff', float('nan')):.1e} | {r.get('num_stages', '')} | {r.get('groups', '')} "
                     f"| {fractions} | {r.get('stopped_at', '')} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/torchvision_support.json")
    p.add_argument("--models", nargs="*", default=MODELS)
    args = p.parse_args()
    rows = []
    for name in args.models:
        t = time.time()
        row = check(name, SIZES.get(name, args.size))
        row["seconds"] = time.time() - t
        rows.append(row)
        print(name, "OK" if row["supported"] else "unsupported: " + row["error"][:150], flush=True)
    atomic_write_json(args.out, {"torchvision": torchvision.__version__, "rows": rows})
    print(write_markdown(Path(args.out).with_suffix(".md"), f"torchvision {torchvision.__version__}", rows,
                         excluded=TRANSFORMERS))


if __name__ == "__main__":
    main()
