"""``s2dnas profile``: stage timings cached per machine, reused by a second run, predicted latency."""
from __future__ import annotations

import json
import re

import pytest
import torch

from s2dnas.cli.main import main
from s2dnas.dynamic import DynamicNet
from s2dnas.dynamic.io import build_model_spec
from s2dnas.space import Space
from s2dnas.zoo import create_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    base = create_model("resnet20", num_classes=10, in_channels=1).eval()
    space = Space(base, input_shape=(1, 8, 8), num_stages=3, model_name="resnet20")
    spec = build_model_spec(space, num_classes=10, model="resnet20", class_names=[str(i) for i in range(10)],
                            mean=[0.5], std=[0.5], base_accuracy=0.9)
    out = tmp_path_factory.mktemp("profile") / "m"
    DynamicNet(space.build(space.default_architecture()).eval(), [0.9, 0.9], model_spec=spec).save(out)
    return out


def test_profile_caches_and_predicts(model_dir, tmp_path, capsys, seed):
    cache = tmp_path / "cache"
    args = ["profile", str(model_dir), "--batch-sizes", "1,4", "--repeats", "1", "--device", "cpu", "--threads", "1",
            "--exit-fractions", "0.5,0.25,0.25", "--cache-dir", str(cache)]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    first = capsys.readouterr().out
    assert "predicted ms/img" in first
    timed_first = re.search(r"(\d+) timed", first).group(1)
    assert int(timed_first) > 0
    rows = json.loads((tmp_path / "a.json").read_text())["rows"]
    assert [r["batch_size"] for r in rows] == [1, 4]
    for r in rows:
        assert r["fingerprint"]["threads"] == 1 and len(r["seconds"]) == 3
        # at batch 1 every stage runs on the one input: the prediction is the reach-weighted sum
        if r["batch_size"] == 1:
            s = r["seconds_per_input"]
            assert r["predicted_seconds_per_input"] == pytest.approx(s[0] + 0.5 * s[1] + 0.25 * s[2])
    # a second run on the same machine, threads and batches times nothing
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
    assert "0 timed" in capsys.readouterr().out
    again = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]
    assert all(all(r["cached"]) for r in again)
    # (another thread count is another cache file: tests/cost/test_latency.py)


def test_profile_without_fractions_skips_the_prediction(model_dir, tmp_path, capsys, seed):
    assert main(["profile", str(model_dir), "--batch-sizes", "2", "--repeats", "1", "--threads", "1",
                 "--device", "cpu", "--cache-dir", str(tmp_path)]) == 0
    assert "prediction skipped" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, match", [
    ("--exit-fractions", "0.5,0.6,0.1", "exit fractions in \\[0, 1\\] summing to 1"),
    ("--exit-fractions", "a,b,c", "Expected --exit-fractions like"),
    ("--batch-sizes", "0", "positive --batch-sizes"),
    ("--threads", "0", "--threads >= 1"),
])
def test_profile_bad_options(model_dir, tmp_path, capsys, flag, value, match):
    assert main(["profile", str(model_dir), flag, value, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err


def test_profile_help(capsys):
    with pytest.raises(SystemExit) as err:
        main(["profile", "--help"])
    assert err.value.code == 0
    assert "--exit-fractions" in capsys.readouterr().out
