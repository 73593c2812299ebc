"""Which timm CNN families s2dnas can transform (measured, like benchmarks/torchvision_support.py).

One small model per family of issue 15 (random weights, 10 classes, 64x64 input); RepVGG and
MobileOne in their deploy form (``timm.utils.reparameterize_model``). Each row: S=1 reproduces
the base logits; S=3 builds, runs and costs no more than the base; a refusal names the node that
stops it. Run (one model at a time, one thread):

    OMP_NUM_THREADS=1 python -m benchmarks.timm_support
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.torchvision_support import check_model, write_markdown
from s2dnas._io import atomic_write_json
from s2dnas.zoo import create_model

FAMILIES = {
    "resnet50d": "ResNet-D", "seresnet50": "SE-ResNet", "resnext50_32x4d": "ResNeXt",
    "efficientnet_b0": "EfficientNet", "mobilenetv3_large_100": "MobileNetV3", "mixnet_s": "MixNet",
    "regnetx_002": "RegNetX", "regnety_002": "RegNetY", "densenet121": "DenseNet", "cspresnet50": "CSPNet",
    "dpn68": "DPN", "dla34": "DLA", "repvgg_a0": "RepVGG (deploy)", "mobileone_s0": "MobileOne (deploy)",
    "convnext_atto": "ConvNeXt", "ghostnet_100": "GhostNet", "hrnet_w18_small": "HRNet",
}
DEPLOY = {"repvgg_a0", "mobileone_s0"}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(f"timm:{name}", num_classes=10, in_channels=3).eval()
    if name in DEPLOY:
        from timm.utils import reparameterize_model

        model = reparameterize_model(model)
    return model


def main() -> None:
    import timm

    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/timm_support.json")
    p.add_argument("--models", nargs="*", default=list(FAMILIES))
    args = p.parse_args()
    rows = []
    for name in args.models:
        t = time.time()
        row = check_model(build(name), name=name, shape=(3, args.size, args.size))
        row["family"] = FAMILIES.get(name, "")
        row["seconds"] = time.time() - t
        rows.append(row)
        print(name, "OK" if row["supported"] else "unsupported: " + row["error"][:150], flush=True)
    atomic_write_json(args.out, {"timm": timm.__version__, "rows": rows})
    print(write_markdown(Path(args.out).with_suffix(".md"), f"timm {timm.__version__}", rows, excluded=set()))


if __name__ == "__main__":
    main()
