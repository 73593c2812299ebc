"""Multi-process training and search on ``torch.distributed`` (launched with ``torchrun``).

One process per device; ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address, and :func:`init_distributed` joins the process group (NCCL when CUDA is
available, gloo otherwise). Every helper here is a no-op in a single process (no ``WORLD_SIZE``,
``WORLD_SIZE=1``, or no process group), so library code calls them unconditionally and a
single-process run takes exactly the code path it took before.

What the training loops use (see ``train/base.py`` and ``train/multistage.py``):

* :func:`wrap_ddp` wraps the model in ``DistributedDataParallel``;
* :func:`train_loader` shards the training set with a ``DistributedSampler`` (the recipe's batch
  size is the global batch; see its docstring);
* :func:`average_buffers` makes the ranks' batch-norm statistics equal at the end of each epoch;
* :func:`all_reduce_sum` reduces the epoch metrics, :func:`evaluate_sharded` the val/test passes;
* :func:`is_main` guards progress bars, logs and files; :func:`barrier` makes the other ranks wait.

What ``s2dnas run`` adds (see ``runner.py``): :func:`run_on_main` runs a step on rank 0 and hands
its result, or its error, to every rank; :func:`broadcast_module` copies rank 0's weights.

Example (single process: every call is a no-op):
    >>> info = init_distributed()
    >>> info.world_size, is_main(), broadcast_object({"a": 1})
    (1, True, {'a': 1})
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from s2dnas.errors import ConfigError, DataError, S2DNASError

__all__ = [
    "DistInfo",
    "init_distributed",
    "get_info",
    "is_distributed",
    "is_main",
    "barrier",
    "all_reduce_sum",
    "broadcast_object",
    "all_gather_object",
    "run_on_main",
    "from_main",
    "broadcast_module",
    "claim_report",
    "device_for",
    "cleanup",
    "wrap_ddp",
    "unwrap",
    "average_buffers",
    "train_loader",
    "shard",
    "evaluate_sharded",
    "rank_seed",
    "BACKEND_ENV",
    "TIMEOUT_ENV",
    "DEBUG_DUMP_ENV",
    "state_digest",
    "debug_dump_weights",
]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Overrides the backend choice of :func:`init_distributed` (e.g. ``gloo`` to train on CPUs of a GPU machine).
BACKEND_ENV = "S2DNAS_DIST_BACKEND"

#: Overrides the collective timeout of :func:`init_distributed`, in minutes (how long a rank may wait for the others).
TIMEOUT_ENV = "S2DNAS_DIST_TIMEOUT_MINUTES"

#: Test-only hook: when set to a directory, :func:`debug_dump_weights` writes one hash per rank.
DEBUG_DUMP_ENV = "S2DNAS_DEBUG_DUMP_WEIGHTS"


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job (``rank 0 of 1`` in a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group

    @property
    def distributed(self) -> bool:
        """True when several processes take part (a process group exists and world size > 1)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that logs and writes files."""
        return self.rank == 0


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _active() -> bool:
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"Expected the environment variable {name} to be an integer, but got {value!r}; "
                          "launch with torchrun, which sets it") from None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0:
        raise ConfigError(f"Expected the environment variable {name} to be a positive number, but got {value!r}")
    return number


def init_distributed(*, backend: str | None = None, timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT`` through
    torch's ``env://`` rendezvous). Without ``WORLD_SIZE``, or with ``WORLD_SIZE=1``, nothing is
    initialised and a single-process :class:`DistInfo` is returned. Calling it again returns the
    existing group's info.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; None reads ``$S2DNAS_DIST_BACKEND``, else picks NCCL when
            CUDA is available and gloo otherwise.
        timeout_minutes: how long a collective may wait for the other ranks before failing;
            ``$S2DNAS_DIST_TIMEOUT_MINUTES``, when set, overrides it.

    Returns:
        This process's :class:`DistInfo`.

    Raises:
        ConfigError: malformed environment, torch built without distributed support, or the
            rendezvous failed (e.g. ``WORLD_SIZE`` set by hand without ``MASTER_ADDR``).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return get_info()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process, "
                          "or install a torch build with distributed support")
    rank = _env_int("RANK", -1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ConfigError(f"Expected RANK in [0, {world_size}) with WORLD_SIZE={world_size}, but got "
                          f"{os.environ.get('RANK')!r}; launch with torchrun instead of setting them by hand")
    timeout_minutes = _env_float(TIMEOUT_ENV, timeout_minutes)
    if backend is None:
        backend = os.environ.get(BACKEND_ENV) or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in ("nccl", "gloo"):
        raise ConfigError(f"Expected the backend 'nccl' or 'gloo', but got {backend!r}; fix ${BACKEND_ENV}")
    if backend == "nccl":
        # One GPU per process: collectives and the default CUDA device follow LOCAL_RANK.
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"Could not join the process group (rank {rank} of {world_size}, backend {backend}): "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; launch with torchrun "
                          "(it sets MASTER_ADDR/MASTER_PORT)") from None
    _logger.info("joined the process group: rank %d of %d (local rank %d, %s)", rank, world_size, local_rank,
                 backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def get_info() -> DistInfo:
    """This process's :class:`DistInfo` (single-process info when no group is initialised)."""
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=_env_int("LOCAL_RANK", 0), backend=str(dist.get_backend()))


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return _active()


