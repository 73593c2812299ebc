"""Zoo tests: every registered model, create_model's three kinds of name, pretrained entries."""
from __future__ import annotations

import inspect
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.fx
from safetensors.torch import save_file
from torch import nn

from s2dnas import CheckpointError, ConfigError, UnknownModelError, create_model, list_models
from s2dnas.cost import count_macs, count_params
from s2dnas.zoo import WeightsMeta, list_pretrained
from s2dnas.zoo.registry import get_builder
from s2dnas.zoo.weights import get_weights_meta, load_pretrained

NUM_CLASSES = 7  # not the default, so a builder ignoring num_classes is caught


@pytest.mark.parametrize("name", list_models())
def test_builder_is_keyword_only_and_named_after_itself(name: str) -> None:
    builder = get_builder(name)
    assert builder.__name__ == name == name.lower()
    params = inspect.signature(builder).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), name
    assert builder.__doc__


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_model_forward_backward(name: str, in_channels: int, seed: int) -> None:
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=in_channels)
    out = model(torch.randn(2, in_channels, 32, 32))  # training mode: BN uses batch statistics
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", list_models())
def test_model_fx_trace_equals_eager(name: str, seed: int) -> None:
    model = create_model(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list_models())
def test_model_runs_on_28x28(name: str, seed: int) -> None:
    model = create_model(name, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mobilenetv2_width_mult_and_resolution(seed: int) -> None:
    half = create_model("mobilenetv2", width_mult=0.5)
    assert count_params(half) < count_params(create_model("mobilenetv2"))
    assert half.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 1280, 4, 4)
    with pytest.raises(ConfigError, match="width_mult"):
        create_model("mobilenetv2", width_mult=0.0)


@pytest.mark.parametrize(("name", "width_mult", "widths", "macs"), [
    # ResNet-20 at 28x28: 16/32/64 channels scaled; the MACs were counted once and are pinned here
    ("resnet20", 0.5, (8, 16, 32), 7_783_872),
    ("resnet20", 0.75, (12, 24, 48), 17_471_136),
    ("resnet20", 1.0, (16, 32, 64), 31_021_952),
    ("vgg16_bn", 0.25, (16, 32, 64, 128, 128), 16_813_568),
])
def test_width_mult_scales_every_stage(name: str, width_mult: float, widths: tuple[int, ...], macs: int,
                                       seed: int) -> None:
    model = create_model(name, num_classes=10, in_channels=1, width_mult=width_mult)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    # every distinct width appears, in order of first appearance, and nothing else
    assert list(dict.fromkeys(convs)) == list(dict.fromkeys(widths))
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == macs


@pytest.mark.parametrize("bad", [0.0, -1.0, "half", True, float("inf"), float("nan")])
def test_width_mult_must_be_positive(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"Expected `width_mult` to be a finite number > 0"):
        create_model("resnet20", width_mult=bad)


def test_unknown_builder_kwarg_raises() -> None:
    with pytest.raises(ConfigError, match=r"Expected keyword arguments accepted by model 'resnet20'.*depth"):
        create_model("resnet20", depth=2.0)


def test_unknown_registered_name_raises() -> None:
    with pytest.raises(UnknownModelError, match="Unknown model 'resnet21'.*resnet20"):
        create_model("resnet21")


# --- torchvision ---------------------------------------------------------------------------------

def test_torchvision_model_with_one_input_channel(seed: int) -> None:
    model = create_model("torchvision:resnet18", in_channels=1).eval()
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.bias) == (
        1, 64, (7, 7), (2, 2), (3, 3), None
    )
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_torchvision_unknown_name_raises() -> None:
    with pytest.raises(UnknownModelError, match=r"'nonexistent'.*torchvision\.models\.list_models\(\)"):
        create_model("torchvision:nonexistent")


def test_torchvision_pretrained_raises() -> None:
    with pytest.raises(ConfigError, match="does not download torchvision weights"):
        create_model("torchvision:resnet18", pretrained=True)


# --- package.module:factory ----------------------------------------------------------------------

def test_factory_import_failure_raises() -> None:
    with pytest.raises(UnknownModelError, match=r"Cannot import module 'nonexistent_pkg\.mod'"):
        create_model("nonexistent_pkg.mod:factory")


def test_factory_missing_attribute_raises() -> None:
    with pytest.raises(UnknownModelError, match=r"Module 'math' has no attribute 'nope'"):
        create_model("math:nope")


