"""Multi-process training and search on ``torch.distributed`` (launched with ``torchrun``).

One process per device; ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address, and :func:`init_distributed` joins the process group (NCCL when CUDA is
available, gloo otherwise). Every helper here is a no-op in a single process (no ``WORLD_SIZE``,
``WORLD_SIZE=1``, or no process group), so library code calls them unconditionally and a
single-process run takes exactly the code path it took before.

Three modules, one job each:

* :mod:`~s2dnas.distributed.group`: join/leave the process group, where this process stands
  (:func:`get_info`, :func:`is_main`), :func:`barrier`, the device of a rank, which rank reports
  an error;
* :mod:`~s2dnas.distributed.collective`: :func:`all_reduce_sum`, object broadcast/gather,
  :func:`run_on_main` (a step on rank 0, its result or error on every rank) and
  :func:`broadcast_module` (rank 0's weights);
* :mod:`~s2dnas.distributed.training`: DDP (:func:`wrap_ddp`), per-rank data
  (:func:`train_loader`, :func:`shard`), :func:`average_buffers`, :func:`evaluate_sharded`.

Example (single process: every call is a no-op):
    >>> info = init_distributed()
    >>> info.world_size, is_main(), broadcast_object({"a": 1})
    (1, True, {'a': 1})
"""
from __future__ import annotations

from s2dnas.distributed.collective import (
    all_gather_object,
    all_reduce_sum,
    broadcast_module,
    broadcast_object,
    from_main,
    run_on_main,
)
from s2dnas.distributed.group import (
    BACKEND_ENV,
    TIMEOUT_ENV,
    DistInfo,
    barrier,
    claim_report,
    cleanup,
    device_for,
    get_info,
    init_distributed,
    is_distributed,
    is_main,
)
from s2dnas.distributed.training import (
    average_buffers,
    evaluate_sharded,
    rank_seed,
    shard,
    train_loader,
    unwrap,
    wrap_ddp,
)

__all__ = [
    "DistInfo",
    "init_distributed",
    "get_info",
    "is_distributed",
    "is_main",
    "barrier",
    "claim_report",
    "device_for",
    "cleanup",
    "BACKEND_ENV",
    "TIMEOUT_ENV",
    "all_reduce_sum",
    "broadcast_object",
    "all_gather_object",
    "run_on_main",
    "from_main",
    "broadcast_module",
    "wrap_ddp",
    "unwrap",
    "rank_seed",
    "average_buffers",
    "train_loader",
    "shard",
    "evaluate_sharded",
]
