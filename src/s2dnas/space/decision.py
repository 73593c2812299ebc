"""Decisions of a search space and the samples that pick among them.

A search space exposes its decisions as a list of :class:`Decision`; a *sample* is a dict from
decision name to choice index. Controllers only see names and choice counts, so the same
controllers drive any space.

Example:
    >>> from s2dnas.space.decision import Decision, check_sample, count_samples
    >>> decisions = [Decision("ratio", (0.25, 0.5, 0.75)), Decision("concat", (1, 2))]
    >>> count_samples(decisions)
    6
    >>> check_sample(decisions, {"ratio": 2, "concat": 0}) is None
    True
    >>> check_sample(decisions, {"ratio": 3, "concat": 0})
    'Expected `ratio` to be a choice index in [0, 2], but got 3.'
"""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s2dnas.errors import ConfigError

__all__ = ["Decision", "Sample", "validate_decisions", "check_sample", "count_samples"]

Sample = dict[str, int]
"""A point of the search space: decision name -> choice index."""


@dataclass(frozen=True)
class Decision:
    """One categorical decision of a search space.

    Args:
        name: Unique name of the decision within its space (e.g. ``"stage2.concat"``).
        choices: The values to choose from; a sample stores the index into this tuple. A list
            is converted to a tuple.

    Raises:
        ConfigError: If ``name`` is not a non-empty string or ``choices`` is empty.
    """

    name: str
    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"Expected the name of a decision to be a non-empty string, but got {self.name!r}."
            )
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
            raise ConfigError(
                f"Expected `choices` of decision {self.name!r} to be a tuple of values, "
                f"but got {type(self.choices).__name__}."
            )
        # Frozen dataclass: accept a list but store a tuple, so decisions are immutable.
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 1:
            raise ConfigError(
                f"Expected decision {self.name!r} to have at least 1 choice, but got none. "
                "Drop the decision or give it choices."
            )

    @property
    def size(self) -> int:
        """Number of choices."""
        return len(self.choices)


def validate_decisions(decisions: Sequence[Decision]) -> tuple[Decision, ...]:
    """Check a list of decisions and return it as a tuple.

    Args:
        decisions: The decisions of a space, in the order a controller emits them.

    Returns:
        The decisions as a tuple.

    Raises:
        ConfigError: Listing every problem: the list is empty, an item is not a
            :class:`Decision`, or names are duplicated.
    """
    if isinstance(decisions, (str, bytes, Mapping)) or not isinstance(decisions, Sequence):
        raise ConfigError(
            f"Expected `decisions` to be a list of Decision, but got {type(decisions).__name__}."
        )
    decisions = tuple(decisions)
    if not decisions:
        raise ConfigError(
            "Expected at least 1 decision, but got an empty list: the search space has nothing "
            "to search. Check the space's split ratios and concat positions."
        )
    problems: list[str] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    for position, decision in enumerate(decisions):
        if not isinstance(decision, Decision):
            problems.append(
                f"item {position} is a {type(decision).__name__}, expected a Decision"
            )
            continue
        if decision.name in seen and decision.name not in duplicates:
            duplicates.append(decision.name)
        seen.add(decision.name)
    if duplicates:
        problems.append(f"duplicate decision names {duplicates}; names must be unique")
    if problems:
        raise ConfigError("Invalid decisions: " + "; ".join(problems) + ".")
    return decisions


def check_sample(decisions: Sequence[Decision], sample: Mapping[str, Any]) -> str | None:
    """Return why ``sample`` is not a sample of ``decisions``, or ``None`` if it is.

    Args:
        decisions: The decisions of the space.
        sample: A mapping from decision name to choice index.

    Returns:
        An error message, or ``None`` when every decision has a valid choice index and there
        are no other keys.
    """
    if not isinstance(sample, Mapping):
        return f"Expected a sample to be a dict of choice indices, but got {type(sample).__name__}."
    names = [d.name for d in decisions]
    missing = [n for n in names if n not in sample]
    extra = [k for k in sample if k not in set(names)]
    if missing or extra:
        return (
            f"Expected a sample with exactly the decisions {names}, but "
            f"{'missing ' + str(missing) if missing else ''}"
            f"{' and ' if missing and extra else ''}"
            f"{'unknown ' + str(extra) if extra else ''}."
        )
    for decision in decisions:
        value = sample[decision.name]
        try:
            index = operator.index(value)
        except TypeError:
            index = None
        if isinstance(value, bool) or index is None or not 0 <= index < decision.size:
            return (
                f"Expected `{decision.name}` to be a choice index in [0, {decision.size - 1}], "
                f"but got {value!r}."
            )
    return None


def count_samples(decisions: Sequence[Decision]) -> int:
    """Return the number of distinct samples (the product of the choice counts)."""
    return math.prod(d.size for d in decisions)
