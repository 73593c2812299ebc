"""Uniform random search: the baseline every learned controller must beat."""
from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from s2dnas.errors import CheckpointError
from s2dnas.search.controller import Controller
from s2dnas.space.decision import Decision, Sample, count_samples

__all__ = ["RandomController"]

_logger = logging.getLogger(__name__)


class RandomController(Controller):
    """Uniform random search, the baseline every learned controller must beat.

    Args:
        decisions: The decisions of the search space.
        seed: Seed of the private generator.
        unique: If true, never hand out a sample twice while unasked samples remain; once the
            space is exhausted it falls back to uniform sampling (with a warning).
    """

    # Above this many samples, draw unique samples by bounded rejection instead of exactly.
    _EXACT_LIMIT = 2**62
    _MAX_ATTEMPTS = 64

    def __init__(
        self, decisions: Sequence[Decision], *, seed: int = 0, unique: bool = False
    ) -> None:
        super().__init__(decisions, seed=seed)
        self._unique = bool(unique)
        self._size = count_samples(self._decisions)
        self._seen: list[int] = []  # sorted mixed-radix codes of the samples asked so far
        self._seen_set: set[int] = set()
        self._warned_exhausted = False

    def _sample(self) -> Sample:
        if not self._unique:
            return self._uniform()
        if len(self._seen_set) >= self._size:
            if not self._warned_exhausted:
                _logger.warning(
                    "All %d samples of the space were asked; sampling with repeats from now on.",
                    self._size,
                )
                self._warned_exhausted = True
            return self._uniform()
        if self._size <= self._EXACT_LIMIT:
            # Exact: draw the r-th not-yet-asked code, uniform over the unseen samples.
            rank = int(
                torch.randint(self._size - len(self._seen), (1,), generator=self._generator)
            )
            for code in self._seen:  # ascending; each seen code at or below shifts the rank
                if code <= rank:
                    rank += 1
                else:
                    break
            code = rank
        else:
            # Huge space: a collision is astronomically unlikely, but stay bounded anyway.
            for _ in range(self._MAX_ATTEMPTS):
                code = self._to_code(self._uniform())
                if code not in self._seen_set:
                    break
            else:
                _logger.warning(
                    "No unseen sample after %d attempts; returning a repeat.", self._MAX_ATTEMPTS
                )
        self._remember(code)
        return self._from_code(code)

    def _uniform(self) -> Sample:
        return {
            d.name: int(torch.randint(d.size, (1,), generator=self._generator))
            for d in self._decisions
        }

    def _remember(self, code: int) -> None:
        if code not in self._seen_set:
            self._seen_set.add(code)
            bisect.insort(self._seen, code)

    def _to_code(self, sample: Sample) -> int:
        code = 0
        for d in self._decisions:  # first decision is the most significant digit
            code = code * d.size + sample[d.name]
        return code

    def _from_code(self, code: int) -> Sample:
        indices: list[int] = []
        for d in reversed(self._decisions):
            code, index = divmod(code, d.size)
            indices.append(index)
        return {d.name: i for d, i in zip(self._decisions, reversed(indices))}

    def _extra_state(self) -> dict[str, Any]:
        # Store samples, not codes: codes of huge spaces can exceed 64 bits.
        return {
            "unique": self._unique,
            "seen": [self._encode(self._from_code(c)) for c in self._seen],
        }

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        try:
            seen = [self._to_code(self._decode(s)) for s in extra["seen"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"Malformed RandomController state: {exc!r}.") from exc
        self._unique = bool(extra.get("unique", self._unique))
        self._seen_set = set(seen)
        self._seen = sorted(self._seen_set)
