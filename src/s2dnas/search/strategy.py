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

from s2dnas._io import atomic_torch_save
from s2dnas.errors import S2DNASError
from s2dnas.search.controller import Controller
from s2dnas.search.evaluator import Evaluator
from s2dnas.search.journal import Journal
from s2dnas.space import Architecture, Space

__all__ = ["SearchResult", "SearchStrategy", "REWARD_FOR_INVALID"]

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
        done = len(self.journal.records())
        bar = tqdm(total=self.budget, initial=min(done, self.budget), desc="search", disable=not self.progress)
        invalid_in_row = 0
        max_asks = 20 * self.budget + 100  # duplicates cost no budget; bound the loop anyway
        asks = 0
        while len(self.journal.records()) < self.budget and asks < max_asks:
            asks += 1
            sample = self.controller.ask()
            record = self.journal.lookup(sample)
            if record is None:
                record = self._evaluate(sample)
                invalid_in_row = invalid_in_row + 1 if record["metrics"].get("invalid") else 0
                bar.update(1)
                best = max(r["reward"] for r in self.journal.records())
                bar.set_postfix(reward=f"{record['reward']:.3f}", best=f"{best:.3f}")
            self.controller.tell(sample, float(record["reward"]))
            atomic_torch_save(self.state_path, self.controller.state_dict())
            if invalid_in_row >= self.max_invalid:
                bar.close()
                raise S2DNASError(
                    f"{invalid_in_row} candidates in a row failed (last: {record['metrics'].get('error')}); "
                    "the search stopped. Check the space options or raise search.max_invalid")
        bar.close()
        if asks >= max_asks:
            _logger.warning("the controller kept proposing evaluated candidates; stopped after %d asks", asks)
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
        arch = self.space.from_sample(sample)
        try:
            result = self.evaluator.evaluate(arch)
            reward, metrics, seconds = result.reward, result.metrics, result.seconds
            if not math.isfinite(reward):
                raise S2DNASError(f"non-finite reward {reward}")
        except S2DNASError as err:  # an invalid candidate is scored, counted and journalled
            _logger.warning("candidate %s failed: %s", sample, err)
            reward, metrics, seconds = REWARD_FOR_INVALID, {"invalid": True, "error": str(err)}, 0.0
        return self.journal.append({"sample": sample, "architecture": arch.to_dict(), "metrics": metrics,
                                    "reward": reward, "seconds": seconds})
