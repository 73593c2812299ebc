"""create_model("timm:<name>"): timm as an optional dependency (issue 15 item 2)."""
from __future__ import annotations

import sys

import pytest
import torch

from s2dnas.errors import ConfigError, UnknownModelError
from s2dnas.zoo import create_model

timm = pytest.importorskip("timm")


def test_timm_model_with_classes_and_channels(seed):
    model = create_model("timm:resnet18", num_classes=7, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


def test_unknown_timm_name():
    with pytest.raises(UnknownModelError, match="timm.list_models"):
        create_model("timm:no_such_net")


def test_missing_timm_is_one_line_naming_pip(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match="pip install timm") as err:
        create_model("timm:resnet18")
    assert "\n" not in str(err.value)
