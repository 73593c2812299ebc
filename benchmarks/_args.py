"""Command-line values the benchmark scripts share, checked in one place.

Each parser raises :class:`~s2dnas.errors.ConfigError` with a one-line message; a script's ``main``
prints it (or any other :class:`~s2dnas.errors.S2DNASError`) as ``error: ...`` on stderr and exits 2
(:func:`report_error`), as the ``s2dnas`` commands do.
"""
from __future__ import annotations

import sys
from typing import Sequence

from s2dnas.errors import ConfigError, S2DNASError

__all__ = ["parse_seeds", "parse_positive_ints", "parse_names", "check_at_least", "report_error"]


def _parse_ints(text: str, *, flag: str, minimum: int, example: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        values = ()
    if not values or len(set(values)) != len(values) or min(values) < minimum:
        raise ConfigError(f"Expected {flag} as distinct comma-separated integers >= {minimum} (e.g. {example}), "
                          f"but got {text!r}")
    return values


def parse_seeds(text: str, *, flag: str = "--seeds") -> tuple[int, ...]:
    """Distinct comma-separated integers >= 0 (``"0,1,2"``), in the given order.

    Raises:
        ConfigError: empty, not integers, negative or repeated.
    """
    return _parse_ints(text, flag=flag, minimum=0, example="0,1,2")


def parse_positive_ints(text: str, *, flag: str) -> tuple[int, ...]:
    """Distinct comma-separated integers >= 1 (``"50,200"``: budgets, sizes), in the given order.

    Raises:
        ConfigError: empty, not integers, below 1 or repeated.
    """
    return _parse_ints(text, flag=flag, minimum=1, example="50,200")


def parse_names(text: str, *, flag: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """Distinct comma-separated names, each one of ``allowed`` (``"rl,random"``), in the given order.

    Raises:
        ConfigError: empty (or an empty name), a name not in ``allowed``, or a name repeated.
    """
    names = tuple(t.strip() for t in text.split(","))
    if not all(names) or not set(names) <= set(allowed) or len(set(names)) != len(names):
        raise ConfigError(f"Expected {flag} as distinct comma-separated names of {', '.join(allowed)}, "
                          f"but got {text!r}")
    return names


def check_at_least(value: int, minimum: int, *, flag: str) -> int:
    """``value`` when it is >= ``minimum``.

    Raises:
        ConfigError: ``value`` is below ``minimum``.
    """
    if value < minimum:
        raise ConfigError(f"Expected {flag} >= {minimum}, but got {value}")
    return value


def report_error(err: S2DNASError) -> int:
    """Print ``error: <err>`` (one line) on stderr; returns the exit status, 2."""
    print(f"error: {err}", file=sys.stderr)
    return 2
