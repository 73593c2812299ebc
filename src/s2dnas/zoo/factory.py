"""``create_model``: one entry point for registered, torchvision and user-defined models.

Three kinds of name are accepted (timm ``create_model``, torchvision ``get_model``):

* a registered name (``list_models()``), e.g. ``"resnet56"``;
* ``"torchvision:<name>"``, a torchvision classification builder, e.g. ``"torchvision:resnet18"``;
* ``"timm:<name>"``, a timm model (timm is optional), e.g. ``"timm:resnet50d"``;
* ``"package.module:factory"``, a callable in an importable module that returns an ``nn.Module``.
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any, Callable

from torch import nn

from s2dnas.errors import CheckpointError, ConfigError, UnknownModelError
from s2dnas.zoo.registry import get_builder, list_models
from s2dnas.zoo.weights import get_weights_meta, load_pretrained

__all__ = ["create_model"]

_TORCHVISION_PREFIX = "torchvision:"
_TIMM_PREFIX = "timm:"


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    pretrained: bool = False,
    weights_dir: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: A registered name, ``"torchvision:<name>"`` or ``"package.module:factory"``.
        num_classes: Number of output classes.
        in_channels: Number of input image channels. For torchvision models the first
            ``Conv2d`` is replaced by one with ``in_channels`` inputs when this is not 3.
        pretrained: Load the shipped weights of a registered model (see
            :func:`s2dnas.zoo.weights.list_pretrained`). A user factory receives it only if
            it has a ``pretrained`` parameter.
        weights_dir: Directory of pretrained entries to use instead of the shipped one.
        **kwargs: Extra keyword arguments for the builder (e.g. ``width_mult`` of ``mobilenetv2``).

    Returns:
        The model, in training mode.

    Raises:
        UnknownModelError: If ``name`` is not registered, not a torchvision model, or a
            ``module:factory`` reference cannot be imported or does not return an ``nn.Module``.
        ConfigError: If ``kwargs`` are not accepted by the builder, or ``pretrained`` is asked
            of a torchvision model or of a factory without a ``pretrained`` parameter.
        CheckpointError: If ``pretrained`` is true and no matching shipped weights exist.
    """
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"Expected a model name string, but got {name!r}; see s2dnas.list_models()")
    if name.startswith(_TORCHVISION_PREFIX):
        return _create_torchvision(name[len(_TORCHVISION_PREFIX):], num_classes=num_classes,
                                   in_channels=in_channels, pretrained=pretrained, kwargs=kwargs)
    if name.startswith(_TIMM_PREFIX):
        return _create_timm(name[len(_TIMM_PREFIX):], num_classes=num_classes, in_channels=in_channels,
                            pretrained=pretrained, kwargs=kwargs)
    if ":" in name:
        return _create_from_factory(name, num_classes=num_classes, in_channels=in_channels,
                                    pretrained=pretrained, kwargs=kwargs)
    builder = get_builder(name)  # raises UnknownModelError listing the options
    _check_kwargs(builder, kwargs, what=f"model {name!r}")
    # Look the weights up before building, so a missing entry fails fast.
    meta = (get_weights_meta(name, num_classes=num_classes, in_channels=in_channels, weights_dir=weights_dir)
            if pretrained else None)
    model = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if meta is not None:
        load_pretrained(model, meta)
    return model