def test_factory_not_callable_raises() -> None:
    with pytest.raises(UnknownModelError, match=r"Expected 'math:pi' to be callable"):
        create_model("math:pi")


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of user factories written to ``tmp_path`` and importable; returns its name."""
    name = "s2dnas_test_user_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny(*, num_classes=10, in_channels=3, width=4):
            return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(width, num_classes))

        def fixed():
            return nn.Linear(2, 3)

        def not_a_module(**kwargs):
            return {"kwargs": kwargs}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_user_factory(user_models: str, seed: int) -> None:
    model = create_model(f"{user_models}:tiny", num_classes=5, in_channels=1, width=6)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert model[0].out_channels == 6


def test_user_factory_without_num_classes(user_models: str) -> None:
    assert isinstance(create_model(f"{user_models}:fixed"), nn.Linear)
    with pytest.warns(UserWarning, match="does not take `num_classes`"):
        create_model(f"{user_models}:fixed", num_classes=3)
    with pytest.raises(ConfigError, match="no `pretrained` parameter"):
        create_model(f"{user_models}:fixed", pretrained=True)


def test_user_factory_not_returning_module_raises(user_models: str) -> None:
    with pytest.raises(UnknownModelError, match=r"to return an nn\.Module, but got dict"):
        create_model(f"{user_models}:not_a_module")


# --- pretrained ----------------------------------------------------------------------------------

def test_pretrained_without_shipped_weights_raises() -> None:
    with pytest.raises(CheckpointError, match=r"Expected pretrained weights for 'resnet56' with 100 classes"):
        create_model("resnet56", num_classes=100, pretrained=True)


def test_pretrained_empty_dir_lists_none(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"Available: \(none\)"):
        create_model("resnet20", in_channels=1, pretrained=True, weights_dir=tmp_path)


def _write_entry(directory: Path, model: nn.Module, **overrides: object) -> None:
    meta: dict[str, object] = {
        "name": "resnet20_fashion_mnist", "model": "resnet20", "dataset": "fashion_mnist",
        "num_classes": 10, "in_channels": 1, "input_size": [28, 28],
        "num_params": count_params(model), "macs": count_macs(model, torch.zeros(1, 1, 28, 28)),
        "val_accuracy": 0.9, "test_accuracy": 0.89, "recipe": {"epochs": 1}, "mean": [0.286], "std": [0.353],
    }
    meta.update(overrides)
    (directory / f"{meta['name']}.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(directory / f"{meta['name']}.safetensors"))


def test_pretrained_entry_loads_and_reproduces_outputs(tmp_path: Path, seed: int) -> None:
    source = create_model("resnet20", in_channels=1)
    with torch.no_grad():  # move BN statistics away from their defaults so they are checked too
        for _ in range(2):
            source(torch.randn(4, 1, 28, 28))
    source.eval()
    _write_entry(tmp_path, source)

    (meta,) = list_pretrained(weights_dir=tmp_path)
    assert (meta.model, meta.input_size, meta.extra) == ("resnet20", (28, 28), {"mean": [0.286], "std": [0.353]})
    assert get_weights_meta("resnet20", num_classes=10, in_channels=1, weights_dir=tmp_path) == meta

    loaded = create_model("resnet20", in_channels=1, pretrained=True, weights_dir=tmp_path).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
    # A mismatch in class count is found by the lookup, not by a shape error.
    with pytest.raises(CheckpointError, match=r"Available: resnet20_fashion_mnist \(resnet20, 10 classes, 1 channel"):
        create_model("resnet20", num_classes=5, in_channels=1, pretrained=True, weights_dir=tmp_path)


def test_pretrained_entry_for_another_model_raises(tmp_path: Path) -> None:
    # The JSON claims 10 classes, the safetensors file holds a 5-class model.
    _write_entry(tmp_path, create_model("resnet20", num_classes=5, in_channels=1), num_classes=10)
    with pytest.raises(CheckpointError, match=r"fc\.weight has shape \(5, 64\), expected \(10, 64\)"):
        load_pretrained(create_model("resnet20", in_channels=1), get_weights_meta(
            "resnet20", num_classes=10, in_channels=1, weights_dir=tmp_path))


def test_invalid_metadata_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"model": "resnet20", "num_classes": "10", "input_size": [28]}))
    with pytest.raises(CheckpointError, match=r"bad\.json: `dataset` is missing.*expected `num_classes` to be int, "
                                              r"but got str.*input_size"):
        list_pretrained(weights_dir=tmp_path)


@pytest.mark.parametrize("meta", list_pretrained(), ids=lambda m: m.name)
def test_shipped_weights_metadata_is_recomputed(meta: WeightsMeta) -> None:
    model = load_pretrained(create_model(meta.model, num_classes=meta.num_classes, in_channels=meta.in_channels), meta)
    assert count_params(model) == meta.num_params
    assert count_macs(model, torch.zeros(1, meta.in_channels, *meta.input_size)) == meta.macs
