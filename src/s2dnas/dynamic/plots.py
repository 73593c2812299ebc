"""PNG plots of dynamic inference: the accuracy-vs-MACs curve and the exit histogram.

matplotlib is imported inside the functions with the Agg backend (no display needed).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

from s2dnas._io import atomic_write_bytes

__all__ = ["plot_accuracy_vs_macs", "plot_exit_histogram", "save_png"]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike[str], **kwargs) -> Path:  # type: ignore[no-untyped-def]
    """Render ``fig`` as PNG in memory, then write it atomically (a kill never leaves half a PNG)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    out = Path(path)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _macs_axis(macs: float, base: float | None) -> float:
    return 100.0 * macs / base if base else macs / 1e6


def plot_accuracy_vs_macs(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | os.PathLike[str], *,
                          base: float | None = None,
                          points: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Plot accuracy against average MACs per input.

    Args:
        curves: name -> ``[(macs_per_input, accuracy), ...]`` (accuracy as a fraction), drawn as lines.
        path: the PNG to write.
        base: the base model's MACs per input; when given the x axis is "% of base MACs".
        points: name -> ``(macs_per_input, accuracy)`` drawn as single markers (e.g. the chosen
            thresholds, the oracle, the base model).

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    try:
        for name, curve in curves.items():
            pts = sorted(curve)
            if not pts:
                continue
            ax.plot([_macs_axis(m, base) for m, _ in pts], [100.0 * a for _, a in pts], marker=".",
                    markersize=3, linewidth=1.2, label=name)
        for marker, (name, (m, a)) in zip("o*sD^v", (points or {}).items()):
            ax.plot([_macs_axis(m, base)], [100.0 * a], linestyle="none", marker=marker, markersize=8, label=name)
        ax.set_xlabel("average MACs per input (% of base model)" if base else "average MACs per input (millions)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy vs. MACs")
        ax.grid(True, alpha=0.3)
        if curves or points:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        out = save_png(fig, path)
    finally:
        plt.close(fig)
    return out


def plot_exit_histogram(exit_fractions: Sequence[float], path: str | os.PathLike[str], *,
                        stage_macs: Sequence[int] | None = None) -> Path:
    """Bar chart of the fraction of inputs leaving at each stage.

    Args:
        exit_fractions: per stage, the fraction of inputs that leave there.
        path: the PNG to write.
        stage_macs: per stage, its own MACs per input; when given each bar is labelled with the
            MACs an input leaving there has cost (the sum of stages ``1..s``).

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    try:
        labels = [f"stage {s + 1}" for s in range(len(exit_fractions))]
        if stage_macs is not None:
            total = 0
            for s, m in enumerate(stage_macs[: len(labels)]):
                total += int(m)
                labels[s] += f"\n{total / 1e6:.3g}M MACs"
        bars = ax.bar(range(len(exit_fractions)), [100.0 * f for f in exit_fractions], color="tab:blue")
        for bar, f in zip(bars, exit_fractions):
            ax.annotate(f"{100.0 * f:.1f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(exit_fractions)), labels, fontsize=8)
        ax.set_xlabel("exit stage")
        ax.set_ylabel("inputs leaving (%)")
        ax.set_ylim(0, 105)
        ax.set_title("Exit distribution")
        fig.tight_layout()
        out = save_png(fig, path)
    finally:
        plt.close(fig)
    return out
