"""The controller contract: ask/tell, state for resume (:class:`Controller`).

The two controllers live beside it: :mod:`s2dnas.search.random` (the baseline) and
:mod:`s2dnas.search.rl` (REINFORCE over the policies of :mod:`s2dnas.search.policies`).

The controller only proposes samples and learns from rewards; building, training and scoring a
candidate is the evaluator's job, and persisting results is the journal's
(:mod:`s2dnas.search.journal`). See :class:`Controller` for the contract.
"""
from __future__ import annotations

import copy
import logging
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from s2dnas.errors import CheckpointError, ConfigError
from s2dnas.space.decision import Decision, Sample, check_sample, validate_decisions

__all__ = ["Controller"]

_logger = logging.getLogger(__name__)

_STATE_FORMAT = 1


class Controller:
    """Base class of search controllers, driven by ask/tell.

    Design:
        * :meth:`ask` returns a new *sample* (decision name -> choice index) and remembers it as
          pending; :meth:`tell` gives the reward of a pending sample. Several samples may be
          pending at once (e.g. evaluated in parallel) and may be told in any order; telling a
          sample that was never handed out, or telling it twice, raises ``ValueError``.
        * Invalid or failed candidates are the caller's business: tell them a low reward (the
          strategy's ``reward_for_invalid``) so the controller learns to avoid them.
        * All randomness comes from one private ``torch.Generator`` seeded from ``seed``; the
          global RNG is never touched, so the same seed and rewards give the same samples.
        * :meth:`state_dict` holds everything needed to resume exactly (generator state,
          pending samples, best so far, and the subclass's own state such as network weights,
          optimizer state and baseline). It contains only tensors, numbers, strings, ``None``,
          lists and dicts, so ``torch.load(..., weights_only=True)`` can read it back.

        Subclasses implement :meth:`_sample` and :meth:`_observe`, and extend the state through
        :meth:`_extra_state` / :meth:`_load_extra_state`.

    Example:
        >>> from s2dnas.search import Decision, RandomController
        >>> decisions = [Decision("ratio", (0.25, 0.5)), Decision("concat", (1, 2, 3))]
        >>> controller = RandomController(decisions, seed=0)
        >>> sample = controller.ask()
        >>> sorted(sample)
        ['concat', 'ratio']
        >>> controller.tell(sample, 0.7)
        >>> controller.best() == (sample, 0.7)
        True
        >>> resumed = RandomController(decisions, seed=123)
        >>> resumed.load_state_dict(controller.state_dict())
        >>> resumed.ask() == controller.ask()
        True

    Args:
        decisions: The decisions of the search space, in emission order.
        seed: Seed of the controller's private generator.
        device: Device of the generator (and of the subclass's network, if any).

    Raises:
        ConfigError: If ``decisions`` is empty, has a decision without choices, or repeats a
            name.
    """

    def __init__(
        self,
        decisions: Sequence[Decision],
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self._decisions = validate_decisions(decisions)
        try:
            self._seed = operator.index(seed)
        except TypeError:
            raise ConfigError(f"Expected `seed` to be an int, but got {seed!r}.") from None
        self._device = torch.device(device)
        self._generator = torch.Generator(device=self._device)
        self._generator.manual_seed(self._seed)
        self._pending: list[Sample] = []
        self._best: tuple[Sample, float] | None = None
        self._num_asked = 0
        self._num_told = 0

    # ------------------------------------------------------------------ public interface

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The decisions this controller samples, in emission order."""
        return self._decisions

    @property
    def num_asked(self) -> int:
        """Number of samples handed out by :meth:`ask`."""
        return self._num_asked

    @property
    def num_told(self) -> int:
        """Number of rewards received by :meth:`tell`."""
        return self._num_told

    @property
    def pending(self) -> list[Sample]:
        """Copies of the samples asked but not yet told, oldest first."""
        return [dict(s) for s in self._pending]

    def ask(self) -> Sample:
        """Return a new sample and remember it as pending.

        Returns:
            A dict from decision name to choice index.
        """
        sample = self._sample()
        assert check_sample(self._decisions, sample) is None, check_sample(self._decisions, sample)
        self._pending.append(dict(sample))
        self._num_asked += 1
        return dict(sample)

    def tell(self, sample: Mapping[str, int], reward: float) -> None:
        """Record the reward of a sample previously returned by :meth:`ask`.

        Args:
            sample: The sample, as returned by :meth:`ask` (key order does not matter).
            reward: Its reward; higher is better. Must be finite.

        Raises:
            ValueError: If ``sample`` is not pending (never asked, or already told), or
                ``reward`` is not a finite number.
        """
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise ValueError(f"Expected `reward` to be a number, but got {reward!r}.") from None
        if not math.isfinite(reward):
            raise ValueError(
                f"Expected `reward` to be finite, but got {reward}. Give failed candidates a "
                "finite low reward (reward_for_invalid) instead."
            )
        normalised = self._normalise(sample)
        try:
            position = self._pending.index(normalised)
        except ValueError:
            raise ValueError(
                f"Expected a sample returned by ask() and not told yet, but got {dict(sample)!r} "
                f"({len(self._pending)} sample(s) pending). Tell each asked sample exactly once."
            ) from None
        del self._pending[position]
        self._num_told += 1
        if self._best is None or reward > self._best[1]:
            self._best = (dict(normalised), reward)
        self._observe(normalised, reward)

    def best(self) -> tuple[Sample, float] | None:
        """Return the best ``(sample, reward)`` told so far, or ``None`` before the first tell.

        Ties keep the earliest sample.
        """
        if self._best is None:
            return None
        return dict(self._best[0]), self._best[1]

    def state_dict(self) -> dict[str, Any]:
        """Return a deep copy of everything needed to resume this controller exactly.

        Returns:
            A dict of tensors, numbers, strings, ``None``, lists and dicts (loadable with
            ``torch.load(..., weights_only=True)``).
        """
        state: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "controller": type(self).__name__,
            "decisions": [[d.name, d.size] for d in self._decisions],
            "seed": self._seed,
            "generator": self._generator.get_state(),
            "pending": [self._encode(s) for s in self._pending],
            "best_sample": None if self._best is None else self._encode(self._best[0]),
            "best_reward": None if self._best is None else self._best[1],
            "num_asked": self._num_asked,
            "num_told": self._num_told,
            "extra": self._extra_state(),
        }
        return copy.deepcopy(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`.

        Args:
            state: The state, e.g. from ``torch.load(path, weights_only=True)``.

        Raises:
            CheckpointError: If the state is malformed, from another controller class, or for
                other decisions.
        """
        if not isinstance(state, Mapping) or "format" not in state:
            raise CheckpointError(
                f"Expected a controller state dict, but got {type(state).__name__} without "
                "a 'format' key."
            )
        if state["format"] != _STATE_FORMAT:
            raise CheckpointError(
                f"Expected controller state format {_STATE_FORMAT}, but got {state['format']!r}."
            )
        if state.get("controller") != type(self).__name__:
            raise CheckpointError(
                f"Expected a state of {type(self).__name__}, but got one of "
                f"{state.get('controller')!r}. Resume with the same controller."
            )
        expected = [[d.name, d.size] for d in self._decisions]
        got = [list(item) for item in state.get("decisions", [])]
        if got != expected:
            raise CheckpointError(
                f"Expected a state for decisions {expected}, but got one for {got}. "
                "The search space changed since the state was saved (another model, space option or "
                "s2dnas version); start the search over in another directory (or with --force)."
            )
        state = copy.deepcopy(dict(state))
        try:
            generator_state = state["generator"]
            seed = int(state["seed"])
            pending = [self._decode(s) for s in state["pending"]]
            best = (
                None
                if state["best_sample"] is None
                else (self._decode(state["best_sample"]), float(state["best_reward"]))
            )
            num_asked = int(state["num_asked"])
            num_told = int(state["num_told"])
            extra = state["extra"]
            torch.Generator(device=self._device).set_state(generator_state)  # validate only
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"Malformed controller state: {exc!r}.") from exc
        backup = copy.deepcopy(self._extra_state())  # module state shares storage with params
        try:
            self._load_extra_state(extra)
        except BaseException:
            self._load_extra_state(backup)  # leave the controller as it was
            raise
        self._generator.set_state(generator_state)
        self._seed = seed
        self._pending = pending
        self._best = best
        self._num_asked = num_asked
        self._num_told = num_told

    # ------------------------------------------------------------------ subclass hooks

    def _sample(self) -> Sample:
        """Draw a new sample (subclasses must implement)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _sample()")

    def _observe(self, sample: Sample, reward: float) -> None:
        """Learn from a told reward (default: nothing)."""

    def _extra_state(self) -> dict[str, Any]:
        """Return the subclass's part of :meth:`state_dict` (weights-only types)."""
        return {}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        """Restore the subclass's part of the state."""

    # ------------------------------------------------------------------ helpers

    def _normalise(self, sample: Mapping[str, int]) -> Sample:
        """Return ``sample`` as a plain dict in decision order, or raise ``ValueError``."""
        error = check_sample(self._decisions, sample)
        if error is not None:
            raise ValueError(
                f"Expected a sample returned by ask(), but got {sample!r}: {error}"
            )
        return {d.name: operator.index(sample[d.name]) for d in self._decisions}

    def _encode(self, sample: Mapping[str, int]) -> list[int]:
        """Return the choice indices of ``sample`` in decision order."""
        return [int(sample[d.name]) for d in self._decisions]

    def _decode(self, indices: Sequence[int]) -> Sample:
        """Inverse of :meth:`_encode`; raises ``ValueError`` on a malformed list."""
        if len(indices) != len(self._decisions):
            raise ValueError(f"expected {len(self._decisions)} choice indices, got {indices!r}")
        sample = {d.name: int(i) for d, i in zip(self._decisions, indices)}
        error = check_sample(self._decisions, sample)
        if error is not None:
            raise ValueError(error)
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(decisions={len(self._decisions)}, "
            f"asked={self._num_asked}, told={self._num_told})"
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0
