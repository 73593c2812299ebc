"""REINFORCE controller (ENAS-style): samples from a policy, learns from the rewards with a moving baseline."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from s2dnas.errors import CheckpointError, ConfigError
from s2dnas.search.controller import Controller, _number, _positive
from s2dnas.search.policies import FactorizedPolicy, LSTMPolicy
from s2dnas.space.decision import Decision, Sample

__all__ = ["RLController"]

_logger = logging.getLogger(__name__)

_DEFAULT_LR = {"lstm": 3.5e-3, "factorized": 5e-2}
_MIN_SPREAD = 1e-12  # floor of the advantages' running mean square (normalize_advantage)


class RLController(Controller):
    """REINFORCE controller with a moving-average baseline and an entropy bonus.

    Follows ENAS (Pham et al., 2018): ``kind="lstm"`` emits the
    decisions in turn from an LSTM cell, feeding back the embedding of each choice;
    ``kind="factorized"`` keeps independent logits per decision (starting uniform).

    Every ``batch_size`` tells, the policy takes one Adam step on
    ``-mean(advantage * log_prob(sample)) - entropy_weight * mean(entropy)``, with
    ``advantage = reward - baseline`` (divided by the rewards' running spread around the
    baseline when ``normalize_advantage``), the gradient norm clipped to ``grad_clip``. The
    log-probability is recomputed from the stored
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
        baseline_decay: Decay of the moving-average baseline (once per reward) and of the
            spread (once per update), in [0, 1).
        normalize_advantage: Divide advantages by the square root of a moving average of the
            squared advantages (this batch's included; it starts at the first batch whose
            advantages are not all 0, and is floored at ``1e-12`` so that advantages of
            rounding size, below ~1e-6, are not blown up), so that the entropy bonus weighs the
            same against them whatever the reward's units: accuracy gaps of ~0.01 below the
            target, MAC savings of ~4 above it. Without it, gaps that small leave the entropy
            bonus holding the policy near uniform (benchmarks/controller_study.py).
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
        normalize_advantage: bool = False,
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
        self.normalize_advantage = bool(normalize_advantage)
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
                policy = LSTMPolicy(sizes, hidden_size)
            # ENAS initialises the controller uniformly in [-0.1, 0.1]; draw it from our
            # generator so the initial policy depends on ``seed`` only.
            with torch.no_grad():
                for param in policy.parameters():
                    param.uniform_(-0.1, 0.1, generator=self._generator)
        else:
            policy = FactorizedPolicy(sizes)  # zero logits: the search starts uniform
        self._policy = policy.to(self._device)
        self._optimizer = torch.optim.Adam(self._policy.parameters(), lr=self.lr)
        self._baseline: float | None = None
        self._spread: float | None = None  # moving average of squared advantages
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
        # the spread includes this batch, so the first informative advantage is scaled too; it
        # starts at the first non-zero mean square (with batch_size 1 the first advantage is
        # always 0), so that early advantages are not inflated by a moving average still near 0
        square = sum((r - baseline) ** 2 for r in rewards) / len(rewards)
        self._spread = square if not self._spread else (
            self.baseline_decay * self._spread + (1.0 - self.baseline_decay) * square)
        scale = max(self._spread, _MIN_SPREAD) ** -0.5 if self.normalize_advantage else 1.0

        self._policy.train()
        self._optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self._device)
        for sample, reward in self._buffer:
            _, log_prob, entropy = self._run(self._encode(sample))
            loss = loss - scale * (reward - baseline) * log_prob - self.entropy_weight * entropy
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
            "spread": self._spread,
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
            spread = extra.get("spread")  # absent in states saved before it existed
            spread = None if spread is None else float(spread)
            num_updates = int(extra["num_updates"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"Malformed RLController state: {exc!r}.") from exc
        self._buffer = buffer
        self._baseline = baseline
        self._spread = spread
        self._num_updates = num_updates
