"""`make bench`'s driver: what it runs, in which order (the commands recorded, nothing trained)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run


def commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *argv: str) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []

    def record(*cmd: str) -> None:
        calls.append(cmd)
        if cmd[-2:] == ("demo", "--no-progress"):  # the demo leaves its model behind
            (tmp_path / "runs/demo/model").mkdir(parents=True)
            (tmp_path / "runs/demo/model/model.json").write_text("{}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run, "_run", record)
    monkeypatch.setattr(run, "speed_table", lambda path: "")
    monkeypatch.setattr("sys.argv", ["run", *argv])
    run.main()
    return calls


def _methods(calls: list[tuple[str, ...]], model: str) -> list[tuple[str, ...]]:
    return [c for c in calls if "benchmarks.methods" in c and c[c.index("--model") + 1] == model
            and "--result" not in c]


def test_at_scale_full_the_demo_runs_first_and_is_a_resnet20_row(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    calls = commands(monkeypatch, tmp_path, "--scale", "full")
    demos = [i for i, c in enumerate(calls) if c[-2:] == ("demo", "--no-progress")]
    resnet, vgg = _methods(calls, "resnet20"), _methods(calls, "vgg16_bn_w50")
    assert demos == [0]  # once, before the comparison that imports it
    assert len(resnet) == len(vgg) == 2  # train and evaluate (--no-speed), then time
    assert all(c[c.index("--run") + 1] == "s2dnas_demo=runs/demo" for c in resnet)
    assert not any("--run" in c for c in vgg)  # the demo's network belongs to ResNet-20's base
    assert all(c[c.index("--seeds") + 1] == "0,1,2" for c in resnet + vgg)
    assert calls[-1][-1] == "benchmarks.readme_tables"


def test_at_scale_full_an_existing_demo_is_imported_not_rerun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "runs/demo/model").mkdir(parents=True)
    (tmp_path / "runs/demo/model/model.json").write_text("{}")
    calls = commands(monkeypatch, tmp_path, "--scale", "full")
    assert not any(c[-2:] == ("demo", "--no-progress") for c in calls)
    assert all("s2dnas_demo=runs/demo" in c for c in _methods(calls, "resnet20"))


def test_at_scale_small_nothing_is_imported_and_an_existing_demo_is_reused(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    (tmp_path / "runs/demo/model").mkdir(parents=True)
    (tmp_path / "runs/demo/model/model.json").write_text("{}")
    calls = commands(monkeypatch, tmp_path)
    assert not any(c[-2:] == ("demo", "--no-progress") for c in calls)
    assert not any("--run" in c for c in calls)
    assert all(c[c.index("--seeds") + 1] == "0" for c in _methods(calls, "resnet20"))
