"""Which torchvision classification CNNs s2dnas can transform (measured, not hoped).

For each model (random weights, 10 classes, 64x64 input): build the space with S=3, check that
S=1 reproduces the base logits, that the default architecture and one sampled architecture build,
run, and cost no more than the base, with MACs by execution equal to the formula. Run:

    python -m benchmarks.torchvision_support --out benchmarks/results/torchvision_support.json
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

from s2dnas._io import atomic_write_json
from s2dnas.errors import S2DNASError
from s2dnas.space import Space

MODELS = [
    "alexnet", "vgg11_bn", "vgg16", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "efficientnet_b0",
    "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf", "densenet121", "googlenet",
    "shufflenet_v2_x0_5", "squeezenet1_0", "convnext_tiny", "vit_b_16",
]


def check(name: str, size: int) -> dict:
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, num_classes=10, weights=None, **kwargs).eval()
    shape = (3, size, size)
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
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/torchvision_support.json")
    args = p.parse_args()
    rows = []
    for name in MODELS:
        t = time.time()
        size = 224 if name.startswith("vit") else args.size
        row = check(name, size)
        row["seconds"] = time.time() - t
        rows.append(row)
        print(name, "OK" if row["supported"] else "unsupported: " + row["error"][:150], flush=True)
    atomic_write_json(args.out, {"torchvision": torchvision.__version__, "rows": rows})


if __name__ == "__main__":
    main()
