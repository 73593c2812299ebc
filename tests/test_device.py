"""What timings are recorded as measured on: the CPU's model, not only its architecture."""
from __future__ import annotations

import io
from typing import Any

import pytest

from s2dnas import _device


def test_the_cpu_model_is_the_model_name_line_else_the_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14 96-Core\nflags\t: fpu\n"
    monkeypatch.setattr(_device, "open", lambda *a, **k: io.StringIO(cpuinfo), raising=False)
    assert _device.cpu_model() == "AMD EPYC 9R14 96-Core"
    assert _device.machine_info()["cpu"] == "AMD EPYC 9R14 96-Core"

    def unreadable(*args: Any, **kwargs: Any) -> io.StringIO:
        raise FileNotFoundError("/proc/cpuinfo")

    monkeypatch.setattr(_device, "open", unreadable, raising=False)  # no /proc: the architecture, as `processor`
    assert _device.cpu_model() == _device.machine_info()["processor"] != "AMD EPYC 9R14 96-Core"
    monkeypatch.setattr(_device, "open", lambda *a, **k: io.StringIO("processor\t: 0\n"), raising=False)
    assert _device.cpu_model() == _device.machine_info()["processor"]
