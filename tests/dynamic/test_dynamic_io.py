"""Saving and loading dynamic models: round trip, and every broken directory is a CheckpointError."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import s2dnas
from s2dnas.dynamic import DynamicNet, StageLogits, build_model_spec, calibrate, load
from s2dnas.errors import CheckpointError, ConfigError
from tests._models import INPUT_SHAPE, make_labels, make_space, sharpen


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, DynamicNet, torch.Tensor]:
    space = make_space(num_stages=3)
    msnet = sharpen(space.build(space.sample(torch.Generator().manual_seed(4))))
    x = torch.randn(64, *INPUT_SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sl = StageLogits(logits=torch.stack(msnet(x)), labels=make_labels(msnet, x))
    cal = calibrate(sl, stage_macs=msnet.stage_macs(), macs_budget=float(sum(msnet.analytic_macs)) * 0.6, grid=8)
    net = DynamicNet(msnet, cal.policy)
    spec = build_model_spec(space, num_classes=10, class_names=[f"c{i}" for i in range(10)], mean=[0.5], std=[0.25])
    directory = tmp_path_factory.mktemp("models") / "dyn"
    net.save(directory, model_spec=spec)
    return directory, net, x


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _drop_checksum(directory: Path) -> None:
    spec = json.loads((directory / "model.json").read_text())
    spec.pop("weights_sha256")
    (directory / "model.json").write_text(json.dumps(spec))


def test_round_trip_gives_identical_outputs(saved) -> None:
    directory, net, x = saved
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["architecture.json", "model.json", "thresholds.json", "weights.safetensors"])
    loaded = s2dnas.load(directory)
    assert isinstance(loaded, DynamicNet) and not loaded.training
    assert loaded.thresholds == net.thresholds and loaded.confidence == net.confidence
    assert loaded.policy == net.policy and loaded.stage_macs == net.stage_macs
    assert loaded.msnet.architecture == net.msnet.architecture
    assert loaded.model_spec["class_names"][3] == "c3" and loaded.model_spec["mean"] == [0.5]
    a, b = net(x), loaded(x)
    assert torch.equal(a.exit_stage, b.exit_stage) and torch.equal(a.logits, b.logits)
    assert len(set(a.exit_stage.tolist())) >= 2
    # Saving a loaded model again reuses its spec, keeps other files in the directory.
    (directory / "notes.txt").write_text("keep me")
    loaded.save(directory)
    assert (directory / "notes.txt").read_text() == "keep me"
    assert torch.equal(load(directory)(x).logits, a.logits)
    (directory / "notes.txt").unlink()


def test_save_needs_a_model_spec(saved, tmp_path) -> None:
    _, net, _ = saved
    bare = DynamicNet(net.msnet, net.thresholds)
    with pytest.raises(ConfigError, match="model_spec"):
        bare.save(tmp_path / "x")
    with pytest.raises(ConfigError, match="lacks num_classes"):
        bare.save(tmp_path / "x", model_spec={"model": "resnet20", "in_channels": 1})
    assert not (tmp_path / "x").exists()


def test_missing_directory_and_files(saved, tmp_path) -> None:
    directory, _, _ = saved
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nowhere")
    broken = _copy(directory, tmp_path / "m")
    (broken / "architecture.json").unlink()
    with pytest.raises(CheckpointError, match="architecture.json .* missing"):
        load(broken)


def test_truncated_weights_are_rejected(saved, tmp_path) -> None:
    directory, _, _ = saved
    broken = _copy(directory, tmp_path / "m")
    data = (broken / "weights.safetensors").read_bytes()
    (broken / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum"):
        load(broken)
    _drop_checksum(broken)  # without the checksum the safetensors reader itself must refuse it
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load(broken)


def test_malformed_json_is_rejected(saved, tmp_path) -> None:
    directory, _, _ = saved
    broken = _copy(directory, tmp_path / "m")
    (broken / "thresholds.json").write_text('{"thresholds": [0.5, ')
    with pytest.raises(CheckpointError, match="thresholds.json.*malformed"):
        load(broken)
    (broken / "thresholds.json").write_text('{"thresholds": [0.5, NaN], "confidence": "max_softmax"}')
    with pytest.raises(CheckpointError, match="finite number"):
        load(broken)
    (broken / "thresholds.json").write_text('{"thresholds": [0.5], "confidence": "max_softmax"}')
    with pytest.raises(CheckpointError, match="Expected 2 thresholds"):
        load(broken)
    (broken / "model.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="format"):
        load(broken)


def test_weights_of_another_architecture_are_rejected(saved, tmp_path) -> None:
    directory, net, _ = saved
    space = make_space(num_stages=3)
    other = DynamicNet(space.build(space.default_architecture()).eval(), [0.5, 0.5])
    other_dir = tmp_path / "other"
    other.save(other_dir, model_spec=build_model_spec(space, num_classes=10))
    assert other.msnet.architecture != net.msnet.architecture
    broken = _copy(directory, tmp_path / "m")
    (broken / "weights.safetensors").write_bytes((other_dir / "weights.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="checksum"):
        load(broken)
    _drop_checksum(broken)
    with pytest.raises(CheckpointError, match="another model"):
        load(broken)
    spec = json.loads((directory / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**spec, "num_classes": 7}))
    with pytest.raises(CheckpointError):
        load(broken)


class _Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_is_rejected_without_running(saved, tmp_path) -> None:
    directory, _, _ = saved
    broken = _copy(directory, tmp_path / "m")
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"stages.0.weight": _Planted(str(marker))})
    (broken / "weights.safetensors").write_bytes(payload)
    for drop in (False, True):
        if drop:
            _drop_checksum(broken)
        with pytest.raises(CheckpointError):
            load(broken)
        assert not marker.exists(), "loading must never unpickle"
    torch_file = tmp_path / "planted.pt"
    torch.save({"x": _Planted(str(marker))}, torch_file)
    (broken / "weights.safetensors").write_bytes(torch_file.read_bytes())
    with pytest.raises(CheckpointError):
        load(broken)
    assert not marker.exists() and not os.path.exists(str(marker))


def test_thresholds_json_is_the_policy_and_cannot_contradict_itself(saved, tmp_path) -> None:
    directory, net, _ = saved
    data = json.loads((directory / "thresholds.json").read_text())
    assert data["format"] == "s2dnas.policy/1" and data["thresholds"] == list(net.thresholds)
    assert data["stage_cost"] == net.stage_macs and data["cost_unit"] == "macs"
    assert "thresholds" not in data["calibration"] and data["calibration"]["curve"], "the record holds no 2nd copy"
    copy = load(directory)
    copy.set_thresholds([0.25, 0.75])
    assert copy.policy.calibration is None  # the record described other thresholds
    copy.save(tmp_path / "moved")
    again = load(tmp_path / "moved")
    assert again.thresholds == (0.25, 0.75) and again.policy == copy.policy


def test_thresholds_json_holding_booleans_is_refused_in_one_line(saved, tmp_path) -> None:
    broken = _copy(saved[0], tmp_path / "bools")
    data = json.loads((broken / "thresholds.json").read_text())
    (broken / "thresholds.json").write_text(json.dumps({**data, "thresholds": [True, False]}))
    with pytest.raises(CheckpointError, match="booleans are not thresholds") as info:
        load(broken)
    assert "\n" not in str(info.value) and "thresholds.json" in str(info.value)


def test_old_thresholds_format_still_loads(saved, tmp_path) -> None:
    """A model saved before the exit policy (thresholds + confidence + a Calibration dict) loads as one."""
    directory, net, x = saved
    old = _copy(directory, tmp_path / "old")
    record = net.policy.calibration
    calibration = {"format": "s2dnas.calibration/1", "thresholds": [9.0, 9.0], "confidence": "max_softmax",
                   "stage_macs": net.stage_macs, **record}
    (old / "thresholds.json").write_text(json.dumps({"format": "s2dnas.thresholds/1", "thresholds": list(net.thresholds),
                                                     "confidence": "max_softmax", "calibration": calibration}))
    loaded = load(old)
    assert loaded.policy == net.policy  # the stale copy inside the old calibration is dropped
    assert torch.equal(loaded(x).exit_stage, net(x).exit_stage)


def test_data_spec_is_stored_and_loaded_unchanged(saved, tmp_path) -> None:
    directory, net, _ = saved
    data = {"dataset": "imagefolder:/somewhere", "val_size": 12, "data_seed": 3,
            "preprocessing": {"input_size": [8, 8], "channels": 1, "mean": [0.4], "std": [0.2]}}
    space = make_space(num_stages=3)
    spec = build_model_spec(space, num_classes=10, data=data)
    assert spec["data"] == data and spec["data"] is not data
    net.save(tmp_path / "with-data", model_spec=spec)
    assert load(tmp_path / "with-data").model_spec["data"] == data
    assert load(directory).model_spec["data"] is None
    with pytest.raises(ConfigError, match="data spec"):
        build_model_spec(space, num_classes=10, data=["not", "a", "dict"])  # type: ignore[arg-type]
