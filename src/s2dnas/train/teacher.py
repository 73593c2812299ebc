"""A distillation teacher that remembers its logits, so the same batch is never run through it twice.

Every training loop here draws its batches from ``(seed, epoch)`` alone, so trainings that share
the seed, the batch size and the image limit feed the teacher the same tensors: all the candidates
of one search, the thin static models of a benchmark, a final training of the same seed. The
teacher's forward pass is a large part of such a training (with a small student, most of it).

:class:`CachedTeacher` keys each batch by its content (bytes, shape, dtype, strides, device
type) and by the teacher (its weights, torch version, thread count), so a hit returns the logits a
new forward pass would give, bit for bit (where the teacher's forward pass is deterministic, as it
is on the CPU), and anything else misses. It caches only in eval mode without autograd (how every
training loop here calls a teacher); otherwise it is the teacher. Each entry keeps the seconds its
forward pass took, and :attr:`CachedTeacher.seconds_read_back` sums those of the hits on entries
another teacher object computed (another run, row or process sharing the store): the training
loops record it per epoch (``teacher_seconds_read_back``), so a training that read logits another
one computed can say how long it would have taken alone (``make bench``'s build times do).
"""
from __future__ import annotations

import copy
import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2dnas.errors import ConfigError
from s2dnas.train.checkpoint import hash_tensor

__all__ = ["LogitStore", "CachedTeacher", "MEMORY_BUDGET_BYTES"]

#: How many bytes of logits an in-memory store keeps (the rest is computed as usual).
MEMORY_BUDGET_BYTES = 256 * 2**20
_COLUMNS = ("key", "dtype", "shape", "data", "seconds")
_COMMIT_EVERY = 64  # SQLite puts between commits: a crash loses at most these (they are recomputed)


class LogitStore:
    """Logits by key: in memory up to ``max_bytes``, or in an SQLite file at ``path`` (no bound,
    kept across processes: a resumed or later run on the same teacher starts with them; an existing
    file is checked at once, a new one written at the first :meth:`put`).

    Counts ``hits`` and ``misses`` (:meth:`get`). Each entry is the logits and the seconds their
    forward pass took."""

    def __init__(self, path: str | Path | None = None, *, max_bytes: int = MEMORY_BUDGET_BYTES) -> None:
        self.path = None if path is None else Path(path)
        self.max_bytes = max_bytes
        self.hits = self.misses = 0
        self._memory: dict[bytes, tuple[torch.Tensor, float]] = {}
        self._bytes = 0
        self._pending = 0
        self._db: sqlite3.Connection | None = None
        self._connection(create=False)  # a file that is not a logit cache is refused here

    def _connection(self, *, create: bool) -> sqlite3.Connection | None:
        """The SQLite file, opened (and made, when ``create``) on first use; None for a memory store."""
        if self._db is None and self.path is not None and (create or self.path.exists()):
            self._db = _open(self.path)
        return self._db

    def get(self, key: bytes) -> tuple[torch.Tensor, float] | None:
        """The logits stored under ``key`` (CPU) and their forward pass's seconds, or None."""
        found = self._memory.get(key) if self.path is None else _read(self._connection(create=False), key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: bytes, logits: torch.Tensor, *, seconds: float) -> None:
        """Keep ``logits`` (copied to the CPU), computed in ``seconds``, under ``key``; a full in-memory
        store keeps nothing more."""
        logits = logits.detach().to("cpu", copy=True).contiguous()
        db = self._connection(create=True)
        if db is None:
            size = logits.numel() * logits.element_size()
            if key not in self._memory and self._bytes + size <= self.max_bytes:
                self._memory[key] = logits, seconds
                self._bytes += size
            return
        raw = logits.flatten().view(torch.uint8).numpy().tobytes()
        db.execute("INSERT OR REPLACE INTO logits VALUES (?, ?, ?, ?, ?)",
                   (key, str(logits.dtype).removeprefix("torch."), ",".join(map(str, logits.shape)), raw, seconds))
        self._pending += 1
        if self._pending >= _COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        """Commit what an SQLite store holds (called every few puts and by :meth:`close`)."""
        if self._db is not None and self._pending:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        """Commit and close the SQLite file (a later :meth:`get` or :meth:`put` opens it again)."""
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        if self.path is None:
            return len(self._memory)
        db = self._connection(create=False)
        return 0 if db is None else int(db.execute("SELECT COUNT(*) FROM logits").fetchone()[0])


