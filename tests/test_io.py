"""Tests of the crash-safe writers in s2dnas._io."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from s2dnas import _io
from s2dnas._io import atomic_torch_save, atomic_write_bytes, atomic_write_json


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    atomic_write_json(path, {"a": [1, 2], "é": None})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2], "é": None}
    atomic_write_json(path, {"b": 1})  # overwrite
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": 1}
    assert _listing(tmp_path) == ["config.json"]


def test_atomic_write_json_failing_dump_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"version": 1})

    def broken_dump(obj: object, handle, **kwargs: object) -> None:
        handle.write('{"version": 2, "trunc')  # half written, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(_io.json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert _listing(tmp_path) == ["state.json"]


def test_atomic_write_json_failing_replace_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"version": 1})

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("replace failed")

    monkeypatch.setattr(_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="replace failed"):
        atomic_write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert _listing(tmp_path) == ["state.json"]


def test_unserialisable_json_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "x.json", {"x": object()})
    assert _listing(tmp_path) == []


def test_atomic_write_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    atomic_write_bytes(path, b"\x00\x01")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert _listing(tmp_path) == ["blob.bin"]


def test_atomic_write_respects_umask(tmp_path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions only")
    path = tmp_path / "blob.bin"
    atomic_write_bytes(path, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_torch_save_is_weights_only_loadable(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    state = {"w": torch.arange(3.0), "step": 5, "name": "x", "items": [1.5, None]}
    atomic_torch_save(path, state)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["items"] == [1.5, None]
    assert _listing(tmp_path) == ["ckpt.pt"]


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "missing" / "x.bin", b"x")