def is_main() -> bool:
    """True on rank 0 and in a single process."""
    return not _active() or _dist().get_rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if _active():
        dist = _dist()
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


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


def claim_report() -> bool:
    """True for the first rank of the job that asks: that rank prints the job's one error line.

    A user error usually hits every rank at once (same arguments, same files) and must show once;
    one that hits a single rank (a file missing on one machine) must still show. The first rank to
    add 1 to a counter in the rendezvous store (torchrun's agent store, ``MASTER_ADDR:MASTER_PORT``)
    reports. Without a process group, or when the store is unreachable, rank 0 reports.
    """
    rank = _env_int("RANK", 0)
    if not _active():
        return rank == 0
    dist = _dist()
    try:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=datetime.timedelta(seconds=10))
        key = f"s2dnas/error-report/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        return int(store.add(key, 1)) == 1
    except Exception:  # noqa: BLE001 - reporting must not fail; fall back to rank 0
        return rank == 0


def device_for(info: DistInfo, requested: torch.device | str) -> torch.device:
    """The device this rank runs on: ``cuda:LOCAL_RANK`` when CUDA is requested in a distributed job.

    Args:
        info: from :func:`init_distributed` or :func:`get_info`.
        requested: the user's device (``resolve_device``'s result); CPU stays CPU.

    Raises:
        ConfigError: a CPU device in an NCCL job (NCCL only moves CUDA tensors).
    """
    device = torch.device(requested)
    if not info.distributed:
        return device
    if device.type == "cuda":
        if device.index is not None and device.index != info.local_rank and info.is_main:
            _logger.warning("--device %s ignored under torchrun: each process uses cuda:LOCAL_RANK", device)
        return torch.device("cuda", info.local_rank)
    if info.backend == "nccl":
        raise ConfigError(f"Expected a CUDA device with the NCCL backend, but got {device}; use --device cuda "
                          f"(or auto), or set {BACKEND_ENV}=gloo to run on CPUs")
    return device


def cleanup() -> None:
    """Leave the process group (no-op without one); errors while leaving are logged, not raised."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as err:  # noqa: BLE001 - leaving must never mask the command's own result
            _logger.warning("destroying the process group failed: %s", err)


# ---------------------------------------------------------------------------- training helpers

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


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and values (equal digests: bit-identical weights)."""
    digest = hashlib.sha256()
    for key, value in sorted(state_dict.items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def debug_dump_weights(model: nn.Module, *, tag: str) -> None:
    """Test-only: write :func:`state_digest` of ``model`` to ``$S2DNAS_DEBUG_DUMP_WEIGHTS``.

    One file per rank, ``<tag>-rank<r>.sha256``; a no-op when the variable is unset. Lets a test
    that launches ``torchrun`` check that every rank ended with identical weights.
    """
    directory = os.environ.get(DEBUG_DUMP_ENV)
    if not directory:
        return
    rank = _dist().get_rank() if _active() else 0
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{tag}-rank{rank}.sha256").write_text(state_digest(unwrap(model).state_dict()) + "\n")
