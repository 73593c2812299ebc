"""The threshold optimiser: one algorithm for every stage count, exact over the candidate thresholds.

Given, on the calibration data, each early stage's confidences ``(S-1, N)``, whether each stage
classifies each input correctly ``(S, N)`` and each stage's own cost per input ``(S,)`` (MACs, or
any other unit such as measured latency: the optimiser only adds them up), it finds the
thresholds that

* **min_correct** mode: have the smallest total cost with at least ``min_correct`` correct
  answers (ties: more correct), else the most correct answers (ties: less cost);
* **max_cost** mode: have the most correct answers within total cost ``max_cost`` (ties: less
  cost), else the smallest cost (ties: more correct).

Candidates: a stage's threshold only matters through the set of inputs it lets leave, so the
candidates are one threshold per distinct outcome: 0 (everyone leaves), for every observed
confidence ``u_j`` above the smallest a threshold just below it (the float32 midpoint between it
and the next smaller observed value, so that a ~1e-7 difference in a recomputed logit cannot flip
an input sitting on it), and :data:`NEVER_EXIT` (nobody leaves).

Search (exact): every combination of candidates of the early stages but the last one (the
"outer" stages) is enumerated; for each, the last early stage's candidates are all scored at once
in O(N) with prefix sums over the inputs sorted once by that stage's confidence. The result is the
optimum over *all* candidate combinations, for any number of stages; with S <= 2 it is a single
sweep. Cost: ``(outer combinations) x N`` cells.

Cap and fallback: when that exceeds ``max_cells`` (default :data:`EXACT_CELLS`), each outer
stage's candidates are thinned to ``g`` evenly spaced ones (by rank, always keeping "everyone" and
"nobody"), ``g`` the largest that fits; the last early stage stays exact. The result then is the
optimum over that grid and says ``exact=False``.

Design choice: this replaces a full grid (S <= 3) and a coordinate descent (S > 3) that could stop
at a local optimum (up to 10% more MACs on synthetic 4-stage cases; issue 14).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from s2dnas.dynamic.policy import NEVER_EXIT

__all__ = ["EXACT_CELLS", "ThresholdSearch", "candidate_thresholds", "optimise_thresholds"]

EXACT_CELLS = 30_000_000  # 3 stages on 5,000 val inputs stay exact (~1-2 s on one CPU core)
"""Outer combinations x inputs the exact search may scan before thinning the outer candidates."""

_PRUNE_EVERY = 256  # leaves between two prunings of the collected curve points


@dataclass(frozen=True)
class ThresholdSearch:
    """What :func:`optimise_thresholds` found.

    Attributes:
        thresholds: the chosen ``S-1`` thresholds (float32 values as Python floats).
        correct: correct answers with them.
        cost: total cost with them (sum over inputs of the costs of the stages each one ran).
        feasible: whether they meet the mode's constraint.
        exact: True when every candidate combination was scored (no thinning).
        settings: how many threshold settings were scored.
        front: the Pareto front over every setting scored, by cost: ``(cost, correct,
            thresholds)`` triples, no point beaten on both cost (lower) and correct (higher).
    """

    thresholds: tuple[float, ...]
    correct: int
    cost: float
    feasible: bool
    exact: bool
    settings: int
    front: tuple[tuple[float, int, tuple[float, ...]], ...]


def candidate_thresholds(confidences: np.ndarray) -> np.ndarray:
    """One float32 threshold per distinct outcome of a stage's exit test, ascending.

    Args:
        confidences: ``(N,)`` confidences of one stage (float32 comparisons).

    Returns:
        ``0``, a threshold just below each observed value above the smallest, and
        :data:`NEVER_EXIT`: threshold ``j`` lets leave exactly the inputs with confidence
        ``>= u_j`` (``u`` the sorted distinct values).
    """
    u = np.unique(np.asarray(confidences, dtype=np.float32))
    if u.size == 0:
        return np.array([0.0, NEVER_EXIT], dtype=np.float32)
    mids = ((u[:-1].astype(np.float64) + u[1:].astype(np.float64)) / 2.0).astype(np.float32)
    mids = np.where(mids > u[:-1], mids, u[1:])  # adjacent float32 values: the upper one itself
    return np.concatenate([[0.0], mids, [NEVER_EXIT]]).astype(np.float32)


def _thin(cand: np.ndarray, g: int) -> np.ndarray:
    if len(cand) <= g:
        return cand
    return cand[np.unique(np.round(np.linspace(0, len(cand) - 1, g)).astype(np.int64))]


def optimise_thresholds(confidences: np.ndarray, correct: np.ndarray, stage_cost: Sequence[float], *,
                        min_correct: float | None = None, max_cost: float | None = None,
                        grid: int | None = None, max_cells: int = EXACT_CELLS) -> ThresholdSearch:
    """Choose the thresholds (see the module docstring for the modes, candidates and search).

    Args:
        confidences: ``(S-1, N)`` float32 confidences of the early stages.
        correct: ``(S, N)`` bool, whether each stage classifies each input correctly.
        stage_cost: ``S`` per-stage costs per input, ``>= 0``.
        min_correct: the number of correct answers to reach (min_correct mode).
        max_cost: the total cost not to exceed (max_cost mode).
        grid: at most this many candidates per outer stage (``None``: all, within ``max_cells``).
        max_cells: the cap on outer combinations x inputs.

    Returns:
        The :class:`ThresholdSearch`.

    Raises:
        ValueError: both or neither mode, or inconsistent shapes.
    """
    if (min_correct is None) == (max_cost is None):
        raise ValueError("Expected exactly one of min_correct and max_cost")
    conf = np.asarray(confidences, dtype=np.float32)
    ok = np.asarray(correct, dtype=bool)
    cost = np.asarray(stage_cost, dtype=np.float64)
    s_count, n = ok.shape
    if conf.shape != (s_count - 1, n) or cost.shape != (s_count,):
        raise ValueError(f"Expected confidences ({s_count - 1}, {n}) and {s_count} costs, but got "
                         f"{conf.shape} and {cost.shape}")
    if not (np.isfinite(cost).all() and (cost >= 0).all()):
        raise ValueError(f"Expected per-stage costs finite and >= 0, but got {cost.tolist()}")
    target_mode = min_correct is not None

    def key(c: float, k: int) -> tuple[int, float, float]:
        """Smaller is better: feasible first, then the mode's objective, then its tie-break."""
        if target_mode:
            return (0, c, -k) if k >= min_correct else (1, -k, c)  # type: ignore[operator]
        return (0, -k, c) if c <= max_cost else (1, c, -k)  # type: ignore[operator]

    if s_count == 1:
        c, k = float(cost[0] * n), int(ok[0].sum())
        return ThresholdSearch((), k, c, key(c, k)[0] == 0, True, 1, ((c, k, ()),))

    last = s_count - 2  # the last early stage: swept exactly
    cands = [candidate_thresholds(conf[s]) for s in range(s_count - 1)]
    outer = cands[:last]
    combos = math.prod(len(c) for c in outer)
    exact = grid is None and combos * n <= max_cells
    if not exact:
        g = max(2, int((max_cells / max(n, 1)) ** (1.0 / max(last, 1))))
        if grid is not None:
            g = min(g, max(2, int(grid)))
        outer = [_thin(c, g) for c in outer]
        exact = all(len(a) == len(b) for a, b in zip(outer, cands[:last]))

    # The last early stage: inputs sorted once by its confidence (descending); candidate j lets
    # leave the first pos[j] of them (those with confidence >= u_j), restricted to the inputs
    # still in flight.
    order = np.argsort(-conf[last], kind="stable")
    sorted_conf = conf[last][order]
    last_cand = cands[last]
    pos = np.searchsorted(-sorted_conf, -last_cand, side="right")  # #{conf >= t}
    pos[-1] = 0  # NEVER_EXIT: nobody
    ok_exit = ok[last][order]
    ok_final = ok[last + 1][order]

    best: tuple[tuple[int, float, float], float, int, tuple[float, ...]] | None = None
    pts_cost: list[np.ndarray] = []
    pts_corr: list[np.ndarray] = []
    pts_thr: list[np.ndarray] = []
    front = (np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros((0, s_count - 1), dtype=np.float32))
    scored = 0

    def prune() -> None:
        nonlocal front
        c = np.concatenate([front[0], *pts_cost])
        k = np.concatenate([front[1], *pts_corr])
        t = np.concatenate([front[2], *pts_thr])
        pts_cost.clear(), pts_corr.clear(), pts_thr.clear()
        idx = np.lexsort((-k, c))  # by cost, then more correct first
        c, k, t = c[idx], k[idx], t[idx]
        prev = np.concatenate([[-1], np.maximum.accumulate(k)[:-1]])
        keep = k > prev
        front = (c[keep], k[keep], t[keep])

    for leaf, setting in enumerate(itertools.product(*[range(len(c)) for c in outer])):
        # Walk the outer stages: who leaves where, what it costs so far.
        alive = np.ones(n, dtype=bool)
        fixed_cost, fixed_ok = 0.0, 0
        thresholds = []
        for s, j in enumerate(setting):
            t = outer[s][j]
            thresholds.append(t)
            reached = int(alive.sum())
            fixed_cost += reached * cost[s]
            leave = alive & (conf[s] >= t)
            fixed_ok += int((leave & ok[s]).sum())
            alive &= ~leave
        in_flight = alive[order]
        m = int(in_flight.sum())
        # one cumulative sum for three counts: in flight, right at the exit, right at the last stage
        csum = np.zeros((3, n + 1), dtype=np.int64)
        np.cumsum(np.stack([in_flight, in_flight & ok_exit, in_flight & ok_final]), axis=1, out=csum[:, 1:])
        exits = csum[0, pos]
        corr = fixed_ok + csum[1, pos] + (csum[2, -1] - csum[2, pos])
        total = fixed_cost + m * cost[last] + (m - exits) * cost[last + 1]
        scored += len(pos)
        # This leaf's best by the mode's key, then against the best so far. Candidates are in
        # ascending threshold order, so `total` never decreases along them (costs are >= 0).
        if target_mode:
            feas = np.flatnonzero(corr >= min_correct)
            if feas.size:  # least cost (the first feasible), then most correct among equal cost
                tie = np.flatnonzero(total == total[feas[0]])
                tie = tie[corr[tie] >= min_correct]
                i = tie[np.argmax(corr[tie])]
            else:  # most correct, then least cost (the first of the most correct)
                i = int(np.argmax(corr))
        else:
            limit_j = int(np.searchsorted(total, max_cost, side="right"))  # feasible: a prefix
            if limit_j:  # most correct within the budget, then least cost
                i = int(np.argmax(corr[:limit_j]))
            else:  # least cost (the first block), then most correct
                tie = np.flatnonzero(total == total[0])
                i = tie[np.argmax(corr[tie])]
        k_i, c_i = int(corr[i]), float(total[i])
        cand_key = key(c_i, k_i)
        if best is None or cand_key < best[0]:
            best = (cand_key, c_i, k_i, (*thresholds, last_cand[i]))
        # keep only this leaf's own Pareto candidates for the curve (few, so pruning stays cheap)
        best_before = np.maximum.accumulate(corr)
        mine = np.flatnonzero(np.concatenate([[True], corr[1:] > best_before[:-1]]))
        pts_cost.append(total[mine])
        pts_corr.append(corr[mine].astype(np.int64))
        thr = np.empty((len(mine), s_count - 1), dtype=np.float32)
        thr[:, :last] = thresholds
        thr[:, last] = last_cand[mine]
        pts_thr.append(thr)
        if (leaf + 1) % _PRUNE_EVERY == 0:
            prune()
    prune()
    assert best is not None, "at least one setting is scored"
    chosen = tuple(float(t) for t in best[3])
    return ThresholdSearch(
        thresholds=chosen, correct=best[2], cost=best[1], feasible=best[0][0] == 0, exact=exact, settings=scored,
        front=tuple((float(c), int(k), tuple(float(v) for v in t)) for c, k, t in zip(*front)),
    )
