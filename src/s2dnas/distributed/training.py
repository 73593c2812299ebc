"""Data-parallel training: DDP wrapping, per-rank seeds and data shards, batch-norm averaging, sharded evaluation.

What the training loops use (``train/base.py``, ``train/multistage.py``): :func:`wrap_ddp`,
:func:`train_loader` (the recipe's batch size is the global batch), :func:`average_buffers` at the
end of each epoch, :func:`evaluate_sharded` for the val/test passes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from s2dnas.distributed.collective import all_reduce_sum
from s2dnas.distributed.group import _active, _dist
from s2dnas.errors import ConfigError, DataError

__all__ = ["wrap_ddp", "unwrap", "rank_seed", "average_buffers", "train_loader", "shard", "evaluate_sharded"]

def wrap_ddp(model: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` in a distributed job, ``model`` itself otherwise.

    DDP broadcasts rank 0's parameters and buffers at construction and its buffers (batch-norm
    running statistics) before every training forward, so every rank holds the same state.
    """
    if not _active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)

def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (``model`` itself otherwise)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model

def rank_seed(seed: int) -> int:
    """The seed of this rank's global RNGs (augmentation, dropout): ``seed`` itself on rank 0.

    Design choice (as timm's ``random_seed(seed, rank)``): other ranks offset it, so the ranks do
    not draw identical crops and flips for their different images; a single process, rank 0,
    keeps exactly the single-process seed.
    """
    rank = _dist().get_rank() if _active() else 0
    return seed + 1_000_003 * rank

def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (batch-norm running statistics) over the ranks, in place.

    DDP broadcasts rank 0's buffers *before* each training forward, and the forward then updates
    them with the rank's own batch, so after the last step the ranks' running statistics differ.
    Design choice (timm's ``distribute_bn(..., reduce=True)``): average them at the end of every
    epoch, before validation and the checkpoint, so every rank evaluates and holds the same state
    and the statistics use every rank's data. Integer buffers (``num_batches_tracked``) are
    identical on every rank already. No-op in a single process.
    """
    if not _active():
        return
    world = _dist().get_world_size()
    with torch.no_grad():
        for buffer in unwrap(model).buffers():
            if buffer.is_floating_point():
                all_reduce_sum(buffer)
                buffer.div_(world)

def train_loader(dataset: Dataset, *, batch_size: int, seed: int, epoch: int,
                 limit: int | None = None) -> DataLoader:
    """This rank's shuffled training loader for one epoch; ``batch_size`` is the *global* batch.

    Design choice: the recipe's batch size is the global batch; each of the N ranks loads
    ``batch_size / N`` examples per step from a ``DistributedSampler`` seeded with ``seed`` and
    ``set_epoch(epoch)`` (so the shuffle depends only on ``(seed, epoch)`` and a resumed run
    replays it). The number of steps per epoch, ``ceil(ceil(n / N) / (batch_size / N))``, equals
    the single-process ``ceil(n / batch_size)``, so the learning-rate schedule, a function of the
    global step, and the recipe stored in checkpoints do not depend on N (resume may even change
    N). Which examples share a batch differs from a single process (another permutation), and the
    sampler pads the epoch with up to N - 1 repeated examples so every rank takes the same number
    of steps.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the world size.
        DataError: the (limited) dataset is empty.
    """
    dist = _dist()
    return _sharded_loader(dataset, batch_size=batch_size, seed=seed, epoch=epoch, limit=limit,
                           rank=dist.get_rank(), world_size=dist.get_world_size())

def _sharded_loader(dataset: Dataset, *, batch_size: int, seed: int, epoch: int, limit: int | None,
                    rank: int, world_size: int) -> DataLoader:
    if batch_size % world_size:
        fix = max(world_size, batch_size // world_size * world_size)
        raise ConfigError(f"Expected the batch size ({batch_size}, the global batch) to be a multiple of the number "
                          f"of processes ({world_size}); use --batch-size {fix}")
    if limit is not None and limit < len(dataset):  # type: ignore[arg-type]
        dataset = Subset(dataset, range(limit))
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("Expected a non-empty dataset split, but got 0 examples")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size // world_size, sampler=sampler, num_workers=0, drop_last=False)

def shard(dataset: Dataset) -> Dataset:
    """This rank's share of an evaluation set: positions ``rank, rank + N, ...`` (no padding)."""
    if not _active():
        return dataset
    dist = _dist()
    return Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))

def evaluate_sharded(evaluate_counts: Callable[[Dataset], Sequence[float]], dataset: Dataset,
                     width: int) -> list[float]:
    """Sum per-rank evaluation counts over the ranks.

    Design choice: val and test passes are sharded (each rank evaluates every N-th example of the
    unwrapped model) and their counts summed, rather than run on rank 0 alone: exact (no padded
    duplicates) and N times faster. ``evaluate_counts(subset)`` returns ``width`` sums (correct
    counts, loss sums, number of examples) for one rank's subset; an empty share counts zeros.
    """
    part = shard(dataset)
    counts = list(evaluate_counts(part)) if len(part) else [0.0] * width  # type: ignore[arg-type]
    assert len(counts) == width, f"expected {width} counts, got {len(counts)}"
    if not _active():
        return counts
    total = all_reduce_sum(torch.tensor(counts, dtype=torch.float64))
    return [float(v) for v in total]
