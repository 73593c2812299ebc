"""Process bodies and fixtures-as-functions of the distributed tests (importable by spawned children).

``torch.multiprocessing.spawn`` pickles its target by reference, so the workers live in a plain
module on the test folder's ``sys.path`` entry (inherited by spawned children). The toy model and
data are the shared ones of ``tests/_models.py`` (the torchrun tests pass ``--model
tests._models:toy_cnn``; :func:`_launch.child_env` puts the repository root on their path).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from s2dnas import distributed
from s2dnas.config import TrainConfig
from s2dnas.data.datasets import DataSplits
from s2dnas.errors import S2DNASError
from s2dnas.search.rl import RLController
from s2dnas.search.evaluator import CandidateResult
from s2dnas.search.strategy import SearchStrategy
from s2dnas.space import Architecture, Space
from s2dnas.train.base import BaseTrainConfig, train_base
from s2dnas.train.multistage import train_multistage
from tests._models import ToyCNN, blob_splits

FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and values (equal digests: bit-identical weights)."""
    digest = hashlib.sha256()
    for key, value in sorted(state_dict.items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- data

def write_fashion_mnist(directory: Path, *, n_train: int, n_test: int) -> None:
    """Four uncompressed IDX files; 4 of the 10 classes, class k has brightness 60k + noise (crop/flip-proof)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 30, size=(n, 28, 28)) + 60 * labels[:, None, None] + 20
        for key, array, magic in ((f"{split}_images", images, 0x00000803), (f"{split}_labels", labels, 0x00000801)):
            header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
            (directory / FMNIST_FILES[key]).write_bytes(header + array.astype(np.uint8).tobytes())


def toy_setup() -> tuple[nn.Module, Space, DataSplits]:
    """Base model (seeded: same weights in every process), its 2-stage space, and blob data."""
    torch.manual_seed(0)
    base = ToyCNN(num_classes=2).eval()
    space = Space(base, input_shape=(1, 8, 8), num_stages=2, ratio_grid=4)
    return base, space, blob_splits()


MS_CONFIG = TrainConfig(epochs=2, lr=0.05, batch_size=32, seed=0)
BASE_CONFIG = BaseTrainConfig(epochs=2, batch_size=32, lr=0.05, channels_last=False)


# ---------------------------------------------------------------------------------------- workers

def _join(rank: int, world_size: int, port: int) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank), "GLOO_SOCKET_IFNAME": "lo"})
    torch.set_num_threads(1)
    info = distributed.init_distributed()
    assert info.rank == rank and info.world_size == world_size and info.backend == "gloo", info


def _train_base_part(rank: int, out_dir: Path) -> dict[str, Any]:
    """train_base on every rank: 1 epoch, then resume to 2 (every rank loads the checkpoint)."""
    _, _, splits = toy_setup()
    kw: dict[str, Any] = {"out_dir": out_dir / "base", "model_name": "toy", "device": torch.device("cpu"),
                          "progress": False, "distributed": True}
    (out_dir / "base").mkdir(exist_ok=True)
    torch.manual_seed(0)
    train_base(ToyCNN(num_classes=2), splits, config=dataclasses.replace(BASE_CONFIG, epochs=1), **kw)
    torch.manual_seed(1)  # other initial weights: resume must overwrite them with the checkpoint's
    model = ToyCNN(num_classes=2)
    metrics = train_base(model, splits, config=BASE_CONFIG, resume=True, **kw)
    return {"digest": state_digest(model.state_dict()), "history": metrics["history"],
            "val_accuracy": metrics["val_accuracy"]}


def _multistage_part(rank: int, out_dir: Path) -> dict[str, Any]:
    """train_multistage: 1 epoch, resume to 2; a zero stage weight; a rank-local (candidate) run."""
    base, space, splits = toy_setup()
    kw: dict[str, Any] = {"teacher": base, "progress": False, "distributed": True}
    train_multistage(space.build(), splits, config=MS_CONFIG, out_dir=out_dir / "ms", stop_after_epochs=1, **kw)
    msnet = space.build()
    result = train_multistage(msnet, splits, config=MS_CONFIG, out_dir=out_dir / "ms", resume=True, **kw)
    # a stage of weight 0 leaves its exit head without gradient: DDP must be told (find_unused_parameters)
    zero_stage = space.build()
    train_multistage(zero_stage, splits, config=dataclasses.replace(MS_CONFIG, epochs=1, stage_weights=(0.0, 1.0)),
                     **kw)
    if rank == 1:  # a search candidate trains on one rank alone: no collective may be involved
        train_multistage(space.build(), splits, config=dataclasses.replace(MS_CONFIG, epochs=1), teacher=base,
                         progress=False)
    distributed.barrier()
    return {"digest": state_digest(msnet.state_dict()), "epochs": result["epochs"],
            "history": result["history"], "val_accuracy": result["val_accuracy"],
            "zero_stage_digest": state_digest(zero_stage.state_dict())}


def _search_part(rank: int, out_dir: Path) -> dict[str, Any]:
    """Distributed search: budget 2, resume to 4; straight to 4; a search whose candidates all fail."""
    _, space, _ = toy_setup()
    ev = FakeEvaluator(rank)
    make_strategy(space, ev, out_dir / "resumed", 2).run()
    if rank == 0:
        (out_dir / "journal-after-2.jsonl").write_bytes((out_dir / "resumed" / "journal.jsonl").read_bytes())
    resumed = make_strategy(space, ev, out_dir / "resumed", 4).run(resume=True)
    straight = make_strategy(space, ev, out_dir / "straight", 4).run()
    try:
        make_strategy(space, FakeEvaluator(rank, fail=True), out_dir / "failing", 6, max_invalid=2).run()
        error = None
    except S2DNASError as err:
        error = str(err)
    return {"best_reward": resumed.best_reward, "num_records": len(resumed.records), "best": resumed.best.to_dict(),
            "straight_best": straight.best.to_dict(), "error": error}


def _broadcast_module_part(rank: int) -> str:
    """Rank 0's weights and batch-norm statistics reach a model initialised differently on each rank."""
    torch.manual_seed(100 + rank)
    model = ToyCNN(num_classes=2)
    model.bn1.running_mean.add_(rank + 1.0)
    distributed.broadcast_module(model)
    return state_digest(model.state_dict())


def _relayed_error_part() -> list[Any]:
    """Rank 0's error raised through run_on_main: its message, and whether this rank got it from rank 0."""
    def fail() -> None:
        raise S2DNASError("rank 0 says no")

    try:
        distributed.run_on_main(fail)
    except S2DNASError as err:
        return [str(err), distributed.from_main(err)]
    return []


def library_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One process of the library-level tests; writes ``rank<r>.json`` into ``out``."""
    _join(rank, world_size, port)
    out_dir = Path(out)
    try:
        report = {"base": _train_base_part(rank, out_dir), "multistage": _multistage_part(rank, out_dir),
                  "search": _search_part(rank, out_dir),
                  "claims": distributed.all_gather_object(distributed.claim_report()),
                  "objects": distributed.all_gather_object({"rank": rank}),
                  "broadcast": distributed.broadcast_object(f"from {rank}"),
                  "sum": distributed.all_reduce_sum(torch.tensor([rank + 1.0])).tolist(),
                  "module": _broadcast_module_part(rank),
                  "relayed": _relayed_error_part()}
        (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        distributed.cleanup()


class FakeEvaluator:
    """Scores an architecture by a hash of its JSON (fast, deterministic); can fail on purpose."""

    def __init__(self, rank: int, *, fail: bool = False) -> None:
        self.rank = rank
        self.fail = fail

    def evaluate(self, arch: Architecture) -> CandidateResult:
        if self.fail:
            raise S2DNASError("fake failure")
        key = json.dumps(arch.to_dict(), sort_keys=True).encode()
        reward = (zlib.crc32(key) % 1000) / 1000
        return CandidateResult(arch, reward, {"rank": self.rank}, 0.0)


def make_strategy(space: Space, evaluator: Any, run_dir: Path, budget: int, **kw: Any) -> SearchStrategy:
    controller = RLController(space.decisions, kind="factorized", seed=0)
    return SearchStrategy(space, evaluator, controller, budget=budget, run_dir=run_dir, progress=False, **kw)
