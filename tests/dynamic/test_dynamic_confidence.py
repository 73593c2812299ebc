"""Confidence measures: range, known values, numpy twin."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s2dnas.dynamic import CONFIDENCE_MEASURES, PolicyError, confidence, confidence_np
from s2dnas.errors import ConfigError


def _logits() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(300, 10, generator=gen) * torch.logspace(-2, 2, 300).unsqueeze(1)
    extreme = torch.tensor([[1e4] + [-1e4] * 9, [0.0] * 10, [1e4, 1e4] + [0.0] * 8])
    return torch.cat([z, extreme])


@pytest.mark.parametrize("measure", CONFIDENCE_MEASURES)
def test_confidence_in_unit_interval_and_numpy_twin_matches(measure: str) -> None:
    z = _logits()
    c = confidence(z, measure)
    assert c.shape == (len(z),) and c.dtype == torch.float32
    assert bool(((c >= 0) & (c <= 1)).all())
    c_np = confidence_np(z.numpy(), measure)
    assert c_np.dtype == np.float32
    np.testing.assert_allclose(c_np, c.numpy(), rtol=0, atol=2e-6)


def test_known_values() -> None:
    uniform = torch.zeros(1, 4)
    certain = torch.tensor([[50.0, -50.0, -50.0, -50.0]])
    two_way = torch.tensor([[30.0, 30.0, -30.0, -30.0]])
    assert confidence(uniform, "max_softmax").item() == pytest.approx(0.25)
    assert confidence(uniform, "entropy").item() == pytest.approx(0.0, abs=1e-6)
    assert confidence(uniform, "margin").item() == pytest.approx(0.0, abs=1e-6)
    for measure in CONFIDENCE_MEASURES:
        assert confidence(certain, measure).item() == pytest.approx(1.0, abs=1e-6)
    assert confidence(two_way, "margin").item() == pytest.approx(0.0, abs=1e-6)
    assert confidence(two_way, "entropy").item() == pytest.approx(1 - math.log(2) / math.log(4), abs=1e-5)
    single = torch.randn(3, 1)
    for measure in CONFIDENCE_MEASURES:
        assert torch.equal(confidence(single, measure), torch.ones(3))
        assert np.array_equal(confidence_np(single.numpy(), measure), np.ones(3, dtype=np.float32))


def test_unknown_measure_lists_the_options() -> None:
    with pytest.raises(ConfigError, match="max_softmax, entropy, margin"):
        confidence(torch.zeros(2, 3), "softmax")
    with pytest.raises(PolicyError, match="max_softmax, entropy, margin"):  # the runtime's own error
        confidence_np(np.zeros((2, 3)), "variance")
    with pytest.raises(ConfigError, match=r"shape \(B, K\)"):
        confidence(torch.zeros(3), "margin")
