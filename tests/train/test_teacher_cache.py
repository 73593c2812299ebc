"""The cached teacher: trainings with it end bit-identical to trainings without it, whether its
logits are computed or read back (memory or SQLite); any change of input, weights, thread count or
mode misses; the store's file survives the process and a foreign file is refused in one line."""
from __future__ import annotations

import copy
import sqlite3
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from s2dnas.config import TrainConfig
from s2dnas.errors import ConfigError
from s2dnas.space import Space
from s2dnas.train.base import BaseTrainConfig, train_base
from s2dnas.train.loops import read_back_seconds
from s2dnas.train.multistage import MultiStageLoss, train_multistage
from s2dnas.train.teacher import CachedTeacher, LogitStore
from tests._models import ToyCNN, blob_splits

CFG = TrainConfig(epochs=2, lr=0.05, batch_size=32, seed=0)


def _teacher() -> nn.Module:
    torch.manual_seed(1)
    return ToyCNN(num_classes=2).eval()


def _train(teacher: nn.Module) -> dict[str, torch.Tensor]:
    """A two-stage network over a fixed base (weights from seed 2) trained with ``teacher``."""
    torch.manual_seed(2)
    msnet = Space(ToyCNN(num_classes=2).eval(), input_shape=(1, 8, 8), num_stages=2, ratio_grid=4).build()
    train_multistage(msnet, blob_splits(), config=CFG, teacher=teacher, progress=False, evaluate_val=False)
    return msnet.state_dict()


