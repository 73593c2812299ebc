"""The machine: device selection shared by every command (``auto`` picks CUDA when present), and
:func:`machine_info`, what timings were measured on (the ``bench`` command and the benchmarks)."""
from __future__ import annotations

import os
import platform

import torch

from s2dnas.errors import ConfigError

__all__ = ["cpu_model", "machine_info", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"Expected device 'auto', 'cpu' or 'cuda[:N]', but got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {name!r} was requested but CUDA is not available; use --device cpu")
    return device


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else the processor's architecture): machines whose
    ``platform`` and core count agree can still differ in it, and timings and CPU kernels with it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """What the timings were measured on: platform, processor, CPU model, torch version, threads,
    CPUs, CUDA."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
