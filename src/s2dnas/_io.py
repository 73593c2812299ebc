"""Files: crash-safe writes, and the reading of weights that never runs pickled code.

Writes go to a temporary file in the same directory, fsync, then replace: a reader sees either the
old file or the complete new one, never a partial write; on any error the temporary file is removed
and the old file is left untouched. Weights are safetensors with an optional JSON file of metadata
beside them (``model.safetensors`` + ``model.json``); :func:`read_weights` is shared by the zoo's
shipped weights and the training checkpoints (both sit above this module).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from s2dnas.errors import CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_torch_save", "fsync_dir", "read_json",
           "read_safetensors", "read_weights", "check_state_dict"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry to disk so a create/rename survives a crash (no-op if unsupported).

    Args:
        path: The directory.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike[str], *, binary: bool) -> Iterator[IO[Any]]:
    """Yield a temp file next to ``path``; on success fsync it and move it over ``path``."""
    target = Path(path)
    directory = target.parent
    temp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666 honours the umask, unlike mkstemp's 0o600.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        mode = "wb" if binary else "w"
        encoding = None if binary else "utf-8"
        with open(fd, mode, encoding=encoding, closefd=True) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(directory)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: Destination file; its directory must exist.
        data: The bytes to write.

    Raises:
        OSError: If the file cannot be written; ``path`` is then unchanged.
    """
    with _atomic_open(path, binary=True) as handle:
        handle.write(data)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> None:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically.

    Args:
        path: Destination file; its directory must exist.
        obj: A JSON-serialisable object.
        indent: JSON indentation (``None`` for one line).
        sort_keys: Whether to sort dict keys.

    Raises:
        TypeError: If ``obj`` is not JSON-serialisable; ``path`` is then unchanged.
        OSError: If the file cannot be written; ``path`` is then unchanged.
    """
    with _atomic_open(path, binary=False) as handle:
        json.dump(obj, handle, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
        handle.write("\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically.

    Args:
        path: Destination file; its directory must exist.
        obj: Anything ``torch.save`` accepts (prefer weights-only types: tensors, numbers,
            strings, lists, dicts).

    Raises:
        OSError: If the file cannot be written; ``path`` is then unchanged.
    """
    import torch  # lazy: keep JSON-only users free of the torch import cost

    with _atomic_open(path, binary=True) as handle:
        torch.save(obj, handle)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file.

    Raises:
        CheckpointError: unreadable or not valid JSON (the message names the file).
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"Metadata {path} is not valid JSON ({err}); replace it") from None


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU (no pickled code can run).

    Raises:
        CheckpointError: missing, truncated or not safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist; check the path")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"Weights file {path} is truncated or not safetensors ({err}); replace it") from None


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of a safetensors file and the metadata of the ``.json`` beside it (``{}`` when absent).

    Raises:
        CheckpointError: missing, truncated or not safetensors; metadata not valid JSON.
    """
    path = Path(path)
    tensors = read_safetensors(path)
    meta_path = path.with_suffix(".json")
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"Expected a JSON object in {meta_path}, but got {type(meta).__name__}; replace it")
    return tensors, meta


def check_state_dict(state_dict: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> str | None:
    """Return how ``state_dict`` differs from ``own`` in keys or shapes, or ``None`` if it matches."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    detail = []
    if missing:
        detail.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if wrong:
        k = wrong[0]
        detail.append(f"{k} has shape {tuple(state_dict[k].shape)}, expected {tuple(own[k].shape)}")
    return "; ".join(detail) or None
