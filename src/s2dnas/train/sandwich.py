"""The sandwich rule: which architectures one super-network step trains.

Each step trains the cheapest architecture of the space, the most expensive one and ``N`` sampled
uniformly (BigNAS, slimmable networks). In this space an architecture is a multi-stage network,
so its cost is a vector, not a number: ``c = (c_1, ..., c_S)``, the MACs each stage adds (the MAC
counter of ``cost/``, as :meth:`MultiStageNet.stage_macs` measures it). Architectures are ordered
by that vector **lexicographically**: first by what the first exit costs (what every input pays),
then by what the second stage adds, and so on: the order that matters most to dynamic inference,
where most inputs leave early. The two extremes of that order are, exactly:

* **cheapest**: split ``(1, 1, ..., 1, q - S + 1)`` in every group and no concat (every later stage
  reads earlier features only in its classifier, position ``G``). ``c_1`` grows with stage 1's
  share of every group, so stage 1 gets ``1/q``; given that, ``c_2`` grows with stage 2's share and
  with how early stage 2 concatenates, so stage 2 gets ``1/q`` and no concat; and so on.
* **most expensive**: split ``(q - S + 1, 1, ..., 1)`` in every group and concat at position 0
  for every stage >= 2 (each later stage reads all earlier stages' features everywhere): stage 1
  is as wide as the space allows, and each later stage reads as many columns as it can.

Together they bound the weights the space uses: the cheapest trains the smallest sub-network any
architecture contains (stage 1 at ``1/q`` width), the most expensive the widest first stage and
the largest weight blocks any later stage reads. The test enumerates a small space and checks
both against the counter.

Example:
    >>> from s2dnas.space import Space
    >>> from s2dnas.zoo import create_model
    >>> space = Space(create_model("resnet20"), input_shape=(3, 32, 32))
    >>> cheapest(space).splits[0], cheapest(space).concat
    ((1, 1, 6), (3, 3))
    >>> most_expensive(space).splits[0], most_expensive(space).concat
    ((6, 1, 1), (0, 0))
"""
from __future__ import annotations

import torch

from s2dnas.errors import ConfigError
from s2dnas.space import Architecture, Space

__all__ = ["cheapest", "most_expensive", "sandwich"]


def cheapest(space: Space) -> Architecture:
    """The lexicographically cheapest architecture of ``space`` (see the module docstring)."""
    q, s = space.ratio_grid, space.num_stages
    split = (1,) * (s - 1) + (q - s + 1,)
    return space.architecture(splits=[split] * space.num_groups, concat=[space.num_groups] * (s - 1))


def most_expensive(space: Space) -> Architecture:
    """The lexicographically most expensive architecture of ``space`` (see the module docstring)."""
    q, s = space.ratio_grid, space.num_stages
    split = (q - s + 1,) + (1,) * (s - 1)
    return space.architecture(splits=[split] * space.num_groups, concat=[0] * (s - 1))


def sandwich(space: Space, *, num_sampled: int, generator: torch.Generator) -> list[Architecture]:
    """The architectures of one step: most expensive first (the in-place teacher), cheapest, then
    ``num_sampled`` uniform samples drawn from ``generator``."""
    if num_sampled < 0:
        raise ConfigError(f"Expected num_sampled >= 0, but got {num_sampled}")
    return [most_expensive(space), cheapest(space), *(space.sample(generator) for _ in range(num_sampled))]
