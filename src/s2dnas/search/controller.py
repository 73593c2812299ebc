"""Search controllers: an ask/tell interface, a REINFORCE controller and a random baseline.

The controller only proposes samples and learns from rewards; building, training and scoring a
candidate is the evaluator's job, and persisting results is the journal's
(:mod:`s2dnas.search.journal`). See :class:`Controller` for the contract.
"""
from __future__ import annotations

import bisect
import copy
import logging
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from s2dnas.errors import CheckpointError, ConfigError
from s2dnas.space.decision import Decision, Sample, check_sample, count_samples, validate_decisions

__all__ = ["Controller", "RLController", "RandomController"]

_logger = logging.getLogger(__name__)

_STATE_FORMAT = 1
_DEFAULT_LR = {"lstm": 3.5e-3, "factorized": 5e-2}


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
                "The search space changed since the state was saved."
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


class RandomController(Controller):
    """Uniform random search, the baseline every learned controller must beat.

    Args:
        decisions: The decisions of the search space.
        seed: Seed of the private generator.
        unique: If true, never hand out a sample twice while unasked samples remain; once the
            space is exhausted it falls back to uniform sampling (with a warning).
    """

    # Above this many samples, draw unique samples by bounded rejection instead of exactly.
    _EXACT_LIMIT = 2**62
    _MAX_ATTEMPTS = 64

    def __init__(
        self, decisions: Sequence[Decision], *, seed: int = 0, unique: bool = False
    ) -> None:
        super().__init__(decisions, seed=seed)
        self._unique = bool(unique)
        self._size = count_samples(self._decisions)
        self._seen: list[int] = []  # sorted mixed-radix codes of the samples asked so far
        self._seen_set: set[int] = set()
        self._warned_exhausted = False

    def _sample(self) -> Sample:
        if not self._unique:
            return self._uniform()
        if len(self._seen_set) >= self._size:
            if not self._warned_exhausted:
                _logger.warning(
                    "All %d samples of the space were asked; sampling with repeats from now on.",
                    self._size,
                )
                self._warned_exhausted = True
            return self._uniform()
        if self._size <= self._EXACT_LIMIT:
            # Exact: draw the r-th not-yet-asked code, uniform over the unseen samples.
            rank = int(
                torch.randint(self._size - len(self._seen), (1,), generator=self._generator)
            )
            for code in self._seen:  # ascending; each seen code at or below shifts the rank
                if code <= rank:
                    rank += 1
                else:
                    break
            code = rank
        else:
            # Huge space: a collision is astronomically unlikely, but stay bounded anyway.
            for _ in range(self._MAX_ATTEMPTS):
                code = self._to_code(self._uniform())
                if code not in self._seen_set:
                    break
            else:
                _logger.warning(
                    "No unseen sample after %d attempts; returning a repeat.", self._MAX_ATTEMPTS
                )
        self._remember(code)
        return self._from_code(code)

    def _uniform(self) -> Sample:
        return {
            d.name: int(torch.randint(d.size, (1,), generator=self._generator))
            for d in self._decisions
        }

    def _remember(self, code: int) -> None:
        if code not in self._seen_set:
            self._seen_set.add(code)
            bisect.insort(self._seen, code)

    def _to_code(self, sample: Sample) -> int:
        code = 0
        for d in self._decisions:  # first decision is the most significant digit
            code = code * d.size + sample[d.name]
        return code

    def _from_code(self, code: int) -> Sample:
        indices: list[int] = []
        for d in reversed(self._decisions):
            code, index = divmod(code, d.size)
            indices.append(index)
        return {d.name: i for d, i in zip(self._decisions, reversed(indices))}

    def _extra_state(self) -> dict[str, Any]:
        # Store samples, not codes: codes of huge spaces can exceed 64 bits.
        return {
            "unique": self._unique,
            "seen": [self._encode(self._from_code(c)) for c in self._seen],
        }

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        try:
            seen = [self._to_code(self._decode(s)) for s in extra["seen"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"Malformed RandomController state: {exc!r}.") from exc
        self._unique = bool(extra.get("unique", self._unique))
        self._seen_set = set(seen)
        self._seen = sorted(self._seen_set)


class _FactorizedPolicy(nn.Module):
    """Independent categorical logits per decision."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes])

    def step_logits(self, index: int, state: Any, previous: int | None) -> tuple[torch.Tensor, Any]:
        return self.logits[index], state

    def initial_state(self) -> Any:
        return None


class _LSTMPolicy(nn.Module):
    """ENAS-style controller: an LSTM cell emits the decisions in turn.

    The embedding of each choice is fed back as the next input; the first input is a learned
    start vector. One linear head and one embedding table per decision.
    """

    def __init__(self, sizes: Sequence[int], hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.cell = nn.LSTMCell(hidden_size, hidden_size)
        self.heads = nn.ModuleList([nn.Linear(hidden_size, n) for n in sizes])
        # The last decision's choice is never fed back, so it needs no embedding.
        self.embeddings = nn.ModuleList([nn.Embedding(n, hidden_size) for n in sizes[:-1]])

    def initial_state(self) -> Any:
        zeros = self.start.new_zeros(1, self.hidden_size)
        return (self.start, (zeros, zeros))

    def step_logits(self, index: int, state: Any, previous: int | None) -> tuple[torch.Tensor, Any]:
        inputs, hidden = state
        if previous is not None:  # embedding of the previous decision's choice
            token = torch.tensor([previous], device=self.start.device)
            inputs = self.embeddings[index - 1](token)  # (1, H)
        h, c = self.cell(inputs, hidden)  # (1, H) each
        return self.heads[index](h).squeeze(0), (inputs, (h, c))  # logits: (n,)


class RLController(Controller):
    """REINFORCE controller with a moving-average baseline and an entropy bonus.

    Follows ENAS (Pham et al., 2018): ``kind="lstm"`` emits the
    decisions in turn from an LSTM cell, feeding back the embedding of each choice;
    ``kind="factorized"`` keeps independent logits per decision (starting uniform).

    Every ``batch_size`` tells, the policy takes one Adam step on
    ``-mean((reward - baseline) * log_prob(sample)) - entropy_weight * mean(entropy)``, with
    the gradient norm clipped to ``grad_clip``. The log-probability is recomputed from the stored
    sample under the current parameters (no graph is kept between ask and tell, which keeps the
    state serialisable). The baseline is an exponential moving average of the rewards,
    initialised with the first reward; the advantage uses the baseline from *before* the batch.

    Args:
        decisions: The decisions of the search space.
        kind: ``"lstm"`` or ``"factorized"``.
        hidden_size: LSTM hidden and embedding size (``"lstm"`` only).
        lr: Adam learning rate; ``None`` picks 3.5e-3 for ``"lstm"`` and 5e-2 for
            ``"factorized"`` (raw logits need larger steps than a network whose many weights
            all move the output).
        baseline_decay: Decay of the moving-average baseline, in [0, 1).
        entropy_weight: Weight of the entropy bonus (>= 0).
        batch_size: Number of tells per policy update.
        temperature: Logits are divided by it before sampling (> 0).
        tanh_constant: If set, logits become ``tanh_constant * tanh(logits)``, bounding how
            peaked a decision can get (ENAS uses 2.5).
        grad_clip: Maximum gradient norm (> 0).
        seed: Seed of the parameter initialisation and of sampling.
        device: Device of the policy network.

    Raises:
        ConfigError: Listing every invalid argument, or invalid decisions.
    """

    def __init__(
        self,
        decisions: Sequence[Decision],
        *,
        kind: Literal["lstm", "factorized"] = "lstm",
        hidden_size: int = 64,
        lr: float | None = None,
        baseline_decay: float = 0.9,
        entropy_weight: float = 1e-3,
        batch_size: int = 1,
        temperature: float = 1.0,
        tanh_constant: float | None = None,
        grad_clip: float = 5.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        problems: list[str] = []
        if kind not in ("lstm", "factorized"):
            problems.append(f"`kind` must be 'lstm' or 'factorized', got {kind!r}")
        if not (isinstance(hidden_size, int) and hidden_size >= 1):
            problems.append(f"`hidden_size` must be an int >= 1, got {hidden_size!r}")
        if lr is None:
            lr = _DEFAULT_LR.get(kind, 3.5e-3)
        if not _positive(lr):
            problems.append(f"`lr` must be > 0, got {lr!r}")
        if not (_number(baseline_decay) and 0.0 <= baseline_decay < 1.0):
            problems.append(f"`baseline_decay` must be in [0, 1), got {baseline_decay!r}")
        if not (_number(entropy_weight) and entropy_weight >= 0.0):
            problems.append(f"`entropy_weight` must be >= 0, got {entropy_weight!r}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            problems.append(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        if not _positive(temperature):
            problems.append(f"`temperature` must be > 0, got {temperature!r}")
        if tanh_constant is not None and not _positive(tanh_constant):
            problems.append(f"`tanh_constant` must be None or > 0, got {tanh_constant!r}")
        if not _positive(grad_clip):
            problems.append(f"`grad_clip` must be > 0, got {grad_clip!r}")
        if problems:
            raise ConfigError("Invalid RLController arguments: " + "; ".join(problems) + ".")
        super().__init__(decisions, seed=seed, device=device)

        self.kind = kind
        self.hidden_size = hidden_size
        self.lr = float(lr)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.batch_size = batch_size
        self.temperature = float(temperature)
        self.tanh_constant = None if tanh_constant is None else float(tanh_constant)
        self.grad_clip = float(grad_clip)

        sizes = [d.size for d in self._decisions]
        policy: nn.Module
        if kind == "lstm":
            # nn layers draw their default init from the global RNG: fork it so building a
            # controller leaves the caller's random stream untouched.
            with torch.random.fork_rng(devices=[]):
                policy = _LSTMPolicy(sizes, hidden_size)
            # ENAS initialises the controller uniformly in [-0.1, 0.1]; draw it from our
            # generator so the initial policy depends on ``seed`` only.
            with torch.no_grad():
                for param in policy.parameters():
                    param.uniform_(-0.1, 0.1, generator=self._generator)
        else:
            policy = _FactorizedPolicy(sizes)  # zero logits: the search starts uniform
        self._policy = policy.to(self._device)
        self._optimizer = torch.optim.Adam(self._policy.parameters(), lr=self.lr)
        self._baseline: float | None = None
        self._buffer: list[tuple[Sample, float]] = []
        self._num_updates = 0

    @property
    def baseline(self) -> float | None:
        """Current moving-average baseline, or ``None`` before the first update."""
        return self._baseline

    @property
    def num_updates(self) -> int:
        """Number of policy updates done."""
        return self._num_updates

    @property
    def policy(self) -> nn.Module:
        """The policy network (read it, e.g. for logging; do not replace it)."""
        return self._policy

    @torch.no_grad()
    def probabilities(self, sample: Mapping[str, int] | None = None) -> dict[str, list[float]]:
        """Return the choice probabilities of every decision.

        For ``"lstm"`` they depend on the earlier choices; pass ``sample`` to condition on its
        choices, otherwise the most likely choice of each earlier decision is used.

        Args:
            sample: Optional sample to condition on.

        Returns:
            Decision name -> list of probabilities.
        """
        actions = None if sample is None else self._encode(self._normalise(sample))
        result: dict[str, list[float]] = {}
        state = self._policy.initial_state()
        previous: int | None = None
        for index, decision in enumerate(self._decisions):
            logits, state = self._policy.step_logits(index, state, previous)
            probs = F.softmax(self._shape(logits), dim=-1)
            result[decision.name] = [float(p) for p in probs]
            previous = int(probs.argmax()) if actions is None else actions[index]
        return result

    # ------------------------------------------------------------------ hooks

    def _sample(self) -> Sample:
        with torch.no_grad():
            actions, _, _ = self._run(None)
        return {d.name: a for d, a in zip(self._decisions, actions)}

    def _observe(self, sample: Sample, reward: float) -> None:
        self._buffer.append((sample, reward))
        if len(self._buffer) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        rewards = [reward for _, reward in self._buffer]
        if self._baseline is None:
            self._baseline = rewards[0]
        baseline = self._baseline

        self._policy.train()
        self._optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self._device)
        for sample, reward in self._buffer:
            _, log_prob, entropy = self._run(self._encode(sample))
            loss = loss - (reward - baseline) * log_prob - self.entropy_weight * entropy
        loss = loss / len(self._buffer)
        loss.backward()
        nn.utils.clip_grad_norm_(self._policy.parameters(), self.grad_clip)
        self._optimizer.step()

        for reward in rewards:
            self._baseline = self.baseline_decay * self._baseline + (1.0 - self.baseline_decay) * reward
        self._buffer.clear()
        self._num_updates += 1

    def _run(self, actions: list[int] | None) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Sample (``actions=None``) or score given actions; return actions, log-prob, entropy."""
        chosen: list[int] = []
        log_prob = torch.zeros((), device=self._device)
        entropy = torch.zeros((), device=self._device)
        state = self._policy.initial_state()
        previous: int | None = None
        for index in range(len(self._decisions)):
            logits, state = self._policy.step_logits(index, state, previous)
            log_probs = F.log_softmax(self._shape(logits), dim=-1)  # (n,)
            if actions is None:
                action = int(
                    torch.multinomial(log_probs.exp(), 1, generator=self._generator).item()
                )
            else:
                action = actions[index]
            log_prob = log_prob + log_probs[action]
            entropy = entropy - (log_probs.exp() * log_probs).sum()
            chosen.append(action)
            previous = action
        return chosen, log_prob, entropy

    def _shape(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _extra_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "hidden_size": self.hidden_size,
            "policy": dict(self._policy.state_dict()),
            "optimizer": self._optimizer.state_dict(),
            "baseline": self._baseline,
            "buffer": [[self._encode(s), r] for s, r in self._buffer],
            "num_updates": self._num_updates,
        }

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        if extra.get("kind") != self.kind or (
            self.kind == "lstm" and extra.get("hidden_size") != self.hidden_size
        ):
            raise CheckpointError(
                f"Expected an RLController state with kind={self.kind!r}, "
                f"hidden_size={self.hidden_size}, but got kind={extra.get('kind')!r}, "
                f"hidden_size={extra.get('hidden_size')!r}. Build the controller as it was saved."
            )
        try:
            self._policy.load_state_dict(extra["policy"])
            self._optimizer.load_state_dict(extra["optimizer"])
            buffer = [(self._decode(s), float(r)) for s, r in extra["buffer"]]
            baseline = None if extra["baseline"] is None else float(extra["baseline"])
            num_updates = int(extra["num_updates"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"Malformed RLController state: {exc!r}.") from exc
        self._buffer = buffer
        self._baseline = baseline
        self._num_updates = num_updates


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0
