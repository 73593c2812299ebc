"""The process group: joining it (torchrun's environment), where this process stands, leaving it.

Every helper is a no-op in a single process (no ``WORLD_SIZE``, ``WORLD_SIZE=1``, or no process
group), so library code calls them unconditionally.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from s2dnas.errors import ConfigError

__all__ = ["DistInfo", "init_distributed", "get_info", "is_distributed", "is_main", "barrier", "claim_report",
           "device_for", "cleanup", "BACKEND_ENV", "TIMEOUT_ENV"]

_logger = logging.getLogger("s2dnas.distributed")

#: Overrides the backend choice of :func:`init_distributed` (e.g. ``gloo`` to train on CPUs of a GPU machine).
BACKEND_ENV = "S2DNAS_DIST_BACKEND"

#: Overrides the collective timeout of :func:`init_distributed`, in minutes (how long a rank may wait for the others).
TIMEOUT_ENV = "S2DNAS_DIST_TIMEOUT_MINUTES"


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
