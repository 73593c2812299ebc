"""The search loop: ask the controller, score, journal, tell; resumable at any moment.

One loop serves one process and a torchrun job alike: each round rank 0 asks ``N`` samples
(``N`` = the number of processes, 1 without torchrun), every rank scores one of them, and rank 0
journals the results, tells the controller and saves its state. In a single process every
collective is a no-op and a round is one candidate.

Resume (METHOD.md "Search": nothing is lost): after every round with a new candidate the journal
lines are appended (fsync) and then the controller state is saved atomically. A controller is
deterministic given its state, so after a kill it asks again for the samples it asked since its
last saved state; those already in the journal get their recorded reward instead of being scored
again. The budget counts distinct journalled samples, so a resumed search evaluates exactly what
is missing. The journal records carry the hash of the configuration that produced them
(``config_hash``); a resume with another one is refused.

The loop ends when the budget is reached, when the space has no unscored architecture left
(a budget larger than the space: :attr:`SearchResult.exhausted`), after ``max_invalid`` failed
candidates in a row (an error), or, as a safety net, after ``20 x budget + 100`` asks of a
controller that keeps proposing scored samples.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from s2dnas import distributed as dist
from s2dnas._io import atomic_torch_save
from s2dnas.errors import CheckpointError, S2DNASError
from s2dnas.search.controller import Controller
from s2dnas.search.evaluator import Evaluator
from s2dnas.search.journal import Journal, sample_key
from s2dnas.space import Architecture, Space
from s2dnas.space.decision import count_samples

__all__ = ["SearchResult", "SearchStrategy", "REWARD_FOR_INVALID", "check_journal_space"]

_logger = logging.getLogger(__name__)

REWARD_FOR_INVALID = -2.0  # below every reward (infeasible macs_saving rewards are >= -1)


def check_journal_space(journal: Journal, space: Space) -> None:
    """Refuse a journal whose samples pick other architectures in ``space`` than they picked when written.

    A sample is a choice index per decision; if the space's choices changed since (another space,
    or a version of s2dnas that offers other choices), the recorded rewards belong to other networks.

    Raises:
        CheckpointError: naming the first such record.
    """
    for record in journal.records():
        try:
            now = space.from_sample(record["sample"]).to_dict()
        except S2DNASError:
            now = None
        if now != record["architecture"]:
            raise CheckpointError(
                f"{journal.path}: record {record.get('index', '?')} was written for another search space (its sample "
                f"{record['sample']} picks {now and now['splits']}/{now and now['concat']} here, but recorded "
                f"{record['architecture']['splits']}/{record['architecture']['concat']}: the space's choices changed); "
                "start this search over in another directory (or with --force)")


@dataclass(frozen=True)
class SearchResult:
    """The best architecture found and every journal record.

    ``exhausted`` is True when the search stopped because every architecture of the space was
    scored before the budget was reached.
    """

    best: Architecture
    best_reward: float
    records: list[dict[str, Any]]
    exhausted: bool = False


@dataclass
class _Loop:
    """Rank 0's bookkeeping across the rounds of one :meth:`SearchStrategy.run`."""

    invalid_in_row: int = 0
    asked: list[dict[str, int]] = field(default_factory=list)  # this round's samples, in the order asked
    exhausted: bool = False
    stuck: bool = False


