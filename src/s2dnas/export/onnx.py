"""Export a multi-stage network to one ONNX graph per stage, a manifest, and TorchScript.

Each stage ``s`` of a :class:`~s2dnas.space.MultiStageNet` is an ordinary network
``stage(x, *cached) -> (logits, *features)``, so it exports as it is (METHOD.md, "Deployment").
The graphs take the input ``"image"`` plus one input ``"feat_<i>"`` per cached feature the stage
reads, and return ``"logits"`` plus the features later stages read; ``feat_<i>`` is one name
across all stages for one cache entry (the manifest maps it to the cache key). Every input and
output has a dynamic batch axis, because the runtime feeds each stage only the inputs still
undecided.

Design choice: the TorchScript-based exporter (``dynamo=False``) is tried first. Stages are
straight-line ``fx`` graphs over standard modules, which it exports quickly (about 0.2 s per
ResNet-20 stage) and predictably, with batch norm folded into the convolutions. If it fails (a
custom op it does not know), the ``torch.export``-based exporter (``dynamo=True``) is tried; the
manifest records which one wrote each graph.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from s2dnas._io import atomic_write_json, fsync_dir
from s2dnas.dynamic.executor import DynamicNet
from s2dnas.dynamic.policy import ExitPolicy, as_policy
from s2dnas.errors import ConfigError, ExportError
from s2dnas.export.torchscript import load_torchscript, quiet_deprecations, save_torchscript, script_stage
from s2dnas_runtime.errors import ExportError as _RuntimeExportError
from s2dnas_runtime.manifest import FORMAT, FORMAT_VERSION, IMAGE_INPUT, LOGITS_OUTPUT, MANIFEST_NAME, read_manifest
from s2dnas_runtime.preprocessing import Preprocessing

__all__ = ["export_dynamic", "export_stage_onnx", "plan_features", "preprocessing_of", "prune_stage", "StageIO"]

_logger = logging.getLogger(__name__)

_PIP_HINT = "pip install 's2dnas[export]'"
TOLERANCE = 1e-4  # max abs difference accepted between ONNX Runtime / TorchScript and eager PyTorch


@dataclass(frozen=True)
class StageIO:
    """Names of one stage's graph inputs and outputs and the cache keys they carry.

    Attributes:
        keep: indices into ``net.writes[s]`` of the features that later stages read.
        inputs: ``((name, cache_key or None), ...)``, the image first.
        outputs: ``((name, cache_key or None), ...)``, the logits first.
    """

    keep: tuple[int, ...]
    inputs: tuple[tuple[str, str | None], ...]
    outputs: tuple[tuple[str, str | None], ...]


def plan_features(reads: Sequence[Sequence[str]], writes: Sequence[Sequence[str]]) -> list[StageIO]:
    """Name the cached features: ``feat_<i>`` for every cache key some later stage reads.

    Features a stage writes that no later stage reads are dropped from its graph's outputs.

    Args:
        reads: per stage, the cache keys it reads (argument order).
        writes: per stage, the cache keys it writes (output order, after the logits).

    Returns:
        One :class:`StageIO` per stage.

    Raises:
        ExportError: a stage reads a key that no earlier stage writes, or a key is written twice.
    """
    num_stages = len(reads)
    writer: dict[str, int] = {}
    for s, keys in enumerate(writes):
        for k in keys:
            if k in writer:
                raise ExportError(f"Cache key {k!r} is written by stages {writer[k] + 1} and {s + 1}; "
                                  "each feature must have one writer")
            writer[k] = s
    names: dict[str, str] = {}
    plan = []
    for s in range(num_stages):
        inputs: list[tuple[str, str | None]] = [(IMAGE_INPUT, None)]
        for k in reads[s]:
            if writer.get(k, num_stages) >= s:
                raise ExportError(f"Stage {s + 1} reads cache key {k!r}, which no earlier stage writes")
            inputs.append((names[k], k))
        read_later = {k for t in range(s + 1, num_stages) for k in reads[t]}
        keep: list[int] = []
        outputs: list[tuple[str, str | None]] = [(LOGITS_OUTPUT, None)]
        for i, k in enumerate(writes[s]):
            if k in read_later:
                names[k] = f"feat_{len(names)}"
                keep.append(i)
                outputs.append((names[k], k))
        plan.append(StageIO(tuple(keep), tuple(inputs), tuple(outputs)))
    return plan


def prune_stage(stage: fx.GraphModule, keep: Sequence[int]) -> fx.GraphModule:
    """A copy of ``stage`` returning ``(logits, *[features[i] for i in keep])``, dead code removed.

    Parameters and submodules are shared with ``stage`` (not copied).
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    old_out = graph.graph_copy(stage.graph, env)  # the copied output value, or None
    assert old_out is not None, "a stage graph must have an output node"
    values = old_out if isinstance(old_out, (tuple, list)) else (old_out,)
    graph.output((values[0], *[values[1 + i] for i in keep]))
    pruned = fx.GraphModule(stage, graph, class_name=type(stage).__name__)
    pruned.graph.eliminate_dead_code()  # needs the owning module for its purity check
    pruned.graph.lint()
    pruned.delete_all_unused_submodules()
    pruned.recompile()
    return pruned


