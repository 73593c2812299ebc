"""train_base with a teacher (issue 14: the benchmark's static baselines get the distillation our
final training has): alpha = 0 is exactly plain training, alpha > 0 pulls the student towards the
teacher's answers, the teacher is not modified, and half a pair is refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s2dnas.errors import ConfigError
from s2dnas.train.base import BaseTrainConfig, train_base
from s2dnas.train.multistage import MultiStageLoss
from tests._models import ToyCNN, blob_splits

CFG = BaseTrainConfig(epochs=2, batch_size=32, channels_last=False, lr=0.05)


def _train(tmp: Path, name: str, **kw) -> ToyCNN:
    torch.manual_seed(0)
    model = ToyCNN(num_classes=2)
    train_base(model, blob_splits(), config=CFG, out_dir=tmp / name, model_name="toy", device=torch.device("cpu"),
               progress=False, **kw)
    return model.eval()


class _Inverted(torch.nn.Module):
    """A teacher that is sure of the wrong answer: bright middles (class 1) get class 0, and back."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(8.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, 0, 2:6, 2:6].mean(dim=(1, 2)) - 0.75
        return torch.stack([self.scale * m, -self.scale * m], dim=1)


def _teacher() -> torch.nn.Module:
    return _Inverted().eval()


def test_alpha_zero_is_plain_training_and_alpha_pulls_towards_the_teacher(tmp_path: Path) -> None:
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    plain = _train(tmp_path, "plain")
    zero = _train(tmp_path, "zero", teacher=teacher, distillation=MultiStageLoss(1, distill_weight=0.0))
    pulled = _train(tmp_path, "pulled", teacher=teacher, distillation=MultiStageLoss(1, distill_weight=5.0))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), zero.state_dict().values()))
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    val = blob_splits().val
    x, y = torch.stack([val[i][0] for i in range(len(val))]), torch.tensor([int(val[i][1]) for i in range(len(val))])
    with torch.no_grad():
        target = teacher(x).argmax(1)
        assert (target != y).float().mean() > 0.8  # the teacher is mostly wrong
        agree = {name: (m(x).argmax(1) == target).float().mean().item() for name, m in
                 (("plain", plain), ("pulled", pulled))}
    assert agree["pulled"] > agree["plain"] + 0.2


def test_a_teacher_needs_its_loss_and_no_label_smoothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a teacher and its distillation loss together"):
        _train(tmp_path, "a", teacher=_teacher())
    with pytest.raises(ConfigError, match="label_smoothing=0.1"):
        torch.manual_seed(0)
        train_base(ToyCNN(num_classes=2), blob_splits(), config=BaseTrainConfig(epochs=1, label_smoothing=0.1),
                   out_dir=tmp_path / "b", model_name="toy", device=torch.device("cpu"), progress=False,
                   teacher=_teacher(), distillation=MultiStageLoss(1))
