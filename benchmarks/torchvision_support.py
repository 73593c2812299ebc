"""Which torchvision classification builders s2dnas can transform (measured, not hoped).

Every builder of ``torchvision.models.list_models(module=torchvision.models)`` (classification only),
random weights, 10 classes, eval mode, 64x64 input (or the smallest the builder accepts), one model
at a time. A CNN is ``supported`` only when S=1 reproduces the base logits (max relative difference
<= ``S1_TOLERANCE``) AND, for each S in 2, 3, 4, the default architecture (and at S=3 one sampled
architecture) build,
run, cost no more than the base, and their MACs by execution equal the formula. Vision
transformers (vit_*, swin_*, maxvit_t) are expected refusals: their row checks that the refusal is
a typed error naming the node. Models over ``--max-params`` or past ``--time-limit`` are recorded
as skipped, with the reason. Results are appended to the JSON as each model finishes; ``--resume``
skips the models already there. Run:

    OMP_NUM_THREADS=2 python -m benchmarks.torchvision_support --resume
"""
from __future__ import annotations

import argparse
import gc
import json
import re
import signal
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from s2dnas._io import atomic_write_json
from s2dnas.errors import S2DNASError
from s2dnas.space import Space

__all__ = ["check_builder", "check_model", "write_markdown", "write_table"]

STAGES = (2, 3, 4)
SAMPLED_AT = 3  # the S at which a sampled architecture is checked too (the default one at every S)
S1_TOLERANCE = 1e-5
DEFAULT_SIZE = 64
MAX_PARAMS = 150_000_000  # above it a random-weight build alone costs minutes and GBs on a small CPU
TIME_LIMIT = 300  # seconds per model
SIZES = {"inception_v3": 96, "maxvit_t": 224}  # the smallest inputs these builders accept
SIZES.update({n: 224 for n in ("vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32")})


def is_transformer(name: str) -> bool:
    """Vision transformers: allowed to stay refused (issue 15), not counted as CNNs."""
    return name.startswith(("vit_", "swin_")) or name == "maxvit_t"


class _Timeout(BaseException):  # not an Exception: the crash handlers must not swallow it
    pass


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise _Timeout


def _stopped_at(message: str) -> str:
    found = re.search(r"node '([^']+)' \(([^)]*)\)", message)
    return f"{found.group(1)} ({found.group(2)})" if found else ""


def check_builder(name: str, *, size: int, max_params: int, time_limit: int) -> dict:
    """One row for one torchvision builder: S=1 exact, S=2..4 valid, or why not (refused / skipped)."""
    row: dict = {"model": name, "input": [3, size, size], "transformer": is_transformer(name)}
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    # the cut reads torchvision's weight metadata (ImageNet head, nothing downloaded), not a build
    row["params"] = torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    if row["params"] > max_params:
        row.update(supported=False, skipped=f"{row['params'] / 1e6:.0f}M parameters > --max-params "
                   f"{max_params / 1e6:.0f}M (not measured)")
        return row
    torch.manual_seed(0)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(time_limit)
    model = None
    try:
        model = torchvision.models.get_model(name, num_classes=10, weights=None, **kwargs).eval()
        row["params"] = sum(p.numel() for p in model.parameters())  # with the 10-class head
        row.update(_measure(model, shape=(3, size, size)))
    except _Timeout:
        row.update(supported=False, skipped=f"over the {time_limit} s time limit (not finished)")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        del model
        gc.collect()
    if row["transformer"]:
        message = row.get("error", "")
        row["refused_as_expected"] = bool(row.get("error_type") and not row.get("crashed") and "node '" in message)
    return row


