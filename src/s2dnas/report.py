"""The run report: ``report.md`` with the search's reward curve, the accuracy-vs-MACs curves, the
exit distribution and the final table (PNG plots beside it)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2dnas._io import atomic_write_bytes
from s2dnas.dynamic.plots import _pyplot, plot_accuracy_vs_macs, plot_exit_histogram, save_png

__all__ = ["aim_text", "write_report", "plot_reward_curve"]


def plot_reward_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Reward of every evaluated candidate in order, with the best so far."""
    plt = _pyplot()
    rewards = [r["reward"] for r in records]
    best, running = [], float("-inf")
    for r in rewards:
        running = max(running, r)
        best.append(running)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(rewards) + 1), rewards, "o", ms=4, alpha=0.6, label="candidate")
    ax.plot(range(1, len(rewards) + 1), best, "-", label="best so far")
    ax.set_xlabel("candidate")
    ax.set_ylabel("reward")
    ax.set_title("Search")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    plt.close(fig)


def aim_text(results: dict[str, Any]) -> str:
    """What the calibration aimed at: the target val accuracy, else the MACs or latency budget."""
    if results.get("target_val_accuracy") is not None:
        return f"target val accuracy {100 * results['target_val_accuracy']:.2f}%"
    target = results.get("calibration_target") or {}
    if target.get("macs_budget") is not None:
        return f"MACs budget {target['macs_budget'] / 1e6:.2f}M"
    if target.get("latency_budget_ms") is not None:
        return f"latency budget {target['latency_budget_ms']:.3f} ms per input"
    return "no target recorded"


#: Per step: its clock in results.json (this process only) and the work kept across resumes.
WORK = (("super-network epochs", "supernet_seconds", "supernet_epoch_seconds"),
        ("candidates scored", "search_seconds", "search_candidate_seconds"),
        ("training epochs", "final_training_seconds", "final_training_epoch_seconds"))


def _work_text(timings: dict[str, Any]) -> str:
    """The work of a resumed run's earlier processes, which this process's clock does not see: the
    super-network's and the final training's epochs, the search's journalled candidates (said only
    where they exceed the clock)."""
    parts = [f"{label} {work:.0f}s" for label, clock, key in WORK
             if (work := timings.get(key)) is not None and work > timings.get(clock, 0.0)]
    return f" (this process; across resumes: {', '.join(parts)})" if parts else ""


def _machine_text(machine: dict[str, Any] | None) -> str:
    """Where the run's last process ran (runs written before results.json recorded it say nothing)."""
    if not machine:
        return ""
    ranks = machine.get("world_size") or 1
    return (f"; last process on {machine.get('gpu') or machine.get('cpu')}"
            + (f" x {ranks} ranks" if ranks > 1 else "")
            + f", {machine.get('threads')} threads, torch {machine.get('torch')}")


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write ``report.md`` and its plots into ``out``; returns the report's path."""
    base = results["base"]
    base_macs = base["macs"]
    journal = out / "search" / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()] if journal.exists() else []
    if records:
        plot_reward_curve(records, out / "reward_curve.png")
    val_curve = [(p["expected_macs"], p["accuracy"]) for p in results["calibration"]["curve"]]
    test_curve = [(p["expected_macs"], p["accuracy"]) for p in results["test_curve"]]
    test = results["test"]
    plot_accuracy_vs_macs({"val (calibration)": val_curve, "test": test_curve}, out / "accuracy_vs_macs.png",
                          base=base_macs,
                          points={"base model (test)": (base_macs, base["test_accuracy"]),
                                  "chosen (test)": (test["expected_macs"], test["accuracy"]),
                                  "oracle (test)": (test["oracle"]["expected_macs"], test["oracle"]["accuracy"])})
    plot_exit_histogram(test["exit_fractions"], out / "exit_histogram.png", stage_macs=results["stage_macs"])
    arch = results["architecture"]
    timings = results["timings"]
    lines = [
        f"# s2dnas run: {results['base_model']} on {results['dataset']}",
        "",
        "Thresholds were calibrated on the validation split; the test split is used only for this report.",
        "",
        "| | test accuracy | MACs per input | % of base MACs |",
        "|---|---|---|---|",
        f"| base model | {100 * base['test_accuracy']:.2f}% | {base_macs / 1e6:.2f}M | 100% |",
        f"| dynamic (ours) | {100 * test['accuracy']:.2f}% | {test['expected_macs'] / 1e6:.2f}M | "
        f"{100 * test['expected_macs'] / base_macs:.1f}% |",
        f"| oracle exits (bound) | {100 * test['oracle']['accuracy']:.2f}% | "
        f"{test['oracle']['expected_macs'] / 1e6:.2f}M | {100 * test['oracle']['expected_macs'] / base_macs:.1f}% |",
        "",
        f"- base val accuracy {100 * base['val_accuracy']:.2f}%, {aim_text(results)}; calibrated val accuracy "
        f"{100 * results['val']['accuracy']:.2f}% (feasible: {results['calibration']['feasible']})",
        f"- exits per stage (test): {', '.join(f'{100 * f:.1f}%' for f in test['exit_fractions'])}",
        f"- stage accuracy alone (test): {', '.join(f'{100 * a:.2f}%' for a in test['stage_accuracy'])}",
        f"- own MACs per stage: {', '.join(f'{m / 1e6:.2f}M ({100 * m / base_macs:.1f}%)' for m in results['stage_macs'])}",
        f"- thresholds ({results['calibration']['confidence']}): {', '.join(f'{t:.4f}' for t in results['calibration']['thresholds'])}",
        f"- architecture: splits {arch['splits']} (parts of {arch['ratio_grid']}), concat {arch['concat']}",
        f"- time: search {timings.get('search_seconds', 0):.0f}s, final training "
        f"{timings.get('final_training_seconds', 0):.0f}s, total {timings.get('total_seconds', 0):.0f}s"
        + _work_text(timings) + _machine_text(results.get("machine")),
        "",
    ]
    if records:
        lines += ["## Search", "", f"{len(records)} candidates evaluated.", ""]
        if (ref := results.get("search_reference")) is not None:
            lines += [f"Candidates were scored at val accuracy {100 * ref['search_target']['target_accuracy']:.2f}% "
                      f"(search.target_from: reference): the run's target moved by the most expensive "
                      f"architecture's score, {100 * ref['accuracy']:.2f}%, against the base's "
                      f"{100 * ref['base_val_accuracy']:.2f}%.", ""]
        lines += ["![reward](reward_curve.png)", ""]
    lines += ["## Accuracy vs MACs", "", "![curve](accuracy_vs_macs.png)", "", "## Exits", "",
              "![exits](exit_histogram.png)", ""]
    path = out / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
