"""Add rows of one method-comparison result to another, when both measure the same thing.

A full comparison is built run by run over a cache (``runs/bench/<model>-<scale>/``). When that
cache is gone (a fresh machine), a missing row can still be trained and timed on its own, against
the same base, and then join the committed table instead of living in a table of its own, so the
targets' "best alternative" sees it:

    python -m benchmarks.methods --model resnet20 --scale full --methods static_x0.375_long \\
        --out runs/bench/resnet20-full --result runs/r_375long.json
    python -m benchmarks.merge_results --into benchmarks/results/methods_resnet20_full.json runs/r_375long.json

Refused in one line, nothing written, unless both files share the data set, base model and its
numbers (val, test, MACs), scale, protocol, accuracy levels and kind of machine (all but the
kernel build), a searched row its seeds, a row that loaded a super-network the same one; a row
the target already holds is refused unless ``--replace``; a row without measured speed-ups is
refused where the target has them. Each row keeps its own timings, a ratio to the base timed beside it in its own pass (the
table names every pass). The target records what was merged, from where and with which command,
and its ``.md`` and ``.png`` are written again.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.methods import METHODS, SEARCHED, check_targets, iso_accuracy, plot, table
from s2dnas._io import atomic_write_json

__all__ = ["MergeError", "merge", "main"]

#: What both files must share (top-level keys), and the base's numbers.
SHARED = ("dataset", "base_model", "scale", "protocol", "levels", "operating_drop", "target_val_accuracy")
BASE = ("val_accuracy", "test_accuracy", "macs")
#: The machine's kind (``machine`` without ``platform``, whose kernel build differs between
#: machines of one kind): every speed-up is a ratio to the base timed beside it, on such a machine.
MACHINE_KIND = ("processor", "torch", "threads", "cpu_count", "cuda")


class MergeError(Exception):
    """Two result files whose rows cannot go in one table."""


def _timed(r: dict[str, Any]) -> bool:
    p = next(q for q in r["points"] if q.get("operating_point", True))
    return p.get("measured_speedup") is not None


def _position(order: list[str], name: str) -> int:
    """Where ``name`` goes in ``order``: after the nearest method before it in :data:`METHODS` that
    ``order`` holds (static_x0.375_long after static_x0.25_long); an imported row last (before the
    oracle)."""
    canon = list(METHODS)
    if name in canon:
        for before in reversed(canon[:canon.index(name)]):
            if before in order:
                return order.index(before) + 1
        return 0
    return order.index("oracle") if "oracle" in order else len(order)


def merge(into: dict[str, Any], new: dict[str, Any], *, methods: Sequence[str] | None = None,
          replace: bool = False, source: str = "") -> dict[str, Any]:
    """``into`` with the rows ``methods`` of ``new`` (default: all but ``static_base`` and the
    oracle) added, its accuracy levels and targets recomputed; ``into`` itself is not changed.

    Raises:
        MergeError: the files measure different things, a row is missing from ``new``, already in
            ``into`` (without ``replace``), or has no measured speed-up where ``into`` has them.
    """
    for key in SHARED:
        if into.get(key) != new.get(key):
            raise MergeError(f"the files differ in {key!r} ({into.get(key)!r} against {new.get(key)!r}); only rows "
                             "of the same data, base, scale, protocol and machine kind go in one table")
    for key in MACHINE_KIND:
        if into["machine"].get(key) != new["machine"].get(key):
            raise MergeError(f"the files were measured on different kinds of machine ({key} "
                             f"{into['machine'].get(key)!r} against {new['machine'].get(key)!r}); time the rows "
                             "on the target's kind of machine")
    for key in BASE:
        if into["base"][key] != new["base"][key]:
            raise MergeError(f"the base's {key} differs ({into['base'][key]} against {new['base'][key]}): the rows "
                             "were measured against another base; train them against the target's")
    names = list(methods) if methods else [n for n in new["methods"] if n not in ("static_base", "oracle")]
    if not names:
        raise MergeError("the file to merge holds no row besides the base's")
    timed = any(_timed(r) for r in into["methods"].values() if r.get("points"))
    for name in names:
        if name not in new["methods"] or name == "oracle":
            raise MergeError(f"no row {name!r} to merge; the file holds {', '.join(new['methods'])}")
        r = new["methods"][name]
        if name in into["methods"] and not replace:
            raise MergeError(f"the target already holds {name!r}; pass --replace to put the new one in its place")
        if timed and not _timed(r):
            raise MergeError(f"{name!r} has no measured speed-up and the target's rows have; time it first "
                             "(the same benchmark command without --no-speed)")
        if name in SEARCHED and r.get("seeds") != into.get("seeds"):
            raise MergeError(f"{name!r} ran with seeds {r.get('seeds')}, the target's searched rows with "
                             f"{into.get('seeds')}; run it with --seeds {','.join(map(str, into.get('seeds', [])))}")
        if r.get("supernet_loaded") and new.get("supernet") != into.get("supernet"):
            raise MergeError(f"{name!r} loaded the super-network {new.get('supernet')}, the target's rows "
                             f"{into.get('supernet')}; run it with --supernet {into.get('supernet')}")
    data = json.loads(json.dumps(into))
    order = list(data["methods"])
    rows = dict(data["methods"])
    for name in names:
        if name not in rows:
            order.insert(_position(order, name), name)
        rows[name] = json.loads(json.dumps(new["methods"][name]))
        if name in (new.get("runs") or {}):
            data.setdefault("runs", {})[name] = new["runs"][name]
    data["methods"] = {name: rows[name] for name in order}
    data.setdefault("merged", []).append({"methods": names, "from": source, "command": new.get("command"),
                                          "platform": new["machine"].get("platform"),
                                          "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    data["iso_accuracy"] = iso_accuracy(data)
    data["targets"] = check_targets(data)
    return data


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MergeError(f"{path} is not a readable method-comparison result ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict) or "base" not in data:
        raise MergeError(f"{path} is not a method-comparison result (no 'methods' and 'base'); expected the "
                         "--result file of python -m benchmarks.methods")
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", help="the result file whose rows are added (--result of python -m benchmarks.methods)")
    p.add_argument("--into", required=True, help="the result file that receives them (rewritten with its .md and .png)")
    p.add_argument("--methods", default=None, help="comma-separated rows to add (default: all but static_base)")
    p.add_argument("--replace", action="store_true", help="put a row the target already holds in its place")
    args = p.parse_args(argv)
    into_path, new_path = Path(args.into), Path(args.result)
    try:
        data = merge(_read(into_path), _read(new_path), methods=args.methods.split(",") if args.methods else None,
                     replace=args.replace, source=str(new_path))
    except MergeError as err:
        raise SystemExit(f"error: {err}") from None
    atomic_write_json(into_path, data)
    stem = into_path.with_suffix("")
    (stem.with_suffix(".md")).write_text(table(data) + "\n")
    plot(data, stem.with_suffix(".png"))
    print(f"{into_path}: added {', '.join(data['merged'][-1]['methods'])}")


if __name__ == "__main__":
    main()
