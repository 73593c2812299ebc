"""Issue 14: no choice of the pipeline reads the test split. ``run_pipeline`` (the ``s2dnas run``
path: search, final training, calibration, report) runs twice on the same data, once with the test
labels permuted; every recorded choice (search journal, architecture, thresholds, final weights)
is identical, and only test metrics may differ."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2dnas import runner
from s2dnas.config import load_config
from s2dnas.data import build_splits
from s2dnas.train.base import BaseTrainConfig, train_base
from s2dnas.train.checkpoint import load_weights
from tests._models import toy_cnn
from tests.cli._synthetic import write_idx, write_pattern_dataset

N_TRAIN, N_TEST, VAL_SIZE = 300, 100, 60


def _without(obj: Any, dropped: set[str]) -> Any:
    """``obj`` with every key in ``dropped`` removed, at any depth."""
    if isinstance(obj, dict):
        return {k: _without(v, dropped) for k, v in obj.items() if k not in dropped}
    if isinstance(obj, list):
        return [_without(v, dropped) for v in obj]
    return obj


#: Wall-clock fields (they differ between any two runs) and where the run lives.
CLOCK = {"seconds", "elapsed", "timings", "started", "finished", "time", "wall_seconds", "out", "data_dir",
         "created", "seconds_this_run", "train_seconds", "export_dir"}


def _run(tmp_path: Path, name: str, data: Path, base: Path) -> Path:
    out = tmp_path / name
    out.mkdir()
    cfg = load_config(None, [("data.dataset", "fashion-mnist"), ("data.data_dir", str(data)),
                             ("data.val_size", VAL_SIZE), ("model.name", "tests._models:toy_cnn"),
                             ("model.weights", str(base)), ("search.strategy", "random"), ("search.budget", 2),
                             ("search.candidate_limit_train", 64), ("train.limit_train", 128), ("final_epochs", 1),
                             ("device", "cpu")])
    runner.run_pipeline(cfg, out=out, progress=False)
    return out


def test_permuting_the_test_labels_changes_no_choice(tmp_path: Path) -> None:
    clean, permuted = tmp_path / "clean", tmp_path / "permuted"
    for d in (clean, permuted):
        d.mkdir()
        write_pattern_dataset(d, n_train=N_TRAIN, n_test=N_TEST)
    labels = np.frombuffer((clean / "t10k-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert (shuffled != labels).mean() > 0.5
    write_idx(permuted / "t10k-labels-idx1-ubyte", shuffled, 0x00000801)
    # a briefly trained base (on the clean copy; its test numbers play no part in the runs' choices)
    splits = build_splits("fashion-mnist", data_dir=str(clean), val_size=VAL_SIZE, seed=0)
    torch.manual_seed(0)  # the toy base's initial weights
    train_base(toy_cnn(), splits, config=BaseTrainConfig(epochs=3), out_dir=tmp_path / "base",
               model_name="tests._models:toy_cnn", device=torch.device("cpu"), progress=False)
    base = tmp_path / "base" / "model.safetensors"

    a, b = _run(tmp_path, "run_a", clean, base), _run(tmp_path, "run_b", permuted, base)

    # the search: every candidate, its reward and metrics, in order
    journal = [_without([json.loads(line) for line in (r / "search" / "journal.jsonl").read_text().splitlines()],
                        CLOCK) for r in (a, b)]
    assert journal[0] == journal[1] and len(journal[0]) >= 2
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    assert ra["base"]["val_accuracy"] > 0.5  # a base that learnt something: the choices are not trivial
    assert ra["architecture"] == rb["architecture"] and ra["search_reward"] == rb["search_reward"]
    # the final network: same weights, same thresholds and val numbers
    wa, _ = load_weights(a / "model" / "weights.safetensors")
    wb, _ = load_weights(b / "model" / "weights.safetensors")
    assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)
    for name in ("model.json", "thresholds.json", "architecture.json"):
        ma, mb = (json.loads((r / "model" / name).read_text()) for r in (a, b))
        assert _without(ma, CLOCK | {"data"}) == _without(mb, CLOCK | {"data"}), name
    # every other recorded number (calibration, val results, training history) too: only test ones differ
    test_only = {"test", "test_curve", "test_accuracy"}
    assert _without(ra, CLOCK | test_only) == _without(rb, CLOCK | test_only)
    assert ra["base"]["test_accuracy"] != rb["base"]["test_accuracy"] and ra["test"] != rb["test"]
