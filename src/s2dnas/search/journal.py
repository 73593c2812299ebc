"""Journal of evaluated candidates: one JSON line per candidate, appended and fsynced.

The journal is what makes a search resumable without losing work: every evaluated candidate is
on disk before the search moves on, and :meth:`Journal.lookup` lets a resumed (or repeating)
search reuse a score instead of evaluating the same sample again.

A record has the keys ``index``, ``sample``, ``architecture`` (any JSON dict or ``None``),
``metrics`` (dict), ``reward``, ``seconds`` and ``time`` (Unix time of the append).

Crash model: a line is written with one ``write`` call, then flushed and fsynced. A crash can
leave a truncated (or garbage) *last* line; reading ignores it with a warning and the next
append cuts it away. Any other unreadable line is real corruption and raises
:class:`~s2dnas.errors.CheckpointError`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s2dnas._io import fsync_dir
from s2dnas.errors import CheckpointError

__all__ = ["Journal", "sample_key"]

_logger = logging.getLogger(__name__)


def _json_default(obj: Any) -> Any:
    """Convert numpy scalars (anything with ``.item()``) to Python numbers for JSON."""
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def sample_key(sample: Mapping[str, Any]) -> str:
    """Return the canonical JSON of a sample (sorted keys, no spaces), used as lookup key.

    Args:
        sample: Decision name -> choice index.

    Returns:
        A string equal for equal samples, whatever their key order.
    """
    return json.dumps(dict(sample), sort_keys=True, separators=(",", ":"), default=_json_default)


class Journal:
    """Append-only JSONL file of evaluated candidates.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "journal.jsonl"
        >>> journal = Journal(path)
        >>> record = journal.append({"sample": {"b": 1, "a": 0}, "reward": 0.5})
        >>> record["index"], journal.lookup({"a": 0, "b": 1})["reward"]
        (0, 0.5)
        >>> len(Journal(path))
        1

    Args:
        path: The ``.jsonl`` file; created (with its directory) on the first append.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._records: list[dict[str, Any]] | None = None  # None: not read yet
        self._index: dict[str, dict[str, Any]] = {}
        self._valid_end = 0  # byte offset just after the last valid line
        self._needs_newline = False  # last valid line was complete but lacks its "\n"
        self._file_size = 0  # size of the file when last read or written by us

    # ------------------------------------------------------------------ reading

    def records(self) -> list[dict[str, Any]]:
        """Return all complete records, oldest first.

        A truncated or corrupt last line is ignored with a warning.

        Returns:
            A list of copies of the records.

        Raises:
            CheckpointError: If a line other than the last is not a JSON object.
        """
        self._ensure_loaded()
        assert self._records is not None
        return [json.loads(json.dumps(r)) for r in self._records]

    def lookup(self, sample: Mapping[str, Any]) -> dict[str, Any] | None:
        """Return the most recent record of ``sample`` (any key order), or ``None``.

        Args:
            sample: Decision name -> choice index.

        Returns:
            A copy of the record, or ``None`` if the sample was never journaled.
        """
        self._ensure_loaded()
        record = self._index.get(sample_key(sample))
        return None if record is None else json.loads(json.dumps(record))

    def foreign_config_hashes(self, mine: str) -> list[str]:
        """The ``config_hash`` values of the records other than ``mine`` (sorted, distinct; records
        without one are not counted): non-empty when another configuration wrote into this journal."""
        self._ensure_loaded()
        assert self._records is not None
        return sorted({r.get("config_hash") for r in self._records} - {None, mine})

    @property
    def num_samples(self) -> int:
        """The number of distinct samples in the journal."""
        self._ensure_loaded()
        return len(self._index)

    def __len__(self) -> int:
        self._ensure_loaded()
        assert self._records is not None
        return len(self._records)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # ------------------------------------------------------------------ writing

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record as a line, then flush and fsync.

        Missing fields are filled in: ``index`` (the number of records before it),
        ``architecture`` (``None``), ``metrics`` (``{}``), ``seconds`` (``None``) and ``time``
        (now). A truncated last line left by a crash is removed first.

        Args:
            record: At least ``sample`` (dict) and ``reward`` (number); any other keys are kept.

        Returns:
            The record as written.

        Raises:
            ValueError: If ``sample`` or ``reward`` is missing or malformed.
            TypeError: If the record is not JSON-serialisable.
        """
        if not isinstance(record, Mapping):
            raise TypeError(f"Expected a record dict, but got {type(record).__name__}.")
        if not isinstance(record.get("sample"), Mapping):
            raise ValueError(
                f"Expected the record to have a `sample` dict, but got {record.get('sample')!r}."
            )
        if "reward" not in record:
            raise ValueError("Expected the record to have a `reward`, but it has none.")
        self._ensure_loaded()
        assert self._records is not None
        full: dict[str, Any] = {
            "index": len(self._records),
            "sample": dict(record["sample"]),
            "architecture": None,
            "metrics": {},
            "reward": record["reward"],
            "seconds": None,
            "time": time.time(),
        }
        full.update(record)
        # Serialise before touching the file, so a bad record cannot damage the journal; the
        # round trip also gives back exactly what a later read will see.
        line = json.dumps(full, default=_json_default, ensure_ascii=False)
        written = json.loads(line)
        data = ("\n" if self._needs_newline else "") + line + "\n"

        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with open(self.path, "ab") as handle:
            if handle.tell() != self._valid_end:
                _logger.warning(
                    "Removing %d byte(s) of a truncated last line from %s",
                    handle.tell() - self._valid_end,
                    self.path,
                )
                handle.truncate(self._valid_end)
                handle.seek(self._valid_end)
            handle.write(data.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            self._valid_end = self._file_size = handle.tell()
        if created:
            fsync_dir(self.path.parent)
        self._needs_newline = False
        self._add(written)
        return json.loads(line)

    # ------------------------------------------------------------------ internals

    def _ensure_loaded(self) -> None:
        """Read the file once; re-read it if its size changed behind our back."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if self._records is not None and size == self._file_size:
            return
        self._load()

    def _load(self) -> None:
        self._records = []
        self._index = {}
        self._valid_end = 0
        self._needs_newline = False
        if not self.path.exists():
            self._file_size = 0
            return
        data = self.path.read_bytes()
        self._file_size = len(data)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the file ends with a newline
        offset = 0
        for number, raw in enumerate(lines, start=1):
            is_last = number == len(lines)
            end = offset + len(raw) + (0 if is_last and not data.endswith(b"\n") else 1)
            if raw.strip() == b"":  # tolerate blank lines (e.g. edited by hand)
                offset = end
                if not is_last:
                    self._valid_end = end
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                if is_last:
                    _logger.warning(
                        "Ignoring a truncated or corrupt last line %d of %s (%s); it will be "
                        "removed by the next append.",
                        number,
                        self.path,
                        exc,
                    )
                    break
                raise CheckpointError(
                    f"Corrupt journal {self.path}: line {number} is not a JSON object ({exc}). "
                    "Only the last line may be damaged by a crash; fix or remove that line."
                ) from exc
            self._add(record)
            offset = end
            self._valid_end = end
            self._needs_newline = is_last and not data.endswith(b"\n")

    def _add(self, record: dict[str, Any]) -> None:
        assert self._records is not None
        self._records.append(record)
        sample = record.get("sample")
        if isinstance(sample, Mapping):
            self._index[sample_key(sample)] = record
