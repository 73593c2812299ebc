"""``s2dnas export``: write a saved dynamic model as per-stage ONNX (+ TorchScript) with a manifest."""
from __future__ import annotations

import argparse
import json

from s2dnas._device import resolve_device

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a dynamic model to ONNX (one graph per stage) and TorchScript",
        description="Export a dynamic model directory (written by DynamicNet.save) for deployment: "
                    "stage<s>.onnx and stage<s>.pt per stage plus manifest.json (the exit policy: thresholds, "
                    "confidence measure, per-stage cost; per-stage MACs, class names, input preprocessing). "
                    "Each stage is checked against PyTorch in ONNX Runtime. Run it with "
                    "s2dnas_runtime.OnnxDynamicNet (numpy + onnxruntime, no torch). Needs: pip install "
                    "'s2dnas[export]'.")
    p.add_argument("dir", metavar="DIR", help="dynamic model directory written by DynamicNet.save")
    p.add_argument("--out", required=True,
                   help="export directory (an existing export there is replaced, only once the new one is complete)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: 17)")
    p.add_argument("--no-torchscript", action="store_true", help="do not write the TorchScript files")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing every exported stage with PyTorch in ONNX Runtime")
    p.add_argument("--device", default="cpu", help="device to export on: cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from s2dnas.dynamic import load
    from s2dnas.export import export_dynamic

    dynamic = load(args.dir, device=resolve_device(args.device))
    out = export_dynamic(dynamic, args.out, opset=args.opset, torchscript=not args.no_torchscript,
                         check=not args.no_check)
    files = sorted(p.name for p in out.iterdir())
    print(json.dumps({"out": str(out), "num_stages": dynamic.num_stages, "thresholds": list(dynamic.thresholds),
                      "confidence": dynamic.confidence, "files": files}))
    return 0
