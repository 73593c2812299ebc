"""The splits a pipeline step builds on a trained base model (train/evaluate.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from s2dnas.config import load_config
from s2dnas.errors import ConfigError
from s2dnas.runner import run_pipeline, train_supernet_step
from s2dnas.train.evaluate import base_splits
from tests.cli._synthetic import write_band_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_band_dataset(tmp_path_factory.mktemp("fmnist"), n_train=60, n_test=20)


def test_model_input_shape_must_be_the_base_data_shape(data: Path) -> None:
    kw = dict(dataset="fashion-mnist", data_dir=str(data), val_size=10, seed=0, weights=None)
    assert base_splits(**kw, input_shape=(1, 28, 28)).input_shape == (1, 28, 28)
    assert base_splits(**kw).input_shape == (1, 28, 28)  # None: taken from the data
    with pytest.raises(ConfigError, match=r"model.input_shape .* inputs \[1, 28, 28\], but got \[3, 32, 32\]; "
                                          r"set model.input_shape to \[1, 28, 28\] or null"):
        base_splits(**kw, input_shape=(3, 32, 32))


def test_run_and_supernet_read_model_input_shape(data: Path, tmp_path: Path) -> None:
    """``s2dnas run`` and ``s2dnas supernet`` check the key like ``s2dnas train`` (it was ignored)."""
    cfg = load_config(None, [("data.dataset", "fashion-mnist"), ("data.data_dir", str(data)),
                             ("data.val_size", 10), ("model.input_shape", [1, 32, 32])])
    with pytest.raises(ConfigError, match=r"but got \[1, 32, 32\]"):
        train_supernet_step(cfg, out=tmp_path / "supernet", resume=False, overwrite=False, progress=False)
    assert not (tmp_path / "supernet").exists()
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"but got \[1, 32, 32\]"):
        run_pipeline(cfg, out=tmp_path / "run", progress=False)