def _measure(model: nn.Module, *, shape: tuple[int, int, int]) -> dict:
    x = torch.randn(2, *shape)
    row: dict = {"stages": {}}
    try:
        one = Space(model, input_shape=shape, num_stages=1).build().eval()
        with torch.no_grad():
            ref = model(x)
            row["s1_max_rel_diff"] = float((one(x)[0] - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        del one
    except S2DNASError as err:  # typed refusal (the library's hierarchy)
        return {**row, "supported": False, "error": str(err), "error_type": type(err).__name__,
                "stopped_at": _stopped_at(str(err))}
    except Exception as err:  # noqa: BLE001 - a crash is a finding, recorded rather than raised
        return {**row, "supported": False, "error": f"{type(err).__name__}: {err}"[:500], "crashed": True}
    for stages in STAGES:
        row["stages"][str(stages)] = _check_stages(model, shape=shape, stages=stages, x=x)
    row["s1_exact"] = row["s1_max_rel_diff"] <= S1_TOLERANCE
    row["supported"] = row["s1_exact"] and all(r["ok"] for r in row["stages"].values())
    return row


def _check_stages(model: nn.Module, *, shape: tuple[int, int, int], stages: int, x: torch.Tensor) -> dict:
    out: dict = {"ok": False}
    try:
        space = Space(model, input_shape=shape, num_stages=stages)
        out.update(groups=space.num_groups)
        base = space.base_macs()
        archs = [("default", space.default_architecture())]
        if stages == SAMPLED_AT:
            archs.append(("sampled", space.sample(torch.Generator().manual_seed(1))))
        for label, arch in archs:
            net = space.build(arch).eval()
            with torch.no_grad():
                logits = net(x)
            assert len(logits) == stages and all(torch.isfinite(t).all() for t in logits), "bad stage outputs"
            macs = net.stage_macs()
            if macs != net.analytic_macs:
                out["error"] = f"{label}: MACs by execution {macs} != formula {net.analytic_macs}"
                return out
            if sum(macs) > base:
                out["error"] = f"{label}: costs {sum(macs)} MACs > base {base}"
                return out
            out[f"{label}_macs_fraction"] = [m / base for m in macs]
            del net
        out["ok"] = True
    except S2DNASError as err:
        out.update(error=str(err), error_type=type(err).__name__, stopped_at=_stopped_at(str(err)))
    except (AssertionError, RuntimeError, ValueError, TypeError, IndexError) as err:
        out.update(error=f"{type(err).__name__}: {err}"[:500], crashed=True)
    return out

def check_model(model: nn.Module, *, name: str, shape: tuple[int, int, int]) -> dict:
    """One row (used by benchmarks/timm_support.py): S=1 exact, S=3 (else 2) valid for the default and a sampled architecture, or why not."""
    x = torch.randn(2, *shape)
    row: dict = {"model": name, "input": list(shape)}
    try:
        one = Space(model, input_shape=shape, num_stages=1).build().eval()
        with torch.no_grad():
            ref = model(x)
            row["s1_max_rel_diff"] = float((one(x)[0] - ref).abs().max() / ref.abs().max().clamp_min(1))
        for stages in (3, 2):
            try:
                space = Space(model, input_shape=shape, num_stages=stages)
                break
            except S2DNASError as err:
                row[f"s{stages}_error"] = str(err)
        row["num_stages"] = space.num_stages
        row["groups"] = space.num_groups
        row["space_size"] = space.size()
        archs = [("default", space.default_architecture())]
        if stages == SAMPLED_AT:
            archs.append(("sampled", space.sample(torch.Generator().manual_seed(1))))
        for label, arch in archs:
            net = space.build(arch).eval()
            macs = net.stage_macs()
            assert macs == net.analytic_macs, "MACs by execution differ from the formula"
            assert sum(macs) <= space.base_macs()
            row[f"{label}_macs_fraction"] = [m / space.base_macs() for m in macs]
        row["supported"] = True
    except S2DNASError as err:
        row["supported"] = False
        row["error"] = str(err)
        found = re.search(r"node '([^']+)' \(([^)]*)\)", str(err))
        row["stopped_at"] = f"{found.group(1)} ({found.group(2)})" if found else str(err).split(";")[0][:120]
    return row


def write_markdown(path: Path, title: str, rows: list[dict], *, excluded: set[str]) -> str:
    """A table of the rows; the share counts only the models not in ``excluded``."""
    counted = [r for r in rows if r["model"] not in excluded]
    ok = sum(r["supported"] for r in counted)
    lines = [f"# {title}", "", f"{ok} of {len(counted)} CNNs work ({100 * ok / max(1, len(counted)):.0f}%): "
             "S=1 reproduces the base logits, S=3 builds, runs and costs no more than the base.", "",
             "| model | input | works | S=1 max rel. diff | stages | groups | default MACs per stage (x base) "
             "| stopped at |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fractions = " / ".join(f"{f:.2f}" for f in r.get("default_macs_fraction", []))
        note = " (transformer)" if r["model"] in excluded else ""
        lines.append(f"| {r['model']}{note} | {'x'.join(map(str, r['input']))} | {'yes' if r['supported'] else 'no'} "
                     f"| {r.get('s1_max_rel_diff', float('nan')):.1e} | {r.get('num_stages', '')} | {r.get('groups', '')} "
                     f"| {fractions} | {r.get('stopped_at', '')} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_table(path: Path, title: str, rows: list[dict]) -> str:
    """The markdown table: share of CNN builders supported (overall and per S), skips, refusals."""
    cnn = [r for r in rows if not r["transformer"]]
    measured = [r for r in cnn if "skipped" not in r]
    ok = sum(r["supported"] for r in cnn)
    per_s = {s: sum(r.get("s1_exact", False) and r["stages"][str(s)]["ok"] for r in measured) for s in STAGES}
    skipped = [r for r in rows if "skipped" in r]
    vits = [r for r in rows if r["transformer"] and "skipped" not in r]
    lines = [f"# {title}", "",
             f"**{ok} of {len(cnn)} CNN classification builders supported** ({100 * ok / max(1, len(cnn)):.0f}%; "
             f"{len(measured)} measured, {len(cnn) - len(measured)} skipped): S=1 reproduces the base logits "
             f"(max relative difference <= {S1_TOLERANCE:g}) and, for every S in {', '.join(map(str, STAGES))}, the "
             f"default architecture (and at S={SAMPLED_AT} a sampled one) build, run, cost no more than the base, with MACs by execution "
             "equal to the formula.", "",
             "Per S (S=1 exact and that S valid), of the CNNs measured: "
             + ", ".join(f"S={s}: {n}/{len(measured)}" for s, n in per_s.items()) + ".", "",
             f"Vision transformers (expected refusals): {sum(r.get('refused_as_expected', False) for r in vits)} of "
             f"{len(vits)} measured refused with a typed error naming the node.", ""]
    missing = [n for n in torchvision.models.list_models(module=torchvision.models) if n not in {r["model"] for r in rows}]
    if missing:
        lines += [f"**Partial run**: {len(missing)} builders not run yet (`--resume` continues): "
                  + ", ".join(missing) + ".", ""]
    if skipped:
        lines += ["Skipped (not measured): " + "; ".join(f"{r['model']} ({r['skipped']})" for r in skipped) + ".", ""]
    lines += ["| model | params | input | supported | S=1 max rel. diff | S=2 | S=3 | S=4 | default S=3 MACs per "
              "stage (x base) | seconds | stopped at / note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = r.get("stages", {})
        cells = [("ok" if st[str(s)]["ok"] else "no") if str(s) in st else "" for s in STAGES]
        fractions = " / ".join(f"{f:.2f}" for f in st.get("3", {}).get("default_macs_fraction", []))
        note = r.get("skipped") or r.get("stopped_at") or r.get("error", "")[:100]
        if not note:
            note = "; ".join(f"S={s}: {st[str(s)].get('stopped_at') or st[str(s)].get('error', '')[:100]}"
                             for s in STAGES if str(s) in st and not st[str(s)]["ok"])
        if r["transformer"]:
            note = f"transformer, refused as expected: {note}" if r.get("refused_as_expected") else f"transformer: {note}"
        diff = f"{r['s1_max_rel_diff']:.1e}" if "s1_max_rel_diff" in r else ""
        works = "skipped" if "skipped" in r else ("yes" if r["supported"] else "no")
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {'x'.join(map(str, r['input']))} | {works} | {diff} "
                     f"| {' | '.join(cells)} | {fractions} | {r.get('seconds', 0):.0f} | {note} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=DEFAULT_SIZE)
    p.add_argument("--out", default="benchmarks/results/torchvision_support.json")
    p.add_argument("--models", nargs="*", default=None, help="default: every classification builder")
    p.add_argument("--max-params", type=int, default=MAX_PARAMS)
    p.add_argument("--time-limit", type=int, default=TIME_LIMIT, help="seconds per model")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out, skip those models")
    p.add_argument("--table-only", action="store_true", help="rewrite the markdown from --out, run nothing")
    args = p.parse_args()
    names = args.models or sorted(torchvision.models.list_models(module=torchvision.models),  # smallest first
                                  key=lambda n: torchvision.models.get_model_weights(n).DEFAULT.meta["num_params"])
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if args.resume and out.exists() else []
    done = {r["model"] for r in rows}
    if args.table_only:
        names = []
    torch.set_grad_enabled(False)
    for name in names:
        if name in done:
            continue
        t = time.time()
        row = check_builder(name, size=SIZES.get(name, args.size), max_params=args.max_params,
                            time_limit=args.time_limit)
        row["seconds"] = time.time() - t
        rows.append(row)
        atomic_write_json(out, {"torchvision": torchvision.__version__, "max_params": args.max_params,
                                "time_limit_s": args.time_limit, "rows": rows})
        status = row.get("skipped") or ("supported" if row["supported"] else "not supported: " + (
            row.get("error") or json.dumps({s: v.get("error", "")[:80] for s, v in row["stages"].items()
                                            if not v["ok"]}))[:200])
        print(f"{name} {row['seconds']:.0f}s {status}", flush=True)
    print(write_table(out.with_suffix(".md"), f"torchvision {torchvision.__version__}", rows))


if __name__ == "__main__":
    main()
