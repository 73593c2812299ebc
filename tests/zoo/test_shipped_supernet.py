"""The super-network shipped for the shipped ResNet-20 / Fashion-MNIST (``search.supernet: shipped``).

It must load into the space that today's defaults build (else a changed space option, e.g. the
channel multiple, silently needs a retrained one: this test says so), be finished, and have been
trained on the default train/val cut of the default data seed, over the shipped base weights."""
from __future__ import annotations

import json

import pytest
import torch

from s2dnas.config import DataConfig, RunConfig, SpaceConfig, SupernetConfig
from s2dnas.data.preprocessing import default_val_size
from s2dnas.errors import CheckpointError
from s2dnas.space.factory import build_space
from s2dnas.train.sandwich import cheapest, most_expensive
from s2dnas.train.supernet import SuperNet
from s2dnas.train.checkpoint import weights_digest
from s2dnas.train.supernet_training import BASE_DIGEST_KEY, load_supernet
from s2dnas.zoo import create_model
from s2dnas.zoo.weights import shipped_supernet_dir

ENTRY = "resnet20_fashion_mnist"
FASHION_MNIST_TRAIN = 60000


@pytest.fixture(scope="module")
def shipped() -> tuple[SuperNet, dict]:
    base = create_model("resnet20", num_classes=10, in_channels=1, pretrained=True).eval()
    space = build_space(base, config=SpaceConfig(), input_shape=(1, 28, 28), model_name="resnet20")
    supernet = SuperNet(space)
    data = {"dataset": "fashion-mnist", "val_size": default_val_size(FASHION_MNIST_TRAIN),
            "data_seed": DataConfig().seed}
    meta = load_supernet(supernet, shipped_supernet_dir(ENTRY), data=data)  # raises on another space or cut
    return supernet.eval(), meta


def test_shipped_supernet_is_finished_and_made_from_the_defaults(shipped: tuple[SuperNet, dict]) -> None:
    _, meta = shipped
    assert meta["epoch"] == meta["epochs"] >= 1
    assert meta["context"]["model"] == {"name": "resnet20", "weights": None}  # the shipped base
    # ... whose digest it records, so a run over retrained or other resnet20 weights is refused
    assert meta[BASE_DIGEST_KEY] == weights_digest(shipped[0].teacher)
    recipe = dict(meta["config"])
    assert recipe.pop("epochs") == meta["epochs"]
    defaults = json.loads(json.dumps(SupernetConfig().__dict__))  # tuples -> lists, as stored
    defaults.pop("epochs")
    # stored resolved: None = the data section's batch size and the run's seed
    defaults.update(batch_size=DataConfig().batch_size, seed=RunConfig().seed)
    assert recipe == defaults  # only the length differs from the default recipe (stated in the README)
    sidecar = json.loads((shipped_supernet_dir(ENTRY) / "supernet.json").read_text())
    assert sidecar["config_hash"] == meta["config_hash"] and sidecar["command"].startswith("s2dnas supernet")


def test_shipped_supernet_gives_working_sub_networks(shipped: tuple[SuperNet, dict]) -> None:
    supernet, _ = shipped
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        for arch in (cheapest(supernet.space), most_expensive(supernet.space)):
            logits = supernet.extract(arch)(x)
            assert len(logits) == supernet.space.num_stages
            assert all(t.shape == (4, 10) and torch.isfinite(t).all() for t in logits)


def test_no_shipped_supernet_for_another_entry_says_what_ships() -> None:
    with pytest.raises(CheckpointError, match=f"no super-network ships for the base weights 'vgg16'.*{ENTRY}"):
        shipped_supernet_dir("vgg16")