def _open(path: Path) -> sqlite3.Connection:
    """``path`` as a logit cache (made when new); :class:`ConfigError` when it is another file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS logits (key BLOB PRIMARY KEY, dtype TEXT NOT NULL, "
                   "shape TEXT NOT NULL, data BLOB NOT NULL, seconds REAL NOT NULL)")
        db.commit()
        columns = [row[1] for row in db.execute("PRAGMA table_info(logits)")]
    except sqlite3.DatabaseError as e:
        columns, why = [], f"it cannot be read as one ({e})"
    else:
        why = f"its table 'logits' has the columns {columns}"
    if columns != list(_COLUMNS):
        db.close()
        raise ConfigError(f"Expected {path} to be a teacher-logit cache (an SQLite file s2dnas wrote) or a new "
                          f"file, but {why}; delete it or choose another path")
    return db


def _read(db: sqlite3.Connection | None, key: bytes) -> tuple[torch.Tensor, float] | None:
    row = None if db is None else db.execute("SELECT dtype, shape, data, seconds FROM logits WHERE key = ?",
                                             (key,)).fetchone()
    if row is None:
        return None
    dtype, shape, data, seconds = row
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(getattr(torch, dtype))
    return flat.reshape([int(n) for n in shape.split(",") if n]), float(seconds)


class CachedTeacher(nn.Module):
    """``teacher`` with its logits kept in ``store`` (a new in-memory :class:`LogitStore` when None).

    Its weights and buffers are part of every key (hashed again whenever one of them has changed in
    place or been replaced). A deep copy (a training loop may copy its teacher) shares the store
    and counts as the same teacher for :attr:`seconds_read_back`."""

    def __init__(self, teacher: nn.Module, store: LogitStore | None = None) -> None:
        super().__init__()
        self.teacher = teacher
        self.store = store if store is not None else LogitStore()
        self.train(teacher.training)
        #: the seconds the forward passes whose logits this module read back took when another
        #: teacher computed them (its own, read back again, are not counted: a run alone has them too)
        self.seconds_read_back = 0.0
        self._computed: set[bytes] = set()
        self._fingerprint: tuple[tuple[tuple[int, int], ...], bytes] | None = None

    def fingerprint(self) -> bytes:
        """The teacher's part of every key: its class, weights and buffers, and the torch version."""
        state = self.teacher.state_dict(keep_vars=True)
        versions = tuple((id(t), t._version) for t in state.values())  # in-place changes bump _version
        if self._fingerprint is None or self._fingerprint[0] != versions:
            h = hashlib.blake2b(digest_size=32)
            h.update(f"{type(self.teacher).__module__}.{type(self.teacher).__qualname__};{torch.__version__};".encode())
            for name, value in state.items():
                h.update(name.encode())
                hash_tensor(h, value)
            self._fingerprint = versions, h.digest()
        return self._fingerprint[1]

    def key(self, x: torch.Tensor) -> bytes:
        """The store's key for input ``x`` at this thread count."""
        h = hashlib.blake2b(self.fingerprint(), digest_size=32)
        h.update(f"{x.device.type};{torch.get_num_threads()};{tuple(x.stride())};".encode())  # strides: the layout
        hash_tensor(h, x)
        return h.digest()

    def forward(self, x: torch.Tensor) -> Any:
        if torch.is_grad_enabled() or any(m.training for m in self.teacher.modules()):
            # a graph, batch statistics or dropout: not cacheable
            return self.teacher(x)
        key = self.key(x)
        found = self.store.get(key)
        if found is not None:
            if key not in self._computed:
                self.seconds_read_back += found[1]
            return found[0].to(x.device, copy=True)  # the caller may change it in place; the store's stays
        start = time.perf_counter()
        logits = self.teacher(x)
        if isinstance(logits, torch.Tensor):
            on_cpu = logits.detach().to("cpu", copy=True)  # waits for the device: the pass's whole time
            self.store.put(key, on_cpu, seconds=time.perf_counter() - start)
            self._computed.add(key)
        return logits

    def __deepcopy__(self, memo: dict[int, Any]) -> CachedTeacher:
        twin = CachedTeacher(copy.deepcopy(self.teacher, memo), self.store).train(self.training)
        twin._computed = self._computed
        return twin
