"""Command-line values the benchmark scripts share, checked in one place.

Each parser raises :class:`~s2dnas.errors.ConfigError` with a one-line message; a script's ``main``
prints it (or any other :class:`~s2dnas.errors.S2DNASError`) as ``error: ...`` on stderr and exits 2
(:func:`report_error`), as the ``s2dnas`` commands do.
"""
from __future__ import annotations

import sys
from s2dnas.errors import ConfigError, S2DNASError

__all__ = ["parse_seeds", "check_at_least", "report_error"]


def parse_seeds(text: str, *, flag: str = "--seeds") -> tuple[int, ...]:
    """Distinct comma-separated integers >= 0 (``"0,1,2"``), in the given order.

    Raises:
        ConfigError: empty, not integers, negative or repeated.
    """
    try:
        seeds = tuple(int(t) for t in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"Expected {flag} as distinct comma-separated integers >= 0 (e.g. 0,1,2), "
                          f"but got {text!r}")
    return seeds


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
