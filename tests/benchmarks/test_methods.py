"""The method benchmark at smoke scale on synthetic Fashion-MNIST-shaped data: the result file
follows issue 6's schema, every method goes through the same calibration, and a rerun resumes
from the per-method cache instead of training again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli._synthetic import write_band_dataset

pytest.importorskip("matplotlib")
methods = pytest.importorskip("benchmarks.methods")

SUBSET = ["static_base", "static_x0.5", "sdn_frozen", "sdn_joint", "cascade", "s2dnas_handpicked", "s2dnas_random",
          "ablation_no_concat"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    (root / "data").mkdir()
    data = write_band_dataset(root / "data", n_train=500, n_test=120)
    result = root / "methods.json"
    kw = dict(model="resnet20", scale="smoke", out=root / "cache", dataset="fashion-mnist", data_dir=str(data),
              val_size=100, methods=SUBSET, result_path=result)
    # as `make bench` does: train and evaluate first, then time every network rebuilt from the cache
    trained = methods.run_benchmark(**kw, speed=False)
    assert all(p["measured_speedup"] is None for r in trained["methods"].values() for p in r["points"])
    timed = methods.run_benchmark(**kw, speed=True)
    for name, r in timed["methods"].items():  # the rebuilt networks are the evaluated ones
        t = trained["methods"][name]
        assert r["stage_test_accuracy"] == t["stage_test_accuracy"] and r["stage_macs"] == t["stage_macs"], name
    return timed, root


def test_result_file_follows_the_schema(smoke: tuple[dict, Path]) -> None:
    data, root = smoke
    assert json.loads((root / "methods.json").read_text()) == json.loads(json.dumps(data))
    assert data["dataset"] == "fashion-mnist" and data["base_model"] == "resnet20"
    assert set(data["machine"]) >= {"processor", "cpu_count", "torch", "threads"}
    assert data["base"]["macs"] == 31_021_952 and 0 <= data["base"]["test_accuracy"] <= 1
    assert list(data["methods"]) == SUBSET
    for name, r in data["methods"].items():
        assert r["points"], name
        for p in r["points"]:
            assert set(p) >= {"test_accuracy", "macs", "measured_speedup", "timed_macs_ratio"}
            assert 0 <= p["test_accuracy"] <= 1 and p["macs"] > 0 and p["measured_speedup"] > 0
            assert p["timed_macs_ratio"] > 0
        assert r["scale"] == "smoke"
        assert "build_seconds" in r


def test_every_method_is_calibrated_and_counted_the_same_way(smoke: tuple[dict, Path]) -> None:
    data, root = smoke
    m, base_macs = data["methods"], data["base"]["macs"]
    # the static base as a one-stage network: exactly the base's MACs and test accuracy
    assert m["static_base"]["points"][0]["macs"] == base_macs
    assert m["static_base"]["points"][0]["test_accuracy"] == data["base"]["test_accuracy"]
    assert m["static_x0.5"]["points"][0]["macs"] == 7_783_872  # ResNet-20 at half width, 28x28
    # the cascade's stages are the half-width model and the base, nothing shared
    assert m["cascade"]["stage_macs"] == [7_783_872, base_macs]
    # SDN exits on the base: the trunk segments add up to the base plus the three linear heads
    assert len(m["sdn_frozen"]["stage_macs"]) == 4 and sum(m["sdn_frozen"]["stage_macs"]) > base_macs
    # the frozen trunk leaves the last exit equal to the base model
    assert m["sdn_frozen"]["stage_test_accuracy"][-1] == data["base"]["test_accuracy"]
    for name, r in m.items():
        op = next(p for p in r["points"] if p["operating_point"])
        assert op["macs_ratio"] == pytest.approx(base_macs / op["macs"])
        # operating point MACs lie between the first stage alone and every stage
        assert r["stage_macs"][0] <= op["macs"] <= sum(r["stage_macs"]) + 1e-6, name
    assert m["s2dnas_random"]["search_seconds"] > 0 and "architecture" in m["s2dnas_random"]
    # joint SDN training moved the trunk away from the base; frozen training did not
    from s2dnas.train.checkpoint import load_weights
    from s2dnas.zoo import create_model

    base = create_model("resnet20", num_classes=10, in_channels=1, pretrained=True).state_dict()
    joint, _ = load_weights(root / "cache" / "sdn_joint" / "final.safetensors")
    frozen, _ = load_weights(root / "cache" / "sdn_frozen" / "final.safetensors")
    assert not torch.equal(joint["stages.0.conv1.weight"], base["conv1.weight"])
    assert torch.equal(frozen["stages.0.conv1.weight"], base["conv1.weight"])
    # without concat, stage 1 is the same and the later stages read nothing: fewer MACs each
    hand, alone = m["s2dnas_handpicked"]["stage_macs"], m["ablation_no_concat"]["stage_macs"]
    assert alone[0] == hand[0] and all(a < h for a, h in zip(alone[1:], hand[1:]))
    assert set(m["ablation_no_concat"]["architecture"]["concat"]) == {3}  # 3 resolution groups: "never"


def test_rerun_reads_the_cache_and_writes_table_and_plot(smoke: tuple[dict, Path]) -> None:
    data, root = smoke
    again = methods.run_benchmark(model="resnet20", scale="smoke", out=root / "cache", dataset="fashion-mnist",
                                  data_dir=str(root / "data"), val_size=100, methods=SUBSET,
                                  result_path=root / "again.json", speed=False)
    assert again["methods"] == json.loads(json.dumps(data["methods"]))  # nothing retrained or re-measured
    with pytest.raises(SystemExit, match=r"holds a result of scale 'smoke', not 'small'"):
        methods.run_benchmark(model="resnet20", scale="small", out=root / "cache", dataset="fashion-mnist",
                              data_dir=str(root / "data"), val_size=100, methods=["static_base"],
                              result_path=root / "wrong.json", speed=False)
    text = methods.table(again)
    first = text.split("\n\n")[1].splitlines()  # the operating-point table: header, rule, one row per method
    assert [row.split(" | ")[0][2:] for row in first[2:]] == SUBSET and "our measurements" in text.lower()
    assert all(f"| {name} |" in text.split("\n\n")[3] for name in SUBSET)  # the iso-accuracy table
    methods.plot(again, root / "plot.png")
    assert (root / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_handpicked_rows_use_the_configured_space_like_the_searched_rows() -> None:
    """The hand-picked and ablation rows build their space with every configured option (the channel
    multiple included), as run_pipeline does for the searched rows."""
    from types import SimpleNamespace

    from s2dnas.config import load_config
    from s2dnas.zoo import create_model

    ctx = SimpleNamespace(base=create_model("resnet20", num_classes=10, in_channels=1),
                          splits=SimpleNamespace(input_shape=(1, 28, 28)), spec=SimpleNamespace(name="resnet20"))
    configured = load_config(None).space
    assert configured.channel_multiple > 1  # otherwise this test shows nothing
    space = methods._space(ctx)
    assert space.channel_multiple == configured.channel_multiple
    assert methods._space(ctx, num_stages=2).num_stages == 2
