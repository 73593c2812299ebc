"""run_pipeline's checks of the base model (the steps after it are covered by tests/cli/test_cli_run.py)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from s2dnas import runner
from s2dnas.config import load_config
from s2dnas.train.checkpoint import save_weights
from tests._models import toy_cnn
from tests.cli._synthetic import write_band_dataset


class _Stop(Exception):
    """Raised where the test has seen what it needs (after the base step)."""


def test_run_warns_once_about_a_chance_level_base(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    data = write_band_dataset(tmp_path / "data", n_train=60, n_test=20)
    model = toy_cnn()
    with torch.no_grad():  # untrained, and answering one class whatever the input: chance level
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.arange(10.0))
    weights = tmp_path / "base.safetensors"
    save_weights(weights, model.state_dict(), {"model": "tests._models:toy_cnn", "num_classes": 10, "in_channels": 1})
    cfg = load_config(None, [("data.dataset", "fashion-mnist"), ("data.data_dir", str(data)), ("data.val_size", 20),
                             ("model.name", "tests._models:toy_cnn"), ("model.weights", str(weights))])

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(runner, "resolve_target", stop)  # the step after the base metrics
    (tmp_path / "run").mkdir()
    with caplog.at_level(logging.WARNING), pytest.raises(_Stop):
        runner.run_pipeline(cfg, out=tmp_path / "run", progress=False)
    chance = [r.getMessage() for r in caplog.records if "at chance level" in r.getMessage()]
    assert len(chance) == 1 and "always the most frequent of 10 classes" in chance[0]
    assert "train the base model longer" in chance[0]
