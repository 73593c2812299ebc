"""run_pipeline's checks of the base model (the steps after it are covered by tests/cli/test_cli_run.py)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from s2dnas import runner
from s2dnas.config import load_config
from s2dnas.train.checkpoint import save_weights
from tests._models import toy_cnn
from tests.cli._synthetic import write_band_dataset


class _Stop(Exception):
    """Raised where the test has seen what it needs (after the base step)."""


def test_run_warns_once_about_a_chance_level_base(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    data = write_band_dataset(tmp_path / "data", n_train=60, n_test=20)
    model = toy_cnn()
    with torch.no_grad():  # untrained, and answering one class whatever the input: chance level
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.arange(10.0))
    weights = tmp_path / "base.safetensors"
    save_weights(weights, model.state_dict(), {"model": "tests._models:toy_cnn", "num_classes": 10, "in_channels": 1})
    cfg = load_config(None, [("data.dataset", "fashion-mnist"), ("data.data_dir", str(data)), ("data.val_size", 20),
                             ("model.name", "tests._models:toy_cnn"), ("model.weights", str(weights))])

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(runner, "resolve_target", stop)  # the step after the base metrics
    (tmp_path / "run").mkdir()
    with caplog.at_level(logging.WARNING), pytest.raises(_Stop):
        runner.run_pipeline(cfg, out=tmp_path / "run", progress=False)
    chance = [r.getMessage() for r in caplog.records if "at chance level" in r.getMessage()]
    assert len(chance) == 1 and "always the most frequent of 10 classes" in chance[0]
    assert "train the base model longer" in chance[0]


def test_a_run_reading_every_teacher_logit_back_ends_as_the_run_that_computed_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from s2dnas.data import build_splits
    from s2dnas.train.base import BaseTrainConfig, train_base
    from s2dnas.train.checkpoint import load_weights
    from s2dnas.train.teacher import LogitStore
    from tests.cli._synthetic import write_pattern_dataset

    (tmp_path / "data").mkdir()
    write_pattern_dataset(tmp_path / "data", n_train=300, n_test=60)
    splits = build_splits("fashion-mnist", data_dir=str(tmp_path / "data"), val_size=60, seed=0)
    torch.manual_seed(0)
    train_base(toy_cnn(), splits, config=BaseTrainConfig(epochs=2), out_dir=tmp_path / "base",
               model_name="tests._models:toy_cnn", device=torch.device("cpu"), progress=False)
    cfg = load_config(None, [("data.dataset", "fashion-mnist"), ("data.data_dir", str(tmp_path / "data")),
                             ("data.val_size", 60), ("model.name", "tests._models:toy_cnn"),
                             ("model.weights", str(tmp_path / "base" / "model.safetensors")),
                             ("search.strategy", "random"), ("search.budget", 3), ("search.candidate_limit_train", 64),
                             ("train.limit_train", 128), ("final_epochs", 1), ("device", "cpu")])
    store = LogitStore(tmp_path / "logits.sqlite")
    outs = [tmp_path / "a", tmp_path / "b"]
    counts = []
    for out in outs:
        out.mkdir()
        with caplog.at_level(logging.INFO, logger="s2dnas.runner"):
            runner.run_pipeline(cfg, out=out, progress=False, teacher_cache=store)
        counts.append((store.hits, store.misses))
    (hits_a, misses_a), (hits_b, misses_b) = counts
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("teacher logits:")]
    assert said == [f"teacher logits: {hits_a} batches from the cache, {misses_a} computed",  # each run its own
                    f"teacher logits: {hits_a + misses_a} batches from the cache, 0 computed"]
    # the three candidates train on the same seeded batches: the second and third read the first's logits
    assert hits_a == 2 * (misses_a - 1) and misses_a > 1  # + the final training's batch, computed once
    assert misses_b == misses_a and hits_b == hits_a + (hits_a + misses_a)  # the second run computes nothing
    journals = [(o / "search" / "journal.jsonl").read_text() for o in outs]
    weights = [load_weights(o / "model" / "weights.safetensors")[0] for o in outs]
    assert [json.loads(line)["architecture"] for line in journals[0].splitlines()] == \
        [json.loads(line)["architecture"] for line in journals[1].splitlines()]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # what the second run's final training read back it did not compute: counted as if it had run alone
    read_back = [json.loads((o / "results.json").read_text())["timings"]["final_training_teacher_read_back_seconds"]
                 for o in outs]
    assert read_back[0] == 0.0 < read_back[1]
