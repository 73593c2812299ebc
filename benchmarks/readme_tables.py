"""The README's method-comparison tables, regenerated from the committed JSON results.

A block of README.md between ``<!-- table: benchmarks/results/<name>.json -->`` and
``<!-- /table -->`` is :func:`benchmarks.methods.table` of that file, the same text as the
``.md`` beside it. ``make bench`` rewrites the blocks after the benchmark; the test suite runs
``--check``, so a README whose tables disagree with the JSON does not pass.

    python -m benchmarks.readme_tables            # rewrite the blocks in README.md
    python -m benchmarks.readme_tables --check    # exit 1, naming the stale blocks, when they differ
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.methods import table

__all__ = ["BLOCK", "TableError", "render", "main"]

#: A generated block: its opening marker names the JSON file (relative to the README's folder);
#: its body cannot hold another opening marker, so a block missing its end does not swallow the next.
BLOCK = re.compile(r"(<!-- table: (?P<path>[^ ]+\.json) -->\n)(?P<body>(?:(?!<!-- table:).)*?)(<!-- /table -->)",
                   re.DOTALL)
OPEN, CLOSE = "<!-- table:", "<!-- /table -->"


class TableError(Exception):
    """A README block that cannot be regenerated (malformed marker, unreadable result)."""


def render(text: str, *, root: Path) -> tuple[str, list[str]]:
    """``text`` with every block regenerated from its JSON under ``root``, and the paths of the
    blocks that changed."""
    blocks = BLOCK.findall(text)
    if not len(blocks) == text.count(OPEN) == text.count(CLOSE):
        raise TableError(f"{text.count(OPEN)} '{OPEN} ...' and {text.count(CLOSE)} '{CLOSE}' markers, "
                         f"{len(blocks)} well-formed blocks; every block is '{OPEN} benchmarks/results/X.json -->', "
                         f"a newline, the table, '{CLOSE}'")
    stale: list[str] = []

    def fill(m: re.Match[str]) -> str:
        path = root / m["path"]
        try:
            body = table(json.loads(path.read_text(encoding="utf-8"))) + "\n"
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise TableError(f"{m['path']} is not a readable method-comparison result "
                             f"({type(err).__name__}: {err}); rerun the benchmark or fix the marker") from None
        if body != m["body"]:
            stale.append(m["path"])
        return m[1] + body + m[4]

    return BLOCK.sub(fill, text), stale


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default="README.md")
    p.add_argument("--check", action="store_true", help="only report stale blocks (exit 1), change nothing")
    args = p.parse_args(argv)
    readme = Path(args.readme)
    if not readme.is_file():
        raise SystemExit(f"error: no README at {readme}; run from the repository root or pass --readme PATH")
    try:
        new, stale = render(readme.read_text(encoding="utf-8"), root=readme.parent)
    except TableError as err:
        raise SystemExit(f"error: {readme}: {err}") from None
    if args.check:
        if stale:
            raise SystemExit(f"error: stale tables in {readme} (run python -m benchmarks.readme_tables): "
                             f"{', '.join(stale)}")
        return
    if stale:
        readme.write_text(new, encoding="utf-8")
    print(f"{readme}: {len(stale)} table(s) regenerated", file=sys.stderr)


if __name__ == "__main__":
    main()