def export_stage_onnx(module: nn.Module, args: Sequence[torch.Tensor], path: str | os.PathLike[str], *,
                      input_names: Sequence[str], output_names: Sequence[str], opset: int = 17) -> str:
    """Export one stage with a dynamic batch axis on every input and output.

    Args:
        module: the stage, in eval mode.
        args: example inputs ``(x, *cached)``.
        path: the ``.onnx`` file to write.
        input_names: one name per input.
        output_names: one name per output.
        opset: ONNX opset version.

    Returns:
        The exporter that succeeded: ``"torchscript"`` or ``"dynamo"``.

    Raises:
        ExportError: both exporters failed.
    """
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    with quiet_deprecations():
        try:
            torch.onnx.export(module, tuple(args), str(path), input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
            return "torchscript"
        except Exception as err:  # noqa: BLE001 - the exporter raises many unrelated types
            legacy_error = err
            _logger.info("TorchScript-based ONNX export failed (%s); trying dynamo=True", _first_line(err))
        try:
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(module, tuple(args), None, input_names=list(input_names),
                                        output_names=list(output_names), opset_version=opset,
                                        dynamic_shapes=tuple({0: batch} for _ in args), dynamo=True,
                                        verbose=False)
            program.save(str(path))
            return "dynamo"
        except Exception as err:  # noqa: BLE001
            raise ExportError(f"ONNX export failed with both exporters: dynamo=False: {_first_line(legacy_error)}; "
                              f"dynamo=True: {_first_line(err)}") from err


def preprocessing_of(model_spec: dict[str, Any] | None, input_shape: Sequence[int]) -> Preprocessing | None:
    """The input preprocessing a saved model records, for the export manifest.

    ``model_spec["data"]["preprocessing"]`` when the data package stored one; else, for models
    saved before it existed, the spec's ``mean``/``std`` at the network's own input size; else
    ``None``.

    Raises:
        ConfigError: the recorded preprocessing is invalid or is for another input shape.
    """
    spec = model_spec or {}
    c, h, w = (int(v) for v in input_shape)
    data = spec.get("data") or {}
    try:
        if isinstance(data, dict) and data.get("preprocessing") is not None:
            pre = Preprocessing.from_dict(data["preprocessing"])
        elif spec.get("mean") and spec.get("std"):
            pre = Preprocessing(input_size=(h, w), channels=c, mean=spec["mean"], std=spec["std"])
        else:
            return None
    except ValueError as err:
        raise ConfigError(f"Invalid input preprocessing in the model spec: {err}") from None
    if pre.input_shape != (c, h, w):
        raise ConfigError(f"Expected the model's preprocessing to produce inputs {[c, h, w]}, but it describes "
                          f"{list(pre.input_shape)}; re-save the model with the right data spec")
    return pre


def export_dynamic(net: DynamicNet | nn.Module, out_dir: str | os.PathLike[str], *,
                   policy: ExitPolicy | None = None, class_names: Sequence[str] | None = None,
                   preprocessing: Preprocessing | None = None, opset: int = 17, torchscript: bool = True,
                   check: bool = True) -> Path:
    """Export a dynamic network and its exit policy to a directory for deployment.

    Writes ``stage{s}.onnx`` (``s = 1..S``), ``manifest.json`` and, with ``torchscript``,
    ``stage{s}.pt``. Everything is written into a temporary directory next to ``out_dir`` and
    moved into place only when complete (and checked): a failed export leaves an existing
    ``out_dir`` untouched. An existing ``out_dir`` is only replaced if it is empty or is an
    earlier export (holds ``manifest.json``), so a mistyped path cannot wipe unrelated files.

    Args:
        net: a :class:`~s2dnas.dynamic.DynamicNet` (its policy, per-stage MACs, class names and
            preprocessing are exported), or a bare :class:`~s2dnas.space.MultiStageNet`
            (``policy`` is then required). Exported in eval mode; its training flag is restored.
        out_dir: the export directory.
        policy: the :class:`~s2dnas_runtime.ExitPolicy` to export (default: the DynamicNet's).
        class_names: ``K`` class names, or empty (default: the DynamicNet's model spec's).
        preprocessing: the input preprocessing (default: the DynamicNet's model spec's, see
            :func:`preprocessing_of`; none for a bare network).
        opset: ONNX opset version.
        torchscript: also write a TorchScript file per stage.
        check: run every exported stage in ONNX Runtime (and TorchScript) on a random batch and
            compare with PyTorch (max abs difference ``<= 1e-4``).

    Returns:
        The export directory.

    Raises:
        CalibrationError: a policy for another number of stages.
        ConfigError: no policy, invalid class names, preprocessing or opset.
        ExportError: a stage fails to export or to match PyTorch (the message names the stage),
            or ``out_dir`` cannot be written or holds something other than an export.
        ImportError: onnx (or, with ``check``, onnxruntime) is not installed.
    """
    dynamic = net if isinstance(net, DynamicNet) else None
    msnet = dynamic.msnet if dynamic is not None else net
    for attr in ("stages", "reads", "writes", "input_shape"):
        if not hasattr(msnet, attr):
            raise ConfigError(f"Expected a DynamicNet or MultiStageNet (with `{attr}`), but got {type(net).__name__}; "
                              "build one with Space.build() or load one with s2dnas.dynamic.load()")
    num_stages = len(msnet.stages)
    input_shape = tuple(int(v) for v in msnet.input_shape)
    if policy is None:
        if dynamic is None:
            raise ConfigError("Expected an exit policy with a bare MultiStageNet, but got none; pass "
                              "policy=ExitPolicy(thresholds=...) or export a DynamicNet")
        policy = dynamic.policy
    policy = as_policy(policy, num_stages=num_stages)
    spec = dynamic.model_spec if dynamic is not None else None
    if class_names is None:
        class_names = (spec or {}).get("class_names") or ()
    if preprocessing is None and dynamic is not None:
        preprocessing = preprocessing_of(spec, input_shape)
    if preprocessing is not None and preprocessing.input_shape != input_shape:
        raise ConfigError(f"Expected preprocessing for inputs {list(input_shape)}, but it describes "
                          f"{list(preprocessing.input_shape)}")
    stage_macs = dynamic.stage_macs if dynamic is not None else None
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 9:
        raise ConfigError(f"Invalid export options: `opset` must be an integer >= 9, got {opset!r}")
    net = msnet
    _require("onnx")
    if check:
        _require("onnxruntime")
    plan = plan_features(net.reads, net.writes)
    out = Path(out_dir)
    _check_out_dir(out)

    was_training = net.training
    net.eval()
    tmp: Path | None = None
    try:
        macs = [int(v) for v in (stage_macs if stage_macs is not None else net.stage_macs())]
        param = next(iter(net.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            tmp.mkdir()
        except OSError as err:
            raise ExportError(f"Cannot create the export directory next to {out} ({err.strerror}); expected a "
                              "writable folder: choose another --out") from None

        stages = [prune_stage(net.stages[s], plan[s].keep) for s in range(num_stages)]
        # Example batch of 2 for export; the check uses 3 so a frozen batch size would show.
        example = _stage_inputs(stages, plan, _random_batch(2, input_shape, device))
        num_classes = int(example[0][1][0].shape[1])
        names = [str(n) for n in class_names]
        if names and len(names) != num_classes:
            raise ConfigError(f"Expected {num_classes} class names (one per output), but got {len(names)}")

        entries = []
        for s in range(num_stages):
            args = example[s][0]
            exporter = export_stage_onnx(stages[s], args, tmp / f"stage{s + 1}.onnx",
                                         input_names=[n for n, _ in plan[s].inputs],
                                         output_names=[n for n, _ in plan[s].outputs], opset=opset)
            ts_file, ts_method = None, None
            if torchscript:
                scripted, ts_method = script_stage(stages[s], args)
                ts_file = f"stage{s + 1}.pt"
                save_torchscript(scripted, tmp / ts_file)
            entries.append({
                "onnx": f"stage{s + 1}.onnx",
                "onnx_exporter": exporter,
                "onnx_opset": _file_opset(tmp / f"stage{s + 1}.onnx"),
                "torchscript": ts_file,
                "torchscript_method": ts_method,
                "macs": macs[s],
                "inputs": [{"name": n, "cache_key": k} for n, k in plan[s].inputs],
                "outputs": [{"name": n, "cache_key": k} for n, k in plan[s].outputs],
            })
            _logger.info("exported stage %d (%s, TorchScript: %s)", s + 1, exporter, ts_method)

        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "num_stages": num_stages,
            "num_classes": num_classes,
            "input_shape": list(input_shape),
            "class_names": names,
            "preprocessing": None if preprocessing is None else preprocessing.to_dict(),
            "policy": policy.to_dict(),
            "stage_macs": macs,
            "opset": int(opset),  # requested; stages[s].onnx_opset is what each file holds
            "features": {n: k for st in plan for n, k in st.outputs[1:]},
            "stages": entries,
            "architecture": _architecture_dict(net),
            "torch_version": torch.__version__.split("+")[0],
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        try:
            read_manifest(tmp)  # the runtime's own validation: what we wrote, it can read
        except _RuntimeExportError as err:
            raise ExportError(f"Internal error: the runtime rejects the manifest just written: {err}") from None
        if check:
            _check_export(tmp, stages, plan, input_shape, device, torchscript=torchscript)
        _replace_dir(tmp, out)
        tmp = None
    finally:
        net.train(was_training)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _logger.info("wrote %s", out)
    return out


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as err:
        raise ImportError(f"Export needs the optional dependency {module!r}; install it with: {_PIP_HINT}") from err


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"Export path {out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).exists():
        raise ExportError(f"Export directory {out} is not empty and holds no {MANIFEST_NAME} (not an earlier "
                          "export); refusing to replace it: choose another --out or remove it")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an existing ``out`` is replaced only if that works."""
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as err:
        raise ExportError(f"Cannot move the export into {out} ({err.strerror}); any earlier export there is "
                          "kept: choose another --out") from None
    fsync_dir(out.parent)


def _random_batch(batch: int, input_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *input_shape, generator=generator).to(device)


def _stage_inputs(stages: Sequence[nn.Module], plan: Sequence[StageIO], x: torch.Tensor
                  ) -> list[tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]]:
    """Run the (pruned) stages in order: per stage, its inputs and its eager outputs."""
    cache: dict[str, torch.Tensor] = {}
    result = []
    with torch.no_grad():
        for s, stage in enumerate(stages):
            args = (x, *[cache[k] for _, k in plan[s].inputs[1:]])
            outs = stage(*args)
            outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
            cache.update({k: v for (_, k), v in zip(plan[s].outputs[1:], outs[1:])})
            result.append((args, outs))
    return result


def _check_export(directory: Path, stages: Sequence[nn.Module], plan: Sequence[StageIO],
                  input_shape: tuple[int, ...], device: torch.device, *, torchscript: bool) -> None:
    """Compare every exported stage with eager PyTorch on a random batch of 3."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    runs = _stage_inputs(stages, plan, _random_batch(3, input_shape, device))
    for s, (args, expected) in enumerate(runs):
        file = directory / f"stage{s + 1}.onnx"
        try:
            onnx.checker.check_model(str(file))
            session = ort.InferenceSession(str(file), sess_options=options, providers=["CPUExecutionProvider"])
            feeds = {n: a.detach().cpu().numpy() for (n, _), a in zip(plan[s].inputs, args)}
            got = session.run([n for n, _ in plan[s].outputs], feeds)
        except Exception as err:  # noqa: BLE001 - onnx/onnxruntime raise many types
            raise ExportError(f"Stage {s + 1}: the exported ONNX graph does not run in ONNX Runtime: "
                              f"{_first_line(err)}") from err
        _compare(s, "ONNX Runtime", [torch.from_numpy(g) for g in got], expected, plan[s])
        if torchscript:
            loaded = load_torchscript(directory / f"stage{s + 1}.pt", map_location=device)
            with torch.no_grad():
                ts_out = loaded(*args)
            _compare(s, "TorchScript", list(ts_out), expected, plan[s])


def _compare(stage: int, what: str, got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
             io: StageIO) -> None:
    if len(got) != len(expected):
        raise ExportError(f"Stage {stage + 1}: {what} returns {len(got)} outputs, PyTorch {len(expected)}")
    for (name, _), g, e in zip(io.outputs, got, expected):
        e = e.detach().cpu()
        g = g.detach().cpu()
        if tuple(g.shape) != tuple(e.shape):
            raise ExportError(f"Stage {stage + 1}: {what} output {name!r} has shape {tuple(g.shape)}, "
                              f"PyTorch {tuple(e.shape)}")
        diff = float((g.float() - e.float()).abs().max()) if e.numel() else 0.0
        if not diff <= TOLERANCE:
            raise ExportError(f"Stage {stage + 1}: {what} output {name!r} differs from PyTorch by {diff:.3g} "
                              f"(max abs; tolerance {TOLERANCE:g})")


def _file_opset(path: Path) -> int:
    """The default-domain opset actually written (the dynamo exporter may raise the requested one)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _architecture_dict(net: nn.Module) -> Any:
    arch = getattr(net, "architecture", None)
    to_dict = getattr(arch, "to_dict", None)
    return to_dict() if callable(to_dict) else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
