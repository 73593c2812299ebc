"""Crash-safe file writes: write a temporary file in the same directory, fsync, then replace.

A reader sees either the old file or the complete new one, never a partial write; on any error
the temporary file is removed and the old file is left untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_torch_save", "fsync_dir"]


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
