"""Loading a dynamic model directory (written by :meth:`DynamicNet.save`) as a :class:`DynamicNet`.

The format and the writing live in :mod:`s2dnas.dynamic.files`, below the executor; loading
builds a :class:`DynamicNet`, so it sits above it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from s2dnas.dynamic.executor import DynamicNet
from s2dnas.dynamic.files import (
    MODEL_FILES,
    MODEL_FORMAT,
    REQUIRED_SPEC_KEYS,
    build_model_spec,
    check_weights,
    read_json,
    read_policy,
    read_weights,
    save_dynamic,
)
from s2dnas.errors import CheckpointError, S2DNASError

__all__ = ["MODEL_FILES", "build_model_spec", "load", "save_dynamic"]


def load(directory: str | os.PathLike[str], *, device: torch.device | str | None = None) -> DynamicNet:
    """Load a dynamic model directory written by :meth:`DynamicNet.save`.

    Nothing is unpickled: the metadata is JSON and the weights are safetensors.

    Args:
        directory: the model directory.
        device: where to put the network: a torch device, ``"auto"``, ``"cpu"``, ``"cuda[:N]"``
            (default: CPU).

    Returns:
        The :class:`DynamicNet`, in eval mode; ``net.model_spec`` is model.json (its ``data``
        entry included) and ``net.policy`` thresholds.json.

    Raises:
        CheckpointError: missing directory or file, malformed JSON, an invalid exit policy
            (e.g. thresholds written as booleans), truncated or unsafe weights, weights of
            another model, or a base model that cannot be rebuilt.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"Expected a dynamic model directory at {root}, but it does not exist; pass the "
                              "directory written by DynamicNet.save")
    spec = read_json(root / "model.json")
    if not isinstance(spec, dict) or spec.get("format") != MODEL_FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise CheckpointError(f"Expected {root / 'model.json'} to have format {MODEL_FORMAT!r}, but got {got!r}; "
                              "it was not written by DynamicNet.save")
    missing = [k for k in (*REQUIRED_SPEC_KEYS, "input_shape") if spec.get(k) is None]
    if missing:
        raise CheckpointError(f"Expected {root / 'model.json'} to have {', '.join(missing)}, but they are missing; "
                              "re-save the model")
    from s2dnas.config import SpaceConfig
    from s2dnas.space import Architecture
    from s2dnas.space.factory import build_space
    from s2dnas.zoo import create_model

    try:
        arch = Architecture.from_dict(read_json(root / "architecture.json"))
    except CheckpointError:
        raise
    except S2DNASError as err:
        raise CheckpointError(f"Invalid {root / 'architecture.json'}: {err}") from None
    stage_macs = spec.get("stage_macs")
    if not isinstance(stage_macs, list) or len(stage_macs) != arch.num_stages:
        stage_macs = None  # counted again on first use
    policy = read_policy(root / "thresholds.json", num_stages=arch.num_stages, stage_macs=stage_macs)
    tensors = read_weights(root / "weights.safetensors", expected_sha=spec.get("weights_sha256"))

    try:
        base = create_model(str(spec["model"]), num_classes=int(spec["num_classes"]),
                            in_channels=int(spec["in_channels"]))
        # the space's options as saved (models saved before channel_multiple existed were cut at 1)
        config = SpaceConfig(num_stages=arch.num_stages, ratio_grid=arch.ratio_grid,
                             groups=str(spec.get("groups") or "resolution"),
                             importance=str(spec.get("importance") or "bn"),
                             channel_multiple=int(spec.get("channel_multiple") or 1))
        space = build_space(base, config=config, input_shape=tuple(int(v) for v in spec["input_shape"]),
                            model_name=str(spec["model"]))
        msnet = space.build(arch)
    except (S2DNASError, TypeError, ValueError) as err:
        raise CheckpointError(f"Cannot rebuild the model of {root} (model {spec.get('model')!r}): {err}") from None
    check_weights(tensors, msnet.state_dict(), source=root / "weights.safetensors")
    msnet.load_state_dict(tensors, strict=True)
    msnet.eval()
    if device is None:
        target = torch.device("cpu")
    elif isinstance(device, str):
        from s2dnas._device import resolve_device

        target = resolve_device(device)
    else:
        target = torch.device(device)
    msnet.to(target)
    keep = {k: v for k, v in spec.items() if k not in ("format", "stage_macs", "weights_sha256")}
    keep.setdefault("data", None)
    net = DynamicNet(msnet, policy, stage_macs=stage_macs, model_spec=keep)
    return net.eval()
