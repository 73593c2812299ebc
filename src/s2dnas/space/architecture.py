"""Architecture: one point of the space, as readable and editable JSON.

Example:
    >>> arch = Architecture(num_stages=3, ratio_grid=8, splits=((2, 2, 4), (2, 2, 4)), concat=(0, 1))
    >>> Architecture.from_json(arch.to_json()) == arch
    True
    >>> arch.split_fractions(0)
    (0.25, 0.25, 0.5)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2dnas.errors import InvalidArchitectureError

__all__ = ["Architecture", "default_split"]

FORMAT = "s2dnas.architecture/1"


def default_split(num_stages: int, ratio_grid: int) -> tuple[int, ...]:
    """The hand-picked split of METHOD.md: the last stage gets half, the others share the rest."""
    if num_stages == 1:
        return (ratio_grid,)
    last = ratio_grid - ratio_grid // 2
    rest = ratio_grid - last
    base, extra = divmod(rest, num_stages - 1)
    parts = [base + (1 if i < extra else 0) for i in range(num_stages - 1)] + [last]
    if min(parts) < 1:
        raise InvalidArchitectureError(f"ratio_grid {ratio_grid} is too coarse for {num_stages} stages")
    return tuple(parts)


@dataclass(frozen=True)
class Architecture:
    """Split ratios per group and the concat position of every stage >= 2.

    Args:
        num_stages: S, the number of stages.
        ratio_grid: q; a group's split gives stage s the fraction ``splits[g][s] / q``.
        splits: per group, S positive integers summing to q.
        concat: for stages 2..S, the group index (0..G) from which the stage reads the features
            of earlier stages; G means never (only its classifier reads them).
        signature: fingerprint of the space it was made for (checked when built).
        model: the base model's name, informational.
    """

    num_stages: int
    ratio_grid: int
    splits: tuple[tuple[int, ...], ...]
    concat: tuple[int, ...]
    signature: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", tuple(tuple(int(v) for v in g) for g in self.splits))
        object.__setattr__(self, "concat", tuple(int(v) for v in self.concat))
        problems = self.check()
        if problems:
            raise InvalidArchitectureError("; ".join(problems))

    @property
    def num_groups(self) -> int:
        """G, the number of split groups."""
        return len(self.splits)

    def check(self) -> list[str]:
        """Return every structural problem (empty when the architecture is well formed)."""
        problems = []
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            return [f"Expected `num_stages` >= 1, but got {self.num_stages!r}"]
        if not isinstance(self.ratio_grid, int) or self.ratio_grid < self.num_stages:
            return [f"Expected `ratio_grid` >= num_stages ({self.num_stages}), but got {self.ratio_grid!r}"]
        if not self.splits:
            problems.append("Expected at least one group in `splits`, but got none")
        for g, parts in enumerate(self.splits):
            if len(parts) != self.num_stages:
                problems.append(f"splits[{g}]: expected {self.num_stages} parts (one per stage), but got {list(parts)}")
            elif min(parts) < 1 or sum(parts) != self.ratio_grid:
                problems.append(f"splits[{g}]: expected positive parts summing to ratio_grid={self.ratio_grid}, "
                                f"but got {list(parts)}")
        if len(self.concat) != self.num_stages - 1:
            problems.append(f"concat: expected {self.num_stages - 1} positions (stages 2..{self.num_stages}), "
                            f"but got {list(self.concat)}")
        for i, p in enumerate(self.concat):
            if not 0 <= p <= len(self.splits):
                problems.append(f"concat[{i}] (stage {i + 2}): expected a group boundary in 0..{len(self.splits)}, "
                                f"but got {p}")
        return problems

    def split_fractions(self, group: int) -> tuple[float, ...]:
        """The fractions of group ``group``'s channels that each stage computes."""
        return tuple(p / self.ratio_grid for p in self.splits[group])

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what ``to_json`` writes)."""
        return {"format": FORMAT, "model": self.model, "signature": self.signature,
                "num_stages": self.num_stages, "ratio_grid": self.ratio_grid,
                "splits": [list(p) for p in self.splits], "concat": list(self.concat)}

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        """Build from :meth:`to_dict` output, naming any missing or ill-typed field."""
        if not isinstance(data, dict):
            raise InvalidArchitectureError(f"Expected a JSON object, but got {type(data).__name__}")
        missing = [k for k in ("num_stages", "ratio_grid", "splits", "concat") if k not in data]
        if missing:
            raise InvalidArchitectureError(f"Missing field(s) {missing}; expected the keys of Architecture.to_dict()")
        if data.get("format", FORMAT) != FORMAT:
            raise InvalidArchitectureError(f"Expected format {FORMAT!r}, but got {data.get('format')!r}")
        try:
            splits = tuple(tuple(_as_int(v, "splits") for v in g) for g in data["splits"])
            concat = tuple(_as_int(v, "concat") for v in data["concat"])
        except TypeError:
            raise InvalidArchitectureError("Expected `splits` to be a list of lists of integers and `concat` a "
                                           "list of integers") from None
        return cls(num_stages=_as_int(data["num_stages"], "num_stages"),
                   ratio_grid=_as_int(data["ratio_grid"], "ratio_grid"), splits=splits, concat=concat,
                   signature=data.get("signature"), model=data.get("model"))

    def to_json(self) -> str:
        """Readable JSON, one group per line."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Parse JSON text; malformed JSON raises :class:`InvalidArchitectureError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidArchitectureError(f"Malformed architecture JSON ({err.msg} at line {err.lineno}); "
                                           "fix the file or regenerate it") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write the JSON to ``path`` atomically."""
        from s2dnas._io import atomic_write_json

        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        """Read an architecture JSON file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise InvalidArchitectureError(f"Cannot read architecture file {path} ({err.strerror})") from None
        try:
            return cls.from_json(text)
        except InvalidArchitectureError as err:
            raise InvalidArchitectureError(f"{path}: {err}") from None


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArchitectureError(f"Expected `{name}` to hold integers, but got {value!r}")
    return value
