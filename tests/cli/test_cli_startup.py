"""What starting the CLI loads: ``torchvision.ops`` pulls in ``torch._dynamo`` (about as long to import
as torch itself), so s2dnas imports torchvision only where a command needs it."""
from __future__ import annotations

import subprocess
import sys


def test_the_cli_starts_without_torchvision_or_dynamo() -> None:
    code = ("import sys, s2dnas.cli.main, s2dnas.space, s2dnas.runner; "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'timm', 'onnx', 'matplotlib') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