def _check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], *, what: str) -> None:
    """Raise :class:`ConfigError` if ``fn`` cannot take every keyword in ``kwargs``."""
    params = _parameters(fn)
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        accepted = ", ".join(p for p in params if p not in ("num_classes", "in_channels")) or "(none)"
        raise ConfigError(f"Expected keyword arguments accepted by {what} ({accepted}), but got {unknown}; "
                          "remove them")


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """Return ``fn``'s parameters, or ``None`` when its signature cannot be read (some builtins)."""
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _create_torchvision(
    tv_name: str, *, num_classes: int, in_channels: int, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """Build ``torchvision.models.get_model(tv_name)`` with random weights and adapted input channels."""
    import torchvision  # lazy: importing torchvision costs about a second

    if pretrained:
        raise ConfigError(
            f"Expected pretrained=False for 'torchvision:{tv_name}', but got True: s2dnas does not download "
            "torchvision weights. Load them yourself (torchvision.models.get_model(name, weights=...)) and pass the module"
        )
    valid = torchvision.models.list_models()
    if tv_name not in valid:
        raise UnknownModelError(
            f"Expected a torchvision model name after 'torchvision:', but got {tv_name!r}; "
            "see torchvision.models.list_models() for the valid names"
        )
    model = torchvision.models.get_model(tv_name, num_classes=num_classes, weights=None, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, in_channels=in_channels, source=f"torchvision:{tv_name}")
    return model


def _create_timm(
    timm_name: str, *, num_classes: int, in_channels: int, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """Build ``timm.create_model(timm_name)``; timm adapts the classifier and the input channels itself."""
    try:
        import timm  # optional dependency
    except ImportError:
        raise ConfigError(f"Model 'timm:{timm_name}' needs the timm package, which is not installed; "
                          "run 'pip install timm' or choose another model") from None
    if not timm.is_model(timm_name.split(".")[0]):
        raise UnknownModelError(f"Expected a timm model name after 'timm:', but got {timm_name!r}; "
                                "see timm.list_models() for the valid names")
    try:
        return timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels,
                                 **kwargs)
    except TypeError as err:
        raise ConfigError(f"timm model {timm_name!r} does not accept {sorted(kwargs)} ({err}); remove them") from None
    except Exception as err:  # noqa: BLE001 - a download or cache failure of the pretrained weights
        if not pretrained:
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"Cannot get the pretrained weights of 'timm:{timm_name}' ({type(err).__name__}: "
                              f"{first}); check the network or the Hugging Face cache, or use pretrained=False") from None


def _replace_first_conv(model: nn.Module, *, in_channels: int, source: str) -> None:
    """Swap the first ``Conv2d`` (in module order) for one with ``in_channels`` inputs, same otherwise."""
    for qualname, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            break
    else:
        raise ConfigError(f"Expected {source} to contain an nn.Conv2d to adapt to in_channels={in_channels}, "
                          "but it has none; use in_channels=3")
    if module.groups != 1:
        raise ConfigError(f"Expected the first conv {qualname!r} of {source} to have groups=1 to change its inputs, "
                          f"but got groups={module.groups}; use in_channels=3")
    new = nn.Conv2d(
        in_channels, module.out_channels, kernel_size=module.kernel_size, stride=module.stride,
        padding=module.padding, dilation=module.dilation, groups=1, bias=module.bias is not None,
        padding_mode=module.padding_mode, device=module.weight.device, dtype=module.weight.dtype,
    )
    parent_name, _, attr = qualname.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, new)


def _create_from_factory(
    ref: str, *, num_classes: int, in_channels: int, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """Import ``package.module:factory`` and call it."""
    module_name, _, attr = ref.rpartition(":")
    if not module_name or not attr:
        raise UnknownModelError(f"Expected 'package.module:factory', but got {ref!r}; "
                                f"or use one of {', '.join(list_models())}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any failure while importing user code: report it on one line
        raise UnknownModelError(
            f"Cannot import module {module_name!r} of model {ref!r} ({type(err).__name__}: {err}); "
            "expected an importable module on sys.path (check the spelling, install it, or add its folder to PYTHONPATH)"
        ) from err
    factory = getattr(module, attr, None)
    if factory is None:
        raise UnknownModelError(f"Module {module_name!r} has no attribute {attr!r}; "
                                f"expected {ref!r} to name a function that returns an nn.Module")
    if not callable(factory):
        raise UnknownModelError(f"Expected {ref!r} to be callable, but got {type(factory).__name__}; "
                                "name a function or class that returns an nn.Module")
    _check_kwargs(factory, kwargs, what=repr(ref))
    params = _parameters(factory)
    takes_any = params is not None and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    call_kwargs = dict(kwargs)
    for key, value, default in (("num_classes", num_classes, 10), ("in_channels", in_channels, 3)):
        if params is not None and (key in params or takes_any):
            call_kwargs[key] = value
        elif value != default:
            warnings.warn(f"{ref} does not take `{key}`; ignoring {key}={value}", UserWarning, stacklevel=3)
    if pretrained:
        if params is None or not ("pretrained" in params or takes_any):
            raise ConfigError(f"Expected pretrained=False for {ref!r}, but got True and the factory has no "
                              "`pretrained` parameter; load the weights yourself")
        call_kwargs["pretrained"] = True
    model = factory(**call_kwargs)
    if not isinstance(model, nn.Module):
        raise UnknownModelError(f"Expected {ref!r} to return an nn.Module, but got {type(model).__name__}; "
                                "make the factory return the model")
    return model

