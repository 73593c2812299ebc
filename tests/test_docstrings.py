"""The examples in the package's docstrings run as written (they went stale unnoticed before)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import s2dnas


def _modules_with_examples() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(s2dnas.__path__, "s2dnas.") if not m.name.endswith("__main__")]
    finder = doctest.DocTestFinder()
    return [n for n in names if any(t.examples for t in finder.find(importlib.import_module(n)))]


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
