"""The policies an :class:`~s2dnas.search.rl.RLController` samples from: factorised logits or an LSTM (ENAS)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["FactorizedPolicy", "LSTMPolicy"]


class FactorizedPolicy(nn.Module):
    """Independent categorical logits per decision."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes])

    def step_logits(self, index: int, state: Any, previous: int | None) -> tuple[torch.Tensor, Any]:
        return self.logits[index], state

    def initial_state(self) -> Any:
        return None


class LSTMPolicy(nn.Module):
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
