"""The method-comparison tables of README.md and docs/results.md, regenerated from the committed JSON.

Two kinds of block in those files, each between an opening and a closing marker whose paths are
relative to the file's folder:

* ``<!-- table: benchmarks/results/<name>.json -->`` ... ``<!-- /table -->``: :func:`benchmarks.methods.table`
  of that file, the same text as the ``.md`` beside it;
* ``<!-- targets: a.json b.json -->`` ... ``<!-- /targets -->``: :func:`benchmarks.methods.targets_summary`
  of those files (issue 14's targets of every family in one table).

``make bench`` rewrites the blocks after the benchmark; the test suite checks them, so a README
(or docs/results.md) whose tables disagree with the JSON does not pass.

    python -m benchmarks.readme_tables            # rewrite the blocks in README.md and docs/results.md
    python -m benchmarks.readme_tables --check    # exit 1, naming the stale blocks, when they differ
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

from benchmarks.methods import table, targets_summary

__all__ = ["BLOCK", "DOCUMENTS", "KINDS", "TableError", "render", "main"]

#: The files whose blocks ``main`` regenerates by default, relative to the repository root.
DOCUMENTS = ("README.md", "docs/results.md")
#: What each kind of block holds, from the parsed JSON files its opening marker names.
KINDS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "table": lambda results: table(results[0]),
    "targets": targets_summary,
}
_KIND = "|".join(KINDS)
#: A generated block: its opening marker names the JSON files (relative to the file's folder,
#: without spaces, separated by one space; a ``table`` names one); its body cannot hold another
#: opening marker, so a block missing its end does not swallow the next.
BLOCK = re.compile(rf"(?P<open><!-- (?P<kind>{_KIND}): (?P<paths>\S+\.json(?: \S+\.json)*) -->\n)"
                   rf"(?P<body>(?:(?!<!-- (?:{_KIND}):).)*?)(?P<close><!-- /(?P=kind) -->)", re.DOTALL)
OPENS = tuple(f"<!-- {kind}:" for kind in KINDS)
CLOSES = tuple(f"<!-- /{kind} -->" for kind in KINDS)


class TableError(Exception):
    """A generated block that cannot be regenerated (malformed marker, unreadable result)."""


def render(text: str, *, root: Path) -> tuple[str, list[str]]:
    """``text`` with every block regenerated from its JSON under ``root``, and the paths of the
    blocks that changed."""
    blocks = [m for m in BLOCK.finditer(text) if m["kind"] != "table" or " " not in m["paths"]]
    opens, closes = sum(map(text.count, OPENS)), sum(map(text.count, CLOSES))
    if not len(blocks) == opens == closes:
        covered = {text.count("\n", 0, m.start(g)) + 1 for m in blocks for g in ("open", "close")}
        bad = next((n for n, line in enumerate(text.splitlines(), 1)
                    if line.startswith(OPENS + CLOSES) and n not in covered), None)
        raise TableError(f"{opens} opening and {closes} closing markers, {len(blocks)} well-formed blocks"
                         + (f" (first marker outside one: line {bad})" if bad else "")
                         + "; every block is '<!-- table: PATH.json -->' (PATH relative to the file's folder: "
                         "benchmarks/results/X.json in README.md, ../benchmarks/results/X.json in docs/; or "
                         "'<!-- targets: X.json Y.json -->', paths without spaces), a newline, the table, "
                         "'<!-- /table -->' (or '<!-- /targets -->')")
    stale: list[str] = []

    def fill(m: re.Match[str]) -> str:
        results = []
        for name in m["paths"].split(" "):
            try:
                results.append(json.loads((root / name).read_text(encoding="utf-8")))
            except (OSError, ValueError) as err:
                raise TableError(f"{name} is not a readable method-comparison result "
                                 f"({type(err).__name__}: {err}); rerun the benchmark or fix the marker "
                                 "(paths are relative to the file's folder)") from None
        try:
            body = KINDS[m["kind"]](results) + "\n"
        except ValueError as err:  # files that cannot go in one summary (e.g. different operating points)
            raise TableError(f"{m['paths']}: {err}") from None
        except (KeyError, TypeError) as err:
            which = m["paths"] if " " not in m["paths"] else f"one of {m['paths']}"
            raise TableError(f"{which} is not a readable method-comparison result "
                             f"({type(err).__name__}: {err}); rerun the benchmark or fix the marker") from None
        if body != m["body"]:
            stale.append(m["paths"])
        return m["open"] + body + m["close"]

    return BLOCK.sub(fill, text), stale


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", nargs="+", default=list(DOCUMENTS), metavar="FILE",
                   help="the markdown files whose blocks to regenerate (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only report stale blocks (exit 1), change nothing")
    args = p.parse_args(argv)
    readmes = [Path(name) for name in args.readme]
    for readme in readmes:  # all checked before any is written
        if not readme.is_file():
            raise SystemExit(f"error: no file at {readme}; run from the repository root or pass --readme FILE ...")
    rendered = []
    for readme in readmes:
        try:
            rendered.append((readme, *render(readme.read_text(encoding="utf-8"), root=readme.parent)))
        except TableError as err:
            raise SystemExit(f"error: {readme}: {err}") from None
    stale = [f"{readme}: {', '.join(paths)}" for readme, _, paths in rendered if paths]
    if args.check:
        if stale:
            raise SystemExit(f"error: stale tables (run python -m benchmarks.readme_tables): {'; '.join(stale)}")
        return
    for readme, new, paths in rendered:
        if paths:
            readme.write_text(new, encoding="utf-8")
        print(f"{readme}: {len(paths)} table(s) regenerated", file=sys.stderr)


if __name__ == "__main__":
    main()