class SearchStrategy:
    """Drives a controller over a space with an evaluator, journalling every candidate.

    Under torchrun every rank constructs it with the same arguments and calls :meth:`run`; the
    controller and the journal of rank 0 are used, each rank scores its own candidate with its
    own evaluator, and rank 0's errors (a bad controller state, too many failed candidates) are
    raised on every rank. With N ranks an :class:`~s2dnas.search.controller.RLController` of
    ``batch_size=1`` updates after each tell of a round, but samples the round from one policy.

    Args:
        space: the space (turns samples into architectures).
        evaluator: scores an architecture.
        controller: proposes samples (RL or random).
        budget: number of distinct candidates to evaluate (at most the size of the space).
        run_dir: where ``journal.jsonl`` and ``controller.pt`` live.
        max_invalid: stop after this many failed candidates in a row.
        progress: show a progress bar (rank 0).
        provenance: keys added to every journal record (:func:`s2dnas.config.provenance`: the
            config hash and the s2dnas version); a resume whose ``config_hash`` differs from the
            journal's is refused.
    """

    def __init__(self, space: Space, evaluator: Evaluator, controller: Controller, *, budget: int,
                 run_dir: str | Path, max_invalid: int = 5, progress: bool = True,
                 provenance: Mapping[str, str] | None = None) -> None:
        self.space = space
        self.evaluator = evaluator
        self.controller = controller
        self.budget = budget
        self.run_dir = Path(run_dir)
        self.max_invalid = max_invalid
        self.progress = progress
        self.provenance = dict(provenance or {})
        self.journal = Journal(self.run_dir / "journal.jsonl")
        self.state_path = self.run_dir / "controller.pt"
        self.space_size = count_samples(space.decisions)
        # Duplicates cost no budget; bound the loop anyway. The bound counts the controller's own
        # asks (restored from its state), so a resumed search stops exactly where an
        # uninterrupted one would.
        self.max_asks = 20 * budget + 100

    def run(self, *, resume: bool = False) -> SearchResult:
        """Search until ``budget`` candidates are in the journal (or the space is exhausted); return the best."""
        info = dist.get_info()
        dist.run_on_main(lambda: self._start(resume))
        done = self.journal.num_samples if info.is_main else 0
        bar = tqdm(total=self.budget, initial=min(done, self.budget), desc="search",
                   disable=not (self.progress and info.is_main))
        loop = _Loop()
        try:
            while True:
                # 1. rank 0 plans the round; 2. every rank scores its sample; 3. rank 0 records
                plan = dist.run_on_main(lambda: self._plan(info.world_size, loop))
                if plan is None:
                    break
                mine = plan[info.rank] if info.rank < len(plan) else None
                results = dist.all_gather_object(self._score(mine) if mine is not None else None)
                dist.run_on_main(lambda: self._record(plan, results, loop, bar))
        finally:
            bar.close()
        return dist.run_on_main(lambda: self._finish(loop))

    def result(self) -> SearchResult:
        """The best architecture in the journal so far."""
        records = self.journal.records()
        valid = [r for r in records if not r["metrics"].get("invalid")]
        if not valid:
            raise S2DNASError("The search evaluated no valid candidate; nothing to return")
        best = max(valid, key=lambda r: r["reward"])
        return SearchResult(Architecture.from_dict(best["architecture"]), float(best["reward"]), records)

    # -- rank 0 ------------------------------------------------------------------------------------
    def _start(self, resume: bool) -> None:
        """Rank 0: check the journal's configuration, restore the controller."""
        from s2dnas.train.checkpoint import load_checkpoint

        mine = self.provenance.get("config_hash")
        if mine is not None and (theirs := self.journal.foreign_config_hashes(mine)):
            raise CheckpointError(
                f"{self.journal.path} was written by another configuration (config hash {', '.join(theirs)}, this "
                f"search's {mine}); resume with the config that started it, or start over in another directory")
        check_journal_space(self.journal, self.space)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.state_path.exists():
            self.controller.load_state_dict(load_checkpoint(self.state_path))

    def _plan(self, world_size: int, loop: _Loop) -> list[dict[str, int]] | None:
        """Rank 0: ask this round's samples; return those to score (None: the search is over)."""
        scored = self.journal.num_samples
        if scored >= self.space_size and scored < self.budget:
            loop.exhausted = True
            return None
        left = self.budget - scored
        if left <= 0:
            return None
        room = self.max_asks - self.controller.num_asked
        if room <= 0:
            loop.stuck = True
            return None
        loop.asked = [self.controller.ask() for _ in range(min(world_size, left, room))]
        plan, keys = [], set()
        for sample in loop.asked:
            key = sample_key(sample)
            if key not in keys and self.journal.lookup(sample) is None:
                plan.append(sample)
                keys.add(key)
        return plan

    def _record(self, plan: list[dict[str, int]], results: list[tuple[str, Any] | None], loop: _Loop,
                bar: Any) -> None:
        """Rank 0: journal the round's results in rank order, tell the controller, save its state."""
        stop_error = None
        for outcome in results[:len(plan)]:
            assert outcome is not None, "every planned sample has a rank"
            status, payload = outcome
            if status == "error":
                raise payload
            record = self.journal.append({**payload, **self.provenance})  # kept even past a stop
            loop.invalid_in_row = loop.invalid_in_row + 1 if record["metrics"].get("invalid") else 0
            if loop.invalid_in_row >= self.max_invalid:
                stop_error = (loop.invalid_in_row, record["metrics"].get("error"))
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward']:.3f}",
                            best=f"{max(r['reward'] for r in self.journal.records()):.3f}")
        for sample in loop.asked:  # in the order asked: a resumed round replays exactly
            found = self.journal.lookup(sample)
            assert found is not None, "every sample of the round is journalled"
            self.controller.tell(sample, float(found["reward"]))
        # Saved after rounds with a new candidate only: after a kill, the controller replays the
        # duplicates it asked since then from the journal, deterministically (a converged
        # controller asks hundreds of duplicates, and each save is two fsyncs).
        if plan:
            atomic_torch_save(self.state_path, self.controller.state_dict())
        if stop_error is not None:
            raise S2DNASError(
                f"{stop_error[0]} candidates in a row failed (last: {stop_error[1]}); "
                "the search stopped. Check the space options or raise search.max_invalid")

    def _finish(self, loop: _Loop) -> SearchResult:
        """Rank 0: save the controller, say why the loop stopped early, return the best."""
        atomic_torch_save(self.state_path, self.controller.state_dict())
        if loop.exhausted:
            _logger.warning("the space has only %d architectures and every one was scored; the search stopped "
                            "before its budget of %d", self.space_size, self.budget)
        elif loop.stuck:
            _logger.warning("the controller kept proposing evaluated candidates; stopped after %d asks with %d of "
                            "%d candidates", self.controller.num_asked, self.journal.num_samples, self.budget)
        result = self.result()
        return SearchResult(result.best, result.best_reward, result.records, exhausted=loop.exhausted)

    # -- every rank --------------------------------------------------------------------------------
    def _score(self, sample: dict[str, int]) -> tuple[str, Any]:
        """Score one sample; ``("ok", journal record without index/time)`` or ``("error", err)``."""
        try:
            arch = self.space.from_sample(sample)
        except S2DNASError as err:  # sent to rank 0, raised on every rank
            return "error", err
        return "ok", self._score_candidate(sample, arch)

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
