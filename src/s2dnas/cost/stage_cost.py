"""The per-stage cost hook: what the search's scoring and the final calibration minimise.

A hook is any callable ``stage_cost(msnet) -> (costs, unit)``: ``costs`` has one number per stage,
that stage's own cost per input (``>= 0``; features reused from earlier stages are not counted
again), and ``unit`` names it. The threshold optimiser only adds costs up, so any unit works; the
:class:`~s2dnas_runtime.ExitPolicy` records which one was minimised (``stage_cost``, ``cost_unit``).

Two hooks exist: :func:`macs_stage_cost` (the default, unit ``"macs"``) and
:class:`s2dnas.cost.latency.LatencyStageCost` (milliseconds per input measured on the target
device, unit ``"ms"``); ``calibration.cost`` in the config selects one.

Example:
    >>> class Net:  # anything with analytic_macs, e.g. a MultiStageNet
    ...     analytic_macs = [100, 250, 400]
    >>> macs_stage_cost(Net())
    ((100.0, 250.0, 400.0), 'macs')
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # cost/ sits below space/: the network is only used through its attributes
    from s2dnas.space.multistage import MultiStageNet

__all__ = ["StageCost", "MACS", "macs_stage_cost"]

#: The type of a cost hook: network -> (per-stage cost per input, unit).
StageCost = Callable[["MultiStageNet"], "tuple[tuple[float, ...], str]"]

#: The unit name of MACs (the default cost).
MACS = "macs"


def macs_stage_cost(msnet: MultiStageNet) -> tuple[tuple[float, ...], str]:
    """Each stage's own MACs per input by the analytic formula (``msnet.analytic_macs``), unit ``"macs"``."""
    return tuple(float(m) for m in msnet.analytic_macs), MACS
