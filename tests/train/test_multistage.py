"""Multi-stage training: the loss, training on a toy task, resume, NaN guard, teacher untouched."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from s2dnas.config import TrainConfig
from s2dnas.data import make_loader
from s2dnas.data.datasets import DataSplits
from s2dnas.errors import CheckpointError, ConfigError, TrainingError
from s2dnas.space import Space
from s2dnas.train.multistage import (
    CHECKPOINT_NAME,
    MultiStageLoss,
    evaluate_stages,
    load_multistage,
    save_multistage,
    train_multistage,
)
from tests._models import ToyCNN, blob_splits


@pytest.fixture
def splits() -> DataSplits:
    return blob_splits()


@pytest.fixture
def base(seed: int) -> nn.Module:
    return ToyCNN(num_classes=2).eval()


def _space(base: nn.Module, stages: int = 2) -> Space:
    return Space(base, input_shape=(1, 8, 8), num_stages=stages, ratio_grid=4)


CFG = TrainConfig(epochs=2, lr=0.05, batch_size=32, seed=0)


# -- the loss -------------------------------------------------------------------------------
def test_loss_equals_hand_computation() -> None:
    z1 = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    z2 = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    y = torch.tensor([0, 2])
    w, alpha, t = [0.5, 2.0], 0.7, 2.0

    def softmax(row: list[float], temp: float = 1.0) -> list[float]:
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    expected = 0.0
    for ws, z in zip(w, (z1, z2)):
        ce = sum(-math.log(softmax(z[i].tolist())[y[i]]) for i in range(2)) / 2
        kl = 0.0
        for i in range(2):
            p_t, p_s = softmax(teacher[i].tolist(), t), softmax(z[i].tolist(), t)
            kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s))
        expected += ws * ce + alpha * ws * t * t * kl / 2
    loss = MultiStageLoss(2, stage_weights=w, distill_weight=alpha, temperature=t)
    assert float(loss([z1, z2], y, teacher)) == pytest.approx(expected, rel=1e-6)


def test_loss_one_stage_without_distillation_is_cross_entropy() -> None:
    z, y = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0])
    assert torch.allclose(MultiStageLoss(1, distill_weight=0.0)([z], y, z * 2), F.cross_entropy(z, y))
    assert torch.allclose(MultiStageLoss(1)([z], y, None), F.cross_entropy(z, y))  # no teacher: no distillation


def test_loss_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match="one stage weight per stage"):
        MultiStageLoss(3, stage_weights=[1.0, 1.0])
    with pytest.raises(ConfigError, match="temperature > 0"):
        MultiStageLoss(2, temperature=0.0)
    with pytest.raises(ConfigError, match="Expected 2 stage logits"):
        MultiStageLoss(2)([torch.zeros(1, 2)], torch.tensor([0]))


# -- training -------------------------------------------------------------------------------
def test_brief_training_improves_every_stage_and_leaves_the_teacher_alone(base: nn.Module,
                                                                          splits: DataSplits) -> None:
    msnet = _space(base).build()
    before = evaluate_stages(msnet, make_loader(splits.val, batch_size=64), device="cpu")
    teacher_state = {k: v.clone() for k, v in base.state_dict().items()}
    result = train_multistage(msnet, splits, config=CFG, teacher=base, progress=False)
    after = result["val_accuracy"]
    assert after is not None and len(after) == 2 and result["epochs"] == 2
    assert all(a > b for a, b in zip(after, before)), (before, after)
    assert min(after) >= 0.9
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in teacher_state.items())  # incl. BN buffers
    assert not base.training  # teacher's mode restored
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def test_candidate_mode_without_files_or_val(base: nn.Module, splits: DataSplits, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(epochs=1, lr=0.05, batch_size=32, limit_train=64)
    result = train_multistage(_space(base).build(), splits, config=config, teacher=base, progress=False,
                              evaluate_val=False)
    assert result["val_accuracy"] is None and result["epochs"] == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("channels_last", [False, True])
def test_resume_equals_uninterrupted(base: nn.Module, splits: DataSplits, tmp_path: Path,
                                     channels_last: bool) -> None:
    config = dataclasses.replace(CFG, channels_last=channels_last)
    space = _space(base)
    full = space.build()
    ref = train_multistage(full, splits, config=config, teacher=base, out_dir=tmp_path / "a", progress=False)
    first = space.build()
    before = train_multistage(first, splits, config=config, teacher=base, out_dir=tmp_path / "b", progress=False,
                              stop_after_epochs=1)
    resumed = space.build()  # a fresh process would rebuild the network, then load the checkpoint
    out = train_multistage(resumed, splits, config=config, teacher=base, out_dir=tmp_path / "b", resume=True,
                           progress=False)
    want, got = full.state_dict(), resumed.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    clockless = [[{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]] for r in (out, ref)]
    assert clockless[0] == clockless[1]
    # the first call's epoch comes back with its time: the training's work spans both calls
    assert out["history"][0]["seconds"] == before["history"][0]["seconds"] == before["train_seconds"] > 0
    assert out["train_seconds"] == pytest.approx(before["train_seconds"] + out["history"][1]["seconds"])


def test_resume_for_another_architecture_is_refused(base: nn.Module, splits: DataSplits, tmp_path: Path) -> None:
    space = _space(base)
    train_multistage(space.build(), splits, config=CFG, teacher=base, out_dir=tmp_path, progress=False,
                     stop_after_epochs=1)
    other = space.build(space.architecture(splits=[(1, 3)], concat=[1]))
    with pytest.raises(CheckpointError, match="another architecture"):
        train_multistage(other, splits, config=CFG, teacher=base, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ConfigError, match="out_dir"):
        train_multistage(other, splits, config=CFG, teacher=base, resume=True, progress=False)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(base: nn.Module, splits: DataSplits, tmp_path: Path) -> None:
    space = _space(base)
    train_multistage(space.build(), splits, config=CFG, teacher=base, out_dir=tmp_path, progress=False,
                     stop_after_epochs=1)
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()
    msnet = space.build()
    msnet.register_forward_hook(lambda module, args, out: [z * float("nan") for z in out])
    with pytest.raises(TrainingError, match="last good checkpoint is kept"):
        train_multistage(msnet, splits, config=CFG, teacher=base, out_dir=tmp_path, resume=True, progress=False)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good
    assert not base.training


def test_stage_weights_of_another_length_are_refused(base: nn.Module, splits: DataSplits) -> None:
    config = TrainConfig(epochs=1, stage_weights=(1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="one stage weight per stage"):
        train_multistage(_space(base).build(), splits, config=config, teacher=base, progress=False)
    with pytest.raises(ConfigError, match="train.lr must be > 0"):
        train_multistage(_space(base).build(), splits, config=TrainConfig(lr=0.0), teacher=base, progress=False)


def test_a_teacher_sharing_trained_weights_is_copied(base: nn.Module, splits: DataSplits) -> None:
    from s2dnas.train.multistage import _teacher_for

    space = _space(base)
    wrapper = nn.Sequential(base)  # a network that trains the base's own parameters
    assert _teacher_for(wrapper, base, CFG) is not base
    assert _teacher_for(space.build(), base, CFG) is base
    assert _teacher_for(space.build(), base, TrainConfig(distill_weight=0.0)) is None


def test_save_and_load_multistage(base: nn.Module, splits: DataSplits, tmp_path: Path) -> None:
    space = _space(base)
    msnet = space.build(space.architecture(splits=[(1, 3)], concat=[1]))
    train_multistage(msnet, splits, config=TrainConfig(epochs=1, batch_size=32), teacher=base, progress=False,
                     evaluate_val=False)
    save_multistage(tmp_path / "ms.safetensors", msnet, metadata={"note": "x"})
    loaded = load_multistage(tmp_path / "ms.safetensors", space).eval()
    x = torch.randn(4, 1, 8, 8)
    for a, b in zip(msnet.eval()(x), loaded(x)):
        assert torch.equal(a, b)


def test_network_without_own_parameters_is_refused(base: nn.Module, splits: DataSplits) -> None:
    shared = _space(base).build(share_weights=True)  # the base owns the parameters
    with pytest.raises(ConfigError, match="trainable parameters, but it has none"):
        train_multistage(shared, splits, config=CFG, teacher=base, progress=False)
