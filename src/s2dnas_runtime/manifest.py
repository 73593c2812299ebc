"""The export manifest: its format, and reading and validating it (``manifest.json``).

The runtime owns the format; the exporter (``s2dnas.export``) writes it and validates what it
wrote with :func:`read_manifest`. Version 2 carries the exit policy whole (``"policy"``, an
:meth:`ExitPolicy.to_dict`) and the input preprocessing (``"preprocessing"``, a
:meth:`Preprocessing.to_dict` or ``null``); version 1 (top-level ``thresholds``, ``confidence``
and ``normalization``) is still read, and :func:`manifest_policy` / :func:`manifest_preprocessing`
give the same objects for both.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from s2dnas_runtime.errors import ExportError, PolicyError
from s2dnas_runtime.policy import ExitPolicy
from s2dnas_runtime.preprocessing import Preprocessing

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IMAGE_INPUT",
    "LOGITS_OUTPUT",
    "MANIFEST_NAME",
    "manifest_policy",
    "manifest_preprocessing",
    "read_manifest",
]

FORMAT = "s2dnas-dynamic-onnx"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
IMAGE_INPUT = "image"
LOGITS_OUTPUT = "logits"


def _fail(path: Path, problem: str) -> ExportError:
    return ExportError(f"Malformed export manifest {path}: {problem}; re-export the model with `s2dnas export`")


def manifest_policy(manifest: dict[str, Any]) -> ExitPolicy:
    """The exit policy of a manifest read by :func:`read_manifest` (either version).

    Raises:
        PolicyError: the policy is invalid (:func:`read_manifest` has already checked it).
    """
    if manifest.get("format_version") == 1:
        return ExitPolicy(thresholds=manifest["thresholds"], confidence=manifest["confidence"],
                          stage_cost=manifest["stage_macs"])
    return ExitPolicy.from_dict(manifest["policy"])


def manifest_preprocessing(manifest: dict[str, Any]) -> Preprocessing | None:
    """The input preprocessing of a manifest (either version), or ``None`` when it has none.

    A version-1 manifest's ``normalization`` becomes a preprocessing at the network's input size.

    Raises:
        ValueError: the entry is invalid (:func:`read_manifest` has already checked it).
    """
    if manifest.get("format_version") == 1:
        norm = manifest.get("normalization")
        if norm is None:
            return None
        c, h, w = manifest["input_shape"]
        return Preprocessing(input_size=(h, w), channels=c, mean=norm["mean"], std=norm["std"])
    entry = manifest.get("preprocessing")
    return None if entry is None else Preprocessing.from_dict(entry)


def _names(entries: Any, path: Path, where: str) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not entries:
        raise _fail(path, f"{where} must be a non-empty list")
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise _fail(path, f"every entry of {where} needs a string 'name', got {e!r}")
        if e.get("cache_key") is not None and not isinstance(e["cache_key"], str):
            raise _fail(path, f"{where}: 'cache_key' must be a string or null, got {e['cache_key']!r}")
    return entries


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``<directory>/manifest.json`` of an exported dynamic network.

    Checks the format and version, the counts (stages, MACs), the exit policy (with
    :meth:`ExitPolicy.validate`, the one threshold check), the preprocessing entry, that every
    stage file exists, and that every feature a stage reads is written by an earlier stage.

    Args:
        directory: the export directory.

    Returns:
        The manifest as a dict (see ``docs/design.md``, "Export format").

    Raises:
        ExportError: with one line naming the file and the problem (a missing stage file
            included).
    """
    root = Path(directory)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ExportError(f"Export directory {root} does not exist; run `s2dnas export` first")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"{path} is missing: {root} is not an s2dnas export directory") from None
    except OSError as err:
        raise ExportError(f"Cannot read {path} ({err.strerror})") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(path, f"invalid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(m, dict):
        raise _fail(path, "expected a JSON object")
    if m.get("format") != FORMAT:
        raise _fail(path, f"expected format {FORMAT!r}, got {m.get('format')!r}")
    version = m.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise _fail(path, f"format_version {version!r} is not supported by this runtime (supports 1..{FORMAT_VERSION})")
    own = ("thresholds", "confidence", "normalization") if version == 1 else ("policy", "preprocessing")
    missing = [k for k in ("num_stages", "num_classes", "input_shape", "stages", "stage_macs", "class_names", *own)
               if k not in m]
    if missing:
        raise _fail(path, f"missing field(s) {missing}")
    num_stages = m["num_stages"]
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 1:
        raise _fail(path, f"num_stages must be an integer >= 1, got {num_stages!r}")
    if isinstance(m["num_classes"], bool) or not isinstance(m["num_classes"], int) or m["num_classes"] < 1:
        raise _fail(path, f"num_classes must be an integer >= 1, got {m['num_classes']!r}")
    shape = m["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise _fail(path, f"input_shape must be [C, H, W] of positive integers, got {shape!r}")
    macs = m["stage_macs"]
    if not (isinstance(macs, list) and len(macs) == num_stages
            and all(isinstance(v, int) and not isinstance(v, bool) for v in macs)):
        raise _fail(path, f"stage_macs must be {num_stages} integers, got {macs!r}")
    try:
        manifest_policy(m).validate(num_stages=num_stages)
    except PolicyError as err:
        raise _fail(path, f"invalid exit policy: {err}") from None
    try:
        pre = manifest_preprocessing(m)
    except (ValueError, TypeError, KeyError) as err:
        raise _fail(path, f"invalid {'normalization' if version == 1 else 'preprocessing'}: {err}") from None
    if pre is not None and pre.input_shape != tuple(shape):
        raise _fail(path, f"preprocessing describes inputs {list(pre.input_shape)}, but input_shape is {shape}")
    names = m["class_names"]
    if not (isinstance(names, list) and all(isinstance(v, str) for v in names)
            and len(names) in (0, m["num_classes"])):
        raise _fail(path, f"class_names must be [] or {m['num_classes']} strings")
    stages = m["stages"]
    if not isinstance(stages, list) or len(stages) != num_stages:
        raise _fail(path, f"stages must list {num_stages} entries")
    available: set[str] = set()
    for s, entry in enumerate(stages):
        where = f"stages[{s}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("onnx"), str):
            raise _fail(path, f"{where} needs an 'onnx' file name")
        onnx_file = root / entry["onnx"]
        if Path(entry["onnx"]).name != entry["onnx"]:
            raise _fail(path, f"{where}.onnx must be a file name inside the directory, got {entry['onnx']!r}")
        if not onnx_file.is_file():
            raise ExportError(f"Stage {s + 1} file {onnx_file} is missing; the export directory is incomplete, "
                              "re-export the model with `s2dnas export`")
        inputs = _names(entry.get("inputs"), path, f"{where}.inputs")
        outputs = _names(entry.get("outputs"), path, f"{where}.outputs")
        if inputs[0]["name"] != IMAGE_INPUT or outputs[0]["name"] != LOGITS_OUTPUT:
            raise _fail(path, f"{where}: the first input must be {IMAGE_INPUT!r} and the first output {LOGITS_OUTPUT!r}")
        for e in inputs[1:]:
            if e.get("cache_key") is None or e["name"] not in available:
                raise _fail(path, f"{where} reads feature {e['name']!r}, which no earlier stage writes")
        for e in outputs[1:]:
            if e.get("cache_key") is None:
                raise _fail(path, f"{where}: feature output {e['name']!r} has no cache_key")
            available.add(e["name"])
    return m
