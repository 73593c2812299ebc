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
kernel build), the CPU's model where the target's own run recorded it (its ``machine``, or its
base row's timing), a searched row its seeds, a row that loaded a super-network the same one; a
row the target already holds is refused unless ``--replace``; a row without measured speed-ups is
refused where the target has them. Each row keeps its own timings, a ratio to the base timed
beside it in its own pass; the table says so, and names what was merged, from where and the CPU
it was timed on. The target records what was merged, from where and with which command, and its
``.md`` and ``.png`` are written again.

A searched row (three seeds, each an hour or more on a 2-core CPU) can be built seed by seed, on
different days: ``--add-seeds`` joins a file with other seeds of the same searched rows to one
holding some already (its seeds become the union, each row's mean and spread are computed again
from every seed's entry), under the same checks and, besides, the same super-network and search
target for every seed, both files timed or neither, no seed in both:

    python -m benchmarks.methods --model resnet20 --scale full --methods static_base,s2dnas_rl --seeds 1 \\
        --out runs/bench/resnet20-full --result runs/rl1.json
    python -m benchmarks.merge_results --add-seeds --into runs/rl_part.json runs/rl1.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.methods import (METHODS, SEARCHED, aggregate_seeds, check_targets, iso_accuracy, oracle_row, plot,
                               table)
from benchmarks.timing import seed_entries
from s2dnas._io import atomic_write_json

__all__ = ["MergeError", "add_seeds", "merge", "main"]

#: What both files must share (top-level keys; ``speed_thread_options`` where both were timed),
#: and the base's numbers.
SHARED = ("dataset", "base_model", "scale", "protocol", "levels", "operating_drop", "target_val_accuracy")
BASE = ("val_accuracy", "test_accuracy", "macs")
#: The machine's kind (``machine`` without ``platform``, whose kernel build differs between
#: machines of one kind; ``cpu``, the CPU's model, too where both files record it): every speed-up
#: is a ratio to the base timed beside it, on such a machine (the rows' timing CPU: _target_cpu).
MACHINE_KIND = ("processor", "torch", "threads", "cpu_count", "cuda")
#: What identifies a loaded super-network in a seed's record (its ``config`` aside).
SUPERNET_KEYS = ("source", "config_hash", "epochs", "train_seconds")
#: Rows that are not merged on their own: the base (every file has it) and the oracle (s2dnas_rl's bound).
NOT_ROWS = ("static_base", "oracle")


class MergeError(Exception):
    """Two result files whose rows cannot go in one table."""


def _timed(r: dict[str, Any]) -> bool:
    p = next((q for q in r["points"] if q.get("operating_point", True)), {})
    return p.get("measured_speedup") is not None


def _supernets(r: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {tuple(e["supernet"].get(k) for k in SUPERNET_KEYS) for e in seed_entries(r) if e.get("supernet")}


def _timing_cpus(r: dict[str, Any]) -> set[str]:
    """The CPU models a row's seeds were timed on, where their timing records one."""
    identities = (((e.get("timing") or {}).get("identity") or {}) for e in seed_entries(r))
    return {c for i in identities if (c := i.get("machine", {}).get("cpu"))}


def _target_cpu(into: dict[str, Any]) -> str | None:
    """The CPU model of the target's own run (its ``machine``, else its base row's timing); None
    where it was not recorded. Rows merged into it earlier do not count: they came from elsewhere."""
    cpus = _timing_cpus(into["methods"].get("static_base") or {"points": []})
    return into["machine"].get("cpu") or (min(cpus) if cpus else None)


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


def _check_files(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key in SHARED:
        if into.get(key) != new.get(key):
            raise MergeError(f"the files differ in {key!r} ({into.get(key)!r} against {new.get(key)!r}); only rows "
                             "of the same data, base, scale, protocol and accuracy levels go in one table")
    both = [d["speed_thread_options"] for d in (into, new) if d.get("speed_thread_options") is not None]
    if len(both) == 2 and both[0] != both[1]:
        raise MergeError(f"the files were timed on different thread options ({both[0]} against {both[1]}); "
                         f"time the rows with --thread-options {','.join(map(str, both[0]))}")
    for key in [*MACHINE_KIND, *(["cpu"] if "cpu" in into["machine"] and "cpu" in new["machine"] else [])]:
        if into["machine"].get(key) != new["machine"].get(key):
            raise MergeError(f"the files were measured on different kinds of machine ({key} "
                             f"{into['machine'].get(key)!r} against {new['machine'].get(key)!r}); time the rows "
                             "on the target's kind of machine")
    for key in BASE:
        if into["base"][key] != new["base"][key]:
            raise MergeError(f"the base's {key} differs ({into['base'][key]} against {new['base'][key]}): the rows "
                             "were measured against another base; train them against the target's")


def _check_row(into: dict[str, Any], name: str, r: dict[str, Any], *, replace: bool) -> None:
    if name in into["methods"] and not replace:
        raise MergeError(f"the target already holds {name!r}; pass --replace to put the new one in its place")
    if any(_timed(q) for q in into["methods"].values() if q.get("points")) and not _timed(r):
        raise MergeError(f"{name!r} has no measured speed-up and the target's rows have; time it first "
                         "(the same benchmark command without --no-speed)")
    if name in SEARCHED and sorted(r.get("seeds") or []) != sorted(into.get("seeds") or []):
        raise MergeError(f"{name!r} ran with seeds {r.get('seeds')}, the target's searched rows with "
                         f"{into.get('seeds')}; run it with --seeds {','.join(map(str, into.get('seeds') or []))} "
                         "(or seed by seed, joined with --add-seeds)")
    theirs_cpu = _target_cpu(into)
    if theirs_cpu is not None and _timing_cpus(r) - {theirs_cpu}:
        raise MergeError(f"{name!r} was timed on {sorted(_timing_cpus(r) - {theirs_cpu})[0]}, the target's base on "
                         f"{theirs_cpu}; time it on the target's kind of machine")
    if r.get("imported_from") is None:  # an imported row is its own run's network, whatever it loaded
        theirs = set().union(*(_supernets(q) for q in into["methods"].values() if q.get("imported_from") is None))
        mine = _supernets(r)
        if theirs and mine - theirs:
            raise MergeError(f"{name!r} loaded another super-network ({sorted(mine - theirs)[0]}) than the target's "
                             f"rows ({sorted(theirs)[0]}); run it with --supernet on the target's super-network")
    targets = [e["search_target"] for q in into["methods"].values() for e in seed_entries(q)
               if e.get("search_target")]
    for mine in (e["search_target"] for e in seed_entries(r) if e.get("search_target")):
        other = next((t for t in targets if t.keys() == mine.keys() and t != mine), None)
        if other is not None:
            raise MergeError(f"{name!r} searched for {mine}, the target's rows for {other}; run it with the "
                             "target's search configuration")


def merge(into: dict[str, Any], new: dict[str, Any], *, methods: Sequence[str] | None = None,
          replace: bool = False, source: str = "") -> dict[str, Any]:
    """``into`` with the rows ``methods`` of ``new`` (default: all but the base and the oracle)
    added, its accuracy levels and targets recomputed; neither file is changed. Merging
    ``s2dnas_rl`` brings its oracle (the bound computed on its network) along.

    Raises:
        MergeError: the files measure different things, a row is missing from ``new``, already in
            ``into`` (without ``replace``), or has no measured speed-up where ``into`` has them.
    """
    _check_files(into, new)
    names = list(methods) if methods else [n for n in new["methods"] if n not in NOT_ROWS]
    if not names:
        raise MergeError("the file to merge holds no row besides the base's")
    for name in names:
        if name in NOT_ROWS or name not in new["methods"]:
            rows = [n for n in new["methods"] if n not in NOT_ROWS]
            raise MergeError(f"no row {name!r} to merge; the file holds {', '.join(rows) or 'only the base'}")
        _check_row(into, name, new["methods"][name], replace=replace)
    data = json.loads(json.dumps(into))
    order = list(data["methods"])
    rows = dict(data["methods"])
    if "s2dnas_rl" in names:  # the oracle is s2dnas_rl's: the merged one's, or none
        order = [n for n in order if n != "oracle"]
        rows.pop("oracle", None)
    for name in [*names, *(["oracle"] if "s2dnas_rl" in names and "oracle" in new["methods"] else [])]:
        if name not in rows:
            order.insert(_position(order, name), name)
        rows[name] = json.loads(json.dumps(new["methods"][name]))
        if name in (new.get("runs") or {}):
            data.setdefault("runs", {})[name] = new["runs"][name]
    data["methods"] = {name: rows[name] for name in order}
    for m in data.get("merged", []):  # a replaced row no longer comes from where it came before
        m["methods"] = [n for n in m["methods"] if n not in names]
        m["seeds_added"] = _only(m.get("seeds_added", []), m["methods"])
    data["merged"] = [{k: v for k, v in m.items() if v or k != "seeds_added"}
                      for m in data.get("merged", []) if m["methods"]]
    joined = _only(new.get("seeds_added", []), names)  # where the merged rows' seeds came from
    data["merged"].append({**_record(new, names, source), **({"seeds_added": joined} if joined else {})})
    data["iso_accuracy"] = iso_accuracy(data)
    data["targets"] = check_targets(data)
    return data


def _only(records: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """``--add-seeds`` records narrowed to the rows ``names``; those left with none dropped."""
    kept = [{**m, "methods": [n for n in m["methods"] if n in names]} for m in records]
    return [m for m in kept if m["methods"]]


def _record(new: dict[str, Any], names: list[str], source: str) -> dict[str, Any]:
    """Where rows (or seeds) came from: file, command, machine, the CPU they were timed on, when."""
    return {"methods": names, "from": source, "command": new.get("command"),
            "platform": new["machine"].get("platform"),
            "timed_on": sorted(set().union(*(_timing_cpus(new["methods"][n]) for n in names))),
            "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _seed_keys(name: str, r: dict[str, Any], seeds: list[int], which: str) -> set[int]:
    """The seeds of row ``name`` (its ``per_seed`` entries), which must be its file's seeds."""
    per_seed = r.get("per_seed") if isinstance(r.get("per_seed"), dict) else {}
    if (not all(isinstance(k, int) for k in seeds) or {str(k) for k in seeds} != set(per_seed)
            or not all(isinstance(e, dict) and isinstance(e.get("points"), list) and e["points"]
                       and all(isinstance(q, dict) for q in e["points"]) for e in per_seed.values())):
        raise MergeError(f"{which}'s {name!r} holds seeds {sorted(per_seed)} with points, the file {seeds}: not a "
                         "result of python -m benchmarks.methods with --seeds (or one changed since)")
    return {int(k) for k in r["per_seed"]}


def _recorded_keys(r: dict[str, Any]) -> set[tuple[int, str]]:
    """What a row's seeds recorded: their keys ((-1, key)) and (point index, key) of their points."""
    return ({(-1, k) for e in seed_entries(r) for k in e}
            | {(i, k) for e in seed_entries(r) for i, q in enumerate(e["points"]) for k in q})


def _check_seed_rows(name: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    """Seeds of row ``name`` from two runs that one row can hold: on the same super-network and
    search target, measured alike (the same numbers recorded, timed in both or neither)."""
    if _supernets(a) != _supernets(b):
        raise MergeError(f"{name!r}'s seeds loaded different super-networks ({sorted(_supernets(a))} against "
                         f"{sorted(_supernets(b))}); run every seed with the same --supernet")
    targets = {json.dumps(e.get("search_target"), sort_keys=True) for e in seed_entries(a) + seed_entries(b)}
    if len(targets) > 1:
        raise MergeError(f"{name!r}'s seeds searched for different targets ({', '.join(sorted(targets))}); "
                         "run every seed with the same search configuration")
    differ = sorted({k for _, k in _recorded_keys(a) ^ _recorded_keys(b)})
    if _timed(a) != _timed(b) or differ:
        raise MergeError(f"{name!r} was measured differently in the two files (timed in one and not the other, or "
                         f"other numbers: {differ or 'speed-ups'}); run and time both with the same code (the "
                         "benchmark command without --no-speed)")


def add_seeds(into: dict[str, Any], new: dict[str, Any], *, source: str = "") -> dict[str, Any]:
    """``into`` with the seeds of ``new``'s searched rows added to the same rows: each row's mean
    and spread computed again over every seed (:func:`~benchmarks.methods.aggregate_seeds`), the
    file's seeds the union, its levels and targets recomputed, the oracle the lowest seed's; where
    the added seeds came from is recorded (``seeds_added``, with ``new``'s own records). The base
    row and its timing stay ``into``'s. Neither file is changed.

    Raises:
        MergeError: the files measure different things (as :func:`merge`), hold other rows than the
            same searched ones, share a seed, or measured a row differently (timed in one only);
            a row's seeds loaded another super-network or searched for another target.
    """
    _check_files(into, new)
    mine = [n for n in into["methods"] if n in SEARCHED]
    theirs = [n for n in new["methods"] if n in SEARCHED]
    other = [n for n in new["methods"] if n not in SEARCHED and n not in NOT_ROWS]
    if not theirs or set(mine) != set(theirs) or other:
        raise MergeError(f"--add-seeds joins other seeds of the same searched rows, and nothing else; the target "
                         f"holds {', '.join(mine) or 'none'}, the file {', '.join(theirs + other) or 'none'}")
    data = json.loads(json.dumps(into))
    for name in theirs:
        a, b = into["methods"][name], new["methods"][name]
        both = _seed_keys(name, a, into.get("seeds") or [], "the target") & _seed_keys(
            name, b, new.get("seeds") or [], "the file")
        if both:
            raise MergeError(f"seed {min(both)} is in both files; run the missing seeds only (--seeds)")
        _check_seed_rows(name, a, b)
        entries = {int(k): e for r in (a, b) for k, e in r["per_seed"].items()}
        data["methods"][name] = aggregate_seeds(entries, base_macs=into["base"]["macs"])
    data["seeds"] = sorted({*into["seeds"], *new["seeds"]})
    if "s2dnas_rl" in theirs:  # the bound on the lowest seed's network, which may be an added one
        data["methods"]["oracle"] = oracle_row(data["methods"]["s2dnas_rl"], base_macs=into["base"]["macs"])
    earlier = new.get("seeds_added", [])  # a joined file's own records: those seeds came from elsewhere
    own = sorted(set(new["seeds"]) - {k for m in earlier for k in m["seeds"]})
    data["seeds_added"] = [*data.get("seeds_added", []), *earlier,
                           *([{**_record(new, theirs, source), "seeds": own}] if own else [])]
    data["iso_accuracy"] = iso_accuracy(data)
    data["targets"] = check_targets(data)
    return data


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MergeError(f"{path} is not a readable method-comparison result ({type(err).__name__}: {err})") from None
    ok = (isinstance(data, dict) and isinstance(data.get("methods"), dict) and isinstance(data.get("base"), dict)
          and isinstance(data.get("machine"), dict) and all(k in data["base"] for k in BASE)
          and isinstance(data.get("seeds", []), list)
          and all(isinstance(m, dict) and isinstance(m.get("methods"), list) and isinstance(m.get("from"), str)
                  and isinstance(m.get("merged_at"), str) and isinstance(m.get("seeds", []), list)
                  for m in [*(data.get("merged") or []), *(data.get("seeds_added") or [])])
          and all(isinstance(r, dict) and isinstance(r.get("points"), list) and r["points"]
                  and all(isinstance(q, dict) for q in r["points"]) for r in data["methods"].values()))
    if not ok:
        raise MergeError(f"{path} is not a method-comparison result (expected 'methods' with points, 'base' with "
                         f"{', '.join(BASE)}, 'machine', records of what was merged with methods, from, merged_at): "
                         "the --result file of python -m benchmarks.methods")
    return data


def _names(value: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        raise MergeError(f"--methods {value!r} names no row; expected comma-separated row names, e.g. static_x0.75")
    return names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", help="the result file whose rows are added (--result of python -m benchmarks.methods)")
    p.add_argument("--into", required=True, help="the result file that receives them (rewritten with its .md and .png)")
    p.add_argument("--methods", default=None, help="comma-separated rows to add (default: all but the base's and "
                   "the oracle; s2dnas_rl brings its oracle along)")
    p.add_argument("--replace", action="store_true", help="put a row the target already holds in its place")
    p.add_argument("--add-seeds", action="store_true", help="the file holds other seeds of the target's searched "
                   "rows: add them to those rows (the target's seeds become the union)")
    args = p.parse_args(argv)
    into_path, new_path = Path(args.into), Path(args.result)
    try:
        if args.add_seeds and (args.methods is not None or args.replace):
            raise MergeError("--add-seeds adds seeds to every searched row of the target; it takes neither "
                             "--methods nor --replace")
        if args.add_seeds:
            data = add_seeds(_read(into_path), _read(new_path), source=str(new_path))
        else:
            data = merge(_read(into_path), _read(new_path),
                         methods=_names(args.methods) if args.methods is not None else None,
                         replace=args.replace, source=str(new_path))
        stem, text = into_path.with_suffix(""), table(data) + "\n"  # made before anything is written
        atomic_write_json(into_path, data)
        stem.with_suffix(".md").write_text(text)
        plot(data, stem.with_suffix(".png"))
    except MergeError as err:
        raise SystemExit(f"error: {err}") from None
    except OSError as err:
        raise SystemExit(f"error: could not write {into_path} or its .md/.png ({err}); check the folder") from None
    done = data["seeds_added"][-1] if args.add_seeds else data["merged"][-1]
    print(f"{into_path}: added {', '.join(done['methods'])}"
          + (f" seeds {', '.join(map(str, done['seeds']))} (now {', '.join(map(str, data['seeds']))})"
             if args.add_seeds else ""))


if __name__ == "__main__":
    main()
