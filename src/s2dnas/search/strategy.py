"""The search loop: ask the controller, score, journal, tell; resumable at any moment.

Resume (METHOD.md "Search": nothing is lost): after every evaluated candidate the journal line is
appended (fsync) and then the controller state is saved atomically. A controller is
deterministic given its state, so after a kill it asks again for the samples it asked since its
last saved state; those already in the journal get their recorded reward instead of being scored
again. The budget counts journal entries, so a resumed search evaluates exactly what is missing.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from s2dnas import distributed as dist
from s2dnas._io import atomic_torch_save
from s2dnas.errors import S2DNASError
from s2dnas.search.controller import Controller
from s2dnas.search.evaluator import Evaluator
from s2dnas.search.journal import Journal, sample_key
from s2dnas.space import Architecture, Space

__all__ = ["SearchResult", "SearchStrategy", "DistributedSearchStrategy", "REWARD_FOR_INVALID"]

_logger = logging.getLogger(__name__)

REWARD_FOR_INVALID = -2.0  # below every reward (infeasible macs_saving rewards are >= -1)


@dataclass(frozen=True)
class SearchResult:
    """The best architecture found and every journal record."""

    best: Architecture
    best_reward: float
    records: list[dict[str, Any]]


class SearchStrategy:
    """Drives a controller over a space with an evaluator, journalling every candidate.

    Args:
        space: the space (turns samples into architectures).
        evaluator: scores an architecture.
        controller: proposes samples (RL or random).
        budget: number of distinct candidates to evaluate.
        run_dir: where ``journal.jsonl`` and ``controller.pt`` live.
        max_invalid: stop after this many failed candidates in a row.
        progress: show a progress bar.
    """

    def __init__(self, space: Space, evaluator: Evaluator, controller: Controller, *, budget: int,
                 run_dir: str | Path, max_invalid: int = 5, progress: bool = True) -> None:
        self.space = space
        self.evaluator = evaluator
        self.controller = controller
        self.budget = budget
        self.run_dir = Path(run_dir)
        self.max_invalid = max_invalid
        self.progress = progress
        self.journal = Journal(self.run_dir / "journal.jsonl")
        self.state_path = self.run_dir / "controller.pt"

    def run(self, *, resume: bool = False) -> SearchResult:
        """Search until ``budget`` candidates are in the journal; return the best."""
        from s2dnas.train.checkpoint import load_checkpoint

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.state_path.exists():
            self.controller.load_state_dict(load_checkpoint(self.state_path))
        done = len(self.journal)
        bar = tqdm(total=self.budget, initial=min(done, self.budget), desc="search", disable=not self.progress)
        invalid_in_row = 0
        best = max((r["reward"] for r in self.journal.records()), default=float("-inf"))
        # Duplicates cost no budget; bound the loop anyway. The bound counts the controller's own
        # asks (restored from its state), so a resumed search stops exactly where an
        # uninterrupted one would.
        max_asks = 20 * self.budget + 100
        while len(self.journal) < self.budget and self.controller.num_asked < max_asks:
            sample = self.controller.ask()
            record = self.journal.lookup(sample)
            new = record is None
            if new:
                record = self._evaluate(sample)
                invalid_in_row = invalid_in_row + 1 if record["metrics"].get("invalid") else 0
                bar.update(1)
                best = max(best, record["reward"])
                bar.set_postfix(reward=f"{record['reward']:.3f}", best=f"{best:.3f}")
            self.controller.tell(sample, float(record["reward"]))
            # Saved after every new candidate only: after a kill, the controller replays the
            # duplicates it asked since then from the journal, deterministically (a converged
            # controller asks hundreds of duplicates, and each save is two fsyncs).
            if new:
                atomic_torch_save(self.state_path, self.controller.state_dict())
            if invalid_in_row >= self.max_invalid:
                bar.close()
                raise S2DNASError(
                    f"{invalid_in_row} candidates in a row failed (last: {record['metrics'].get('error')}); "
                    "the search stopped. Check the space options or raise search.max_invalid")
        bar.close()
        atomic_torch_save(self.state_path, self.controller.state_dict())
        if len(self.journal) < self.budget:
            _logger.warning("the controller kept proposing evaluated candidates; stopped after %d asks with %d of "
                            "%d candidates", self.controller.num_asked, len(self.journal), self.budget)
        return self.result()

    def result(self) -> SearchResult:
        """The best architecture in the journal so far."""
        records = self.journal.records()
        valid = [r for r in records if not r["metrics"].get("invalid")]
        if not valid:
            raise S2DNASError("The search evaluated no valid candidate; nothing to return")
        best = max(valid, key=lambda r: r["reward"])
        return SearchResult(Architecture.from_dict(best["architecture"]), float(best["reward"]), records)

    def _evaluate(self, sample: dict[str, int]) -> dict[str, Any]:
        return self.journal.append(self._score_candidate(sample, self.space.from_sample(sample)))

    def _score_candidate(self, sample: dict[str, int], arch: Architecture) -> dict[str, Any]:
        """Score ``arch``; the journal record (without index and time) of the candidate."""
        try:
            result = self.evaluator.evaluate(arch)
            reward, metrics, seconds = result.reward, result.metrics, result.seconds
            if not math.isfinite(reward):
                raise S2DNASError(f"non-finite reward {reward}")
        except S2DNASError as err:  # an invalid candidate is scored, counted and journalled
            _logger.warning("candidate %s failed: %s", sample, err)
            reward, metrics, seconds = REWARD_FOR_INVALID, {"invalid": True, "error": str(err)}, 0.0
        return {"sample": sample, "architecture": arch.to_dict(), "metrics": metrics, "reward": reward,
                "seconds": seconds}


class DistributedSearchStrategy(SearchStrategy):
    """:class:`SearchStrategy` over the ranks of a torchrun job: N ranks score N candidates at a time.

    The controller and the journal live on rank 0. Each round, rank 0 asks ``min(N, budget left)``
    samples; those already in the journal (a resumed round) or repeated within the round are not
    scored again, the others go out, one per rank (a broadcast list). Every rank scores its own
    with its own evaluator, the results come back to rank 0 (all-gather), which appends them to
    the journal in rank order, tells the controller every sample of the round in the order they
    were asked, and saves the controller state. The journal format is :class:`SearchStrategy`'s,
    and so is resume: a round interrupted before the state was saved is asked again identically
    from the saved state, and its journalled candidates keep their recorded reward.

    Every rank constructs the strategy with the same arguments and calls :meth:`run`; only rank
    0's controller and journal are used. Rank 0's errors (a bad controller state, too many failed
    candidates) are raised on every rank. In a single process :meth:`run` is
    :meth:`SearchStrategy.run`.

    The controller sees several pending samples at once (ask N, then tell N): with N ranks an
    :class:`~s2dnas.search.controller.RLController` of ``batch_size=1`` updates after each tell
    of the round, but samples the round from one policy.
    """

    def run(self, *, resume: bool = False) -> SearchResult:
        """Search until ``budget`` candidates are in the journal; return the best (on every rank)."""
        if not dist.is_distributed():
            return super().run(resume=resume)
        info = dist.get_info()
        main = info.is_main
        dist.run_on_main(lambda: self._start(resume))
        done = len(self.journal) if main else 0
        bar = tqdm(total=self.budget, initial=min(done, self.budget), desc="search",
                   disable=not (self.progress and main))
        loop = {"invalid_in_row": 0, "asks": 0, "round": []}
        max_asks = 20 * self.budget + 100  # duplicates cost no budget; bound the loop anyway
        try:
            while True:
                # 1. rank 0 plans the round; 2. every rank scores its sample; 3. rank 0 records
                plan = dist.run_on_main(lambda: self._plan(info.world_size, loop, max_asks))
                if plan is None:
                    break
                mine = plan[info.rank] if info.rank < len(plan) else None
                results = dist.all_gather_object(self._score(mine) if mine is not None else None)
                dist.run_on_main(lambda: self._record(plan, results, loop, bar))
        finally:
            bar.close()
        if main and loop["asks"] >= max_asks:
            _logger.warning("the controller kept proposing evaluated candidates; stopped after %d asks", loop["asks"])
        return dist.run_on_main(self.result)

    def _start(self, resume: bool) -> None:
        from s2dnas.train.checkpoint import load_checkpoint

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.state_path.exists():
            self.controller.load_state_dict(load_checkpoint(self.state_path))

    def _plan(self, world_size: int, loop: dict[str, Any], max_asks: int) -> list[dict[str, int]] | None:
        """Rank 0: ask this round's samples; return those to score (None: the search is over)."""
        left = self.budget - len(self.journal)
        if left <= 0 or loop["asks"] >= max_asks:
            return None
        asked = [self.controller.ask() for _ in range(min(world_size, left, max_asks - loop["asks"]))]
        loop["asks"] += len(asked)
        loop["round"] = asked
        plan, keys = [], set()
        for sample in asked:
            key = sample_key(sample)
            if key not in keys and self.journal.lookup(sample) is None:
                plan.append(sample)
                keys.add(key)
        return plan

    def _score(self, sample: dict[str, int]) -> tuple[str, Any]:
        """Any rank: score one sample; ``("ok", journal record without index/time)`` or ``("error", err)``."""
        try:
            arch = self.space.from_sample(sample)
        except S2DNASError as err:  # sent to rank 0, raised on every rank (as SearchStrategy raises it)
            return "error", err
        return "ok", self._score_candidate(sample, arch)

    def _record(self, plan: list[dict[str, int]], results: list[tuple[str, Any] | None],
                loop: dict[str, Any], bar: Any) -> None:
        """Rank 0: journal the round's results in rank order, tell the controller, save its state."""
        stop_error = None
        for outcome in results[:len(plan)]:
            assert outcome is not None, "every planned sample has a rank"
            status, payload = outcome
            if status == "error":
                raise payload
            record = self.journal.append(payload)  # every scored candidate is kept, even past a stop
            loop["invalid_in_row"] = loop["invalid_in_row"] + 1 if record["metrics"].get("invalid") else 0
            if loop["invalid_in_row"] >= self.max_invalid:
                stop_error = (loop["invalid_in_row"], record["metrics"].get("error"))
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward']:.3f}",
                            best=f"{max(r['reward'] for r in self.journal.records()):.3f}")
        for sample in loop["round"]:  # in the order asked: a resumed round replays exactly
            found = self.journal.lookup(sample)
            assert found is not None, "every sample of the round is journalled"
            self.controller.tell(sample, float(found["reward"]))
        atomic_torch_save(self.state_path, self.controller.state_dict())
        if stop_error is not None:
            raise S2DNASError(
                f"{stop_error[0]} candidates in a row failed (last: {stop_error[1]}); "
                "the search stopped. Check the space options or raise search.max_invalid")