class _Slow(nn.Module):
    """``teacher`` taking at least 10 ms a batch."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return self.teacher(x)


def test_a_training_that_reads_logits_back_records_how_long_they_took(tmp_path: Path) -> None:
    store = LogitStore(tmp_path / "logits.sqlite")
    histories = []
    for _ in range(2):
        torch.manual_seed(2)
        msnet = Space(ToyCNN(num_classes=2).eval(), input_shape=(1, 8, 8), num_stages=2, ratio_grid=4).build()
        histories.append(train_multistage(msnet, blob_splits(), config=CFG, teacher=CachedTeacher(_Slow(_teacher()),
                                          store), progress=False, evaluate_val=False)["history"])
    store.close()
    with sqlite3.connect(tmp_path / "logits.sqlite") as db:
        stored, count = db.execute("SELECT SUM(seconds), COUNT(*) FROM logits").fetchone()
    assert [h["teacher_seconds_read_back"] for h in histories[0]] == [0.0, 0.0]  # computed, not read
    assert stored >= 0.01 * count and read_back_seconds(histories[1]) == pytest.approx(stored, rel=1e-9)
    assert read_back_seconds(histories[0]) == 0.0 and read_back_seconds([{"seconds": 1.0}]) == 0.0


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("on_disk", [False, True])
def test_training_with_the_cache_equals_training_without_it(tmp_path: Path, on_disk: bool) -> None:
    plain = _train(_teacher())
    store = LogitStore(tmp_path / "logits.sqlite" if on_disk else None)
    computed = _train(CachedTeacher(_teacher(), store))
    batches = 2 * -(-len(blob_splits().train) // 32)  # epochs x batches per epoch
    assert (store.hits, store.misses, len(store)) == (0, batches, batches)  # every batch differs
    again = _train(CachedTeacher(_teacher(), store))  # a second training of the same seed: all read back
    assert (store.hits, store.misses) == (batches, batches)
    assert _equal(plain, computed) and _equal(plain, again)


def test_a_static_model_distilled_through_the_cache_is_the_same_model(tmp_path: Path) -> None:
    store = LogitStore()

    def distilled(name: str, teacher: nn.Module) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = ToyCNN(num_classes=2)
        train_base(model, blob_splits(), config=BaseTrainConfig(epochs=2, batch_size=32, channels_last=False, lr=0.05),
                   out_dir=tmp_path / name, model_name="toy", device=torch.device("cpu"), progress=False,
                   teacher=teacher, distillation=MultiStageLoss(1, distill_weight=1.0))
        return model.state_dict()

    plain = distilled("plain", _teacher())
    first = distilled("first", CachedTeacher(_teacher(), store))
    second = distilled("second", CachedTeacher(_teacher(), store))
    assert store.hits == store.misses > 0
    assert _equal(plain, first) and _equal(plain, second)


def test_only_the_same_input_weights_and_threads_hit() -> None:
    teacher = CachedTeacher(_teacher())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        first = teacher(x)
        assert torch.equal(teacher(x.clone()), first) and teacher.store.hits == 1  # equal content, other tensor
        teacher(x).zero_()  # what a caller does with its logits does not reach the store
        assert torch.equal(teacher(x), first) and teacher.store.hits == 3
        teacher(x[:3])  # a part of the batch
        y = x.clone()
        y[0, 0, 0, 0] += 1e-6
        teacher(y)  # one value changed
        strided = torch.empty_strided(x.shape, (64, 1, 8, 1)).copy_(x)  # channels-last strides (C = 1)
        teacher(strided)  # the same values in another layout
        assert teacher.store.hits == 3 and teacher.store.misses == 4
        threads = torch.get_num_threads()
        torch.set_num_threads(threads + 1)
        try:
            teacher(x)  # another thread count may round differently
        finally:
            torch.set_num_threads(threads)
        assert teacher.store.misses == 5
        teacher.teacher.fc.bias.add_(1.0)  # the teacher changed in place: its old logits no longer hold
        changed = teacher(x)
        assert teacher.store.misses == 6 and not torch.equal(changed, first)
        assert torch.equal(teacher(x), changed) and teacher.store.hits == 4


def test_training_mode_or_autograd_passes_through() -> None:
    teacher = CachedTeacher(_teacher())
    x = torch.randn(4, 1, 8, 8)
    teacher.teacher.bn1.train()  # one submodule with batch statistics is enough
    with torch.no_grad():
        teacher(x)
    assert teacher(x).requires_grad  # a graph was asked for
    assert len(teacher.store) == 0 and teacher.store.hits == teacher.store.misses == 0


def test_only_logits_another_teacher_computed_count_as_read_back() -> None:
    one = CachedTeacher(_Slow(_teacher()).eval())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        one(x)
        one(x)  # its own logits again: a run alone reads these back too
        assert one.store.hits == 1 and one.seconds_read_back == 0.0
        twin = copy.deepcopy(one)  # the same teacher, copied by a training loop
        twin(x)
        assert twin.seconds_read_back == 0.0
        other = CachedTeacher(one.teacher, one.store)  # another training over the same store
        other(x)
        assert other.seconds_read_back >= 0.01 and one.store.hits == 3


def test_a_deep_copy_shares_the_store_and_the_answers() -> None:
    teacher = CachedTeacher(_teacher())
    x = torch.randn(4, 1, 8, 8)
    twin = copy.deepcopy(teacher)
    assert twin.store is teacher.store and twin.teacher is not teacher.teacher and not twin.training
    with torch.no_grad():
        a = teacher(x)
        assert torch.equal(twin(x), a) and teacher.store.hits == 1


def test_the_file_keeps_dtype_shape_and_bits_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "logits.sqlite"  # its folder is made
    values = {b"a": torch.randn(3, 5, dtype=torch.float64), b"b": torch.randn(2, 7).to(torch.bfloat16),
              b"c": torch.randn(4)}
    store = LogitStore(path)
    for i, (key, value) in enumerate(values.items()):
        store.put(key, value, seconds=0.5 * i)
    store.close()
    reopened = LogitStore(path)
    assert len(reopened) == 3 and reopened.get(b"missing") is None
    for i, (key, value) in enumerate(values.items()):
        back = reopened.get(key)
        assert back is not None and back[0].dtype == value.dtype and torch.equal(back[0], value) and back[1] == 0.5 * i
    assert (reopened.hits, reopened.misses) == (3, 1)


def test_a_full_memory_store_keeps_what_it_has(tmp_path: Path) -> None:
    store = LogitStore(max_bytes=2 * 10 * 4)  # two tensors of 10 floats
    for i in range(3):
        store.put(bytes([i]), torch.full((10,), float(i)), seconds=1.0)
    assert len(store) == 2 and store.get(bytes([2])) is None and torch.equal(store.get(bytes([1]))[0], torch.ones(10))


def test_a_file_that_is_not_a_logit_cache_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    with pytest.raises(ConfigError, match=r"Expected .*notes\.txt to be a teacher-logit cache .* delete it or choose"):
        LogitStore(text)
    assert text.read_text() == "not a database\n" * 100  # left as it was
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE logits (x INTEGER)")
    with pytest.raises(ConfigError, match="other.sqlite to be a teacher-logit cache"):
        LogitStore(other)


def test_a_store_that_never_stores_leaves_no_file(tmp_path: Path) -> None:
    store = LogitStore(tmp_path / "logits.sqlite")
    assert store.get(b"key") is None and len(store) == 0
    store.close()
    assert not (tmp_path / "logits.sqlite").exists()
