"""Collectives between the ranks: sums, objects, rank 0's decisions and weights sent to every rank."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn

from s2dnas.distributed.group import _active, _dist, is_main
from s2dnas.errors import S2DNASError

__all__ = ["all_reduce_sum", "broadcast_object", "all_gather_object", "run_on_main", "from_main", "broadcast_module"]

T = TypeVar("T")

def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place, and return it (unchanged in a single process).

    The reduction runs on the backend's device (CUDA for NCCL); the result is written back to
    ``tensor`` wherever it lives.
    """
    if not _active():
        return tensor
    dist = _dist()
    work = tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        work = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    if work is not tensor:
        tensor.copy_(work)
    return tensor

def broadcast_object(obj: T, src: int = 0) -> T:
    """Return rank ``src``'s ``obj`` on every rank (pickled; ``obj`` itself in a single process)."""
    if not _active():
        return obj
    holder = [obj]
    _dist().broadcast_object_list(holder, src=src)
    return holder[0]

def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    dist = _dist()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 and return its result on every rank; its error is raised on every rank.

    This is how a decision taken on rank 0 (the search controller's next samples, the best
    architecture) reaches the others without deadlocking them when it fails: an
    :class:`~s2dnas.errors.S2DNASError` is sent as is (so the CLI exits 2 on every rank and rank 0
    prints it); any other exception is re-raised on rank 0 and becomes an ``S2DNASError`` naming it
    on the other ranks. On those ranks the error is marked (:func:`from_main`): rank 0 reports it.
    """
    if not _active():
        return fn()
    if is_main():
        try:
            value = fn()
        except S2DNASError as err:
            broadcast_object(("error", err))
            raise
        except BaseException as err:
            broadcast_object(("error", S2DNASError(f"rank 0 failed: {type(err).__name__}: {err}")))
            raise
        broadcast_object(("ok", value))
        return value
    status, payload = broadcast_object(None)
    if status == "error":
        setattr(payload, _FROM_MAIN, True)
        raise payload
    return payload

_FROM_MAIN = "_s2dnas_from_main"

def from_main(err: BaseException) -> bool:
    """True for an error that :func:`run_on_main` received from rank 0 (rank 0 reports it, not this rank)."""
    return bool(getattr(err, _FROM_MAIN, False))

def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place.

    For weights that one rank computed alone (a super-network trained on rank 0) before the
    others use them. No-op in a single process.
    """
    if not _active():
        return
    dist = _dist()
    nccl = dist.get_backend() == "nccl"
    with torch.no_grad():
        for tensor in module.state_dict().values():  # share storage with the parameters and buffers
            work = tensor
            if nccl and tensor.device.type != "cuda":
                work = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            elif not tensor.is_contiguous():
                work = tensor.contiguous()
            dist.broadcast(work, src=src)
            if work is not tensor:
                tensor.copy_(work)
