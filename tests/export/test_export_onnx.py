"""Export to ONNX / TorchScript and the torch-free ONNX Runtime runner.

Every exported stage must equal its PyTorch stage, and ``OnnxDynamicNet`` must route exactly as
the reference rule computed from all stages' logits (``s2dnas.dynamic.reference_forward``) and
as the PyTorch ``DynamicNet``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import s2dnas_runtime  # noqa: E402
from s2dnas.deploy import OnnxDynamicNet, read_manifest  # noqa: E402
from s2dnas.dynamic import DynamicNet, ExitPolicy, build_model_spec, confidence, reference_forward  # noqa: E402
from s2dnas.dynamic import confidence_np as dynamic_confidence_np  # noqa: E402
from s2dnas.errors import CalibrationError, ConfigError, ExportError  # noqa: E402
from s2dnas.export import export_dynamic, load_torchscript, plan_features  # noqa: E402
from s2dnas.space import Space  # noqa: E402
from s2dnas.zoo import create_model  # noqa: E402
from s2dnas_runtime import Preprocessing  # noqa: E402
from tests._models import spread_batch_norms  # noqa: E402


def P(*thresholds: float) -> ExitPolicy:  # noqa: N802 - short helper for a policy with these thresholds
    return ExitPolicy(thresholds=thresholds)

pytestmark = pytest.mark.export

MEASURES = ("max_softmax", "entropy", "margin")
RESNET_SHAPE = (1, 16, 16)
TOY_SHAPE = (1, 8, 8)


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------
class ToyDwCat(nn.Module):
    """A depthwise conv, a channel cat feeding a 1x1 conv, a strided conv, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn_dw = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(32, 24, 1)
        self.down = nn.Conv2d(24, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        y = F.relu(self.bn_dw(self.dw(x)))
        x = F.relu(self.pw(torch.cat([x, y], dim=1)))
        x = F.relu(self.down(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _spread(model: nn.Module, input_shape: tuple[int, ...], seed: int, head_scale: float = 4.0) -> nn.Module:
    """Random BN affines + re-estimated statistics + a scaled head: exits disagree, confidences spread."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(head_scale)
    return spread_batch_norms(model, input_shape=input_shape, generator=torch.Generator().manual_seed(seed),
                              num_images=64)


@pytest.fixture(scope="module")
def resnet_space() -> Space:
    torch.manual_seed(0)
    model = _spread(create_model("resnet20", num_classes=10, in_channels=1), RESNET_SHAPE, seed=0)
    return Space(model, input_shape=RESNET_SHAPE, num_stages=3, model_name="resnet20")


def _build(case: str, resnet_space: Space):
    if case == "toy":
        torch.manual_seed(1)
        space = Space(_spread(ToyDwCat(), TOY_SHAPE, seed=1, head_scale=32.0), input_shape=TOY_SHAPE, num_stages=3, ratio_grid=4)
        return space.build(space.sample(torch.Generator().manual_seed(3))).eval()
    if case == "default":
        return resnet_space.build(resnet_space.default_architecture()).eval()
    seed = int(case.split("-")[1])
    return resnet_space.build(resnet_space.sample(torch.Generator().manual_seed(seed))).eval()


CASES = ("default", "random-1", "random-2", "toy")


@pytest.fixture(scope="module")
def exported(resnet_space: Space, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case built and exported once (with the exporter's own check on)."""
    out = {}
    for case in CASES:
        net = _build(case, resnet_space)
        c, h, w = net.input_shape
        directory = export_dynamic(net, tmp_path_factory.mktemp(case) / "export", policy=P(0.5, 0.5),
                                   class_names=[f"c{i}" for i in range(net.stages[0].fc.out_features)],
                                   preprocessing=Preprocessing(input_size=(h, w), channels=c, mean=[0.25] * c,
                                                               std=[0.5] * c))
        out[case] = (net, directory)
    return out


def _inputs(net, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *net.input_shape, generator=torch.Generator().manual_seed(seed))


def _session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# per-stage equivalence
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_onnx_stages_equal_pytorch_stages(case, exported, seed):
    net, directory = exported[case]
    manifest = read_manifest(directory)
    x = _inputs(net, 5, seed=1)  # not the export's batch size: the batch axis must be dynamic
    cache: dict[str, torch.Tensor] = {}
    for s, entry in enumerate(manifest["stages"]):
        feeds = {"image": x.numpy()}
        for inp in entry["inputs"][1:]:
            feeds[inp["name"]] = cache[inp["cache_key"]].numpy()
        got = _session(directory / entry["onnx"]).run([o["name"] for o in entry["outputs"]], feeds)
        with torch.no_grad():
            logits = net.forward_stage(s, x, cache)
        np.testing.assert_allclose(got[0], logits.numpy(), rtol=0, atol=1e-4, err_msg=f"stage {s + 1} logits")
        for out, value in zip(entry["outputs"][1:], got[1:]):
            np.testing.assert_allclose(value, cache[out["cache_key"]].numpy(), rtol=0, atol=1e-4,
                                       err_msg=f"stage {s + 1} feature {out['cache_key']}")


@pytest.mark.parametrize("case", ("default", "toy"))
def test_torchscript_round_trip_equals_eager(case, exported, seed):
    net, directory = exported[case]
    manifest = read_manifest(directory)
    x = _inputs(net, 3, seed=2)
    cache: dict[str, torch.Tensor] = {}
    for s, entry in enumerate(manifest["stages"]):
        assert entry["torchscript"] == f"stage{s + 1}.pt" and entry["torchscript_method"] == "script"
        scripted = load_torchscript(directory / entry["torchscript"])
        args = [x] + [cache[i["cache_key"]] for i in entry["inputs"][1:]]
        with torch.no_grad():
            got = scripted(*args)
            logits = net.forward_stage(s, x, cache)
        torch.testing.assert_close(got[0], logits, rtol=0, atol=1e-5)
        for out, value in zip(entry["outputs"][1:], got[1:]):
            torch.testing.assert_close(value, cache[out["cache_key"]], rtol=0, atol=1e-5)


def test_unread_features_are_not_outputs(exported):
    """A random architecture's stage 1 writes every feed but later stages read few: only those are outputs."""
    net, directory = exported["random-1"]
    manifest = read_manifest(directory)
    for s, entry in enumerate(manifest["stages"]):
        later = {k for r in net.reads[s + 1:] for k in r}
        assert [o["cache_key"] for o in entry["outputs"][1:]] == [k for k in net.writes[s] if k in later]
        assert [i["cache_key"] for i in entry["inputs"][1:]] == net.reads[s]
    assert manifest["stages"][-1]["outputs"] == [{"name": "logits", "cache_key": None}]


# ----------------------------------------------------------------------------------------------
# routing: OnnxDynamicNet == reference rule == DynamicNet
# ----------------------------------------------------------------------------------------------
def _separated(values: np.ndarray, q: float, gap: float = 2e-5) -> float:
    """A threshold near the q-quantile of ``values`` but at least gap/2 away from every value."""
    v = np.unique(values.astype(np.float64))
    if len(v) < 2:
        return float(v[0]) + gap
    order = sorted(range(len(v) - 1), key=lambda i: abs(i - q * (len(v) - 2)))
    for i in order:
        if v[i + 1] - v[i] >= gap:
            return float((v[i] + v[i + 1]) / 2)
    return float(v[-1]) + gap


@pytest.mark.parametrize("case", ("default", "random-2", "toy"))
@pytest.mark.parametrize("measure", MEASURES)
def test_runtime_routes_like_reference_and_dynamic_net(case, measure, exported, seed):
    net, directory = exported[case]
    runtime = OnnxDynamicNet(directory, num_threads=1)
    x17 = _inputs(net, 17, seed=3)
    with torch.no_grad():
        conf = [confidence(z, measure).numpy() for z in net(x17)[:-1]]
    settings = [[_separated(conf[0], 0.3), _separated(conf[1], 0.5)],
                [_separated(conf[0], 0.7), _separated(conf[1], 0.2)],
                [_separated(conf[0], 0.8), _separated(conf[1], 0.4)],
                [0.0, _separated(conf[1], 0.5)], [2.0, 0.0], [0.0, 0.0], [2.0, 2.0]]
    mixed = False  # some setting must send inputs of one batch to every exit (gathers matter then)
    for thresholds in settings:
        policy = ExitPolicy(thresholds=thresholds, confidence=measure)
        runtime.policy = policy
        dynamic = DynamicNet(net, policy).eval()
        for x in (x17, x17[5:6]):
            logits, exit_stage = runtime(x.numpy())
            ref = reference_forward(net, x, policy)
            dyn = dynamic(x)
            np.testing.assert_array_equal(exit_stage, ref.exit_stage.numpy(), err_msg=f"{thresholds}")
            np.testing.assert_array_equal(exit_stage, dyn.exit_stage.numpy())
            np.testing.assert_allclose(logits, ref.logits.numpy(), rtol=0, atol=1e-4)
            np.testing.assert_array_equal(logits.argmax(1), ref.logits.argmax(1).numpy())
            assert logits.dtype == np.float32 and exit_stage.dtype == np.int64
            assert logits.shape == (x.shape[0], ref.logits.shape[1])
            mixed = mixed or set(exit_stage.tolist()) == {0, 1, 2}
    assert mixed, "one threshold setting should send inputs of one batch to all three exits"


def test_threshold_edge_cases(exported, seed):
    net, directory = exported["default"]
    runtime = OnnxDynamicNet(directory, policy=P(0.0, 0.0), num_threads=1)
    x = _inputs(net, 9)
    with torch.no_grad():
        all_logits = [z.numpy() for z in net(x)]
    logits, exit_stage = runtime(x.numpy())
    assert (exit_stage == 0).all()
    np.testing.assert_allclose(logits, all_logits[0], rtol=0, atol=1e-4)
    runtime.policy = runtime.policy.with_thresholds([1.5, 1.5])
    logits, exit_stage = runtime(x.numpy())
    assert (exit_stage == 2).all()
    np.testing.assert_allclose(logits, all_logits[2], rtol=0, atol=1e-4)
    empty_logits, empty_exit = runtime(np.zeros((0, *RESNET_SHAPE), dtype=np.float32))
    assert empty_logits.shape == (0, 10) and empty_exit.shape == (0,)
    assert runtime.average_macs(np.array([0, 2])) == pytest.approx(
        (runtime.stage_macs[0] * 2 + runtime.stage_macs[1] + runtime.stage_macs[2]) / 2)


def test_runtime_settings_are_validated(exported):
    _, directory = exported["toy"]
    runtime = s2dnas_runtime.OnnxDynamicNet(directory, num_threads=1)
    with pytest.raises(s2dnas_runtime.PolicyError, match="2 thresholds"):
        runtime.policy = P(0.5)
    with pytest.raises(CalibrationError, match="2 thresholds"):  # the s2dnas flavour
        OnnxDynamicNet(directory, num_threads=1).policy = P(0.5)
    with pytest.raises(TypeError, match="ExitPolicy"):
        runtime.policy = [0.5, 0.5]
    assert runtime.thresholds == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        runtime(np.zeros((2, 3, 8, 8), dtype=np.float32))  # float input is taken as preprocessed


def test_numpy_confidence_equals_torch(seed):
    logits = torch.randn(64, 10) * torch.tensor([0.01, 1.0, 10.0, 100.0]).repeat(16)[:, None]
    logits[0] = torch.tensor([1000.0] + [-1000.0] * 9)  # saturated softmax
    logits[1] = 0.0  # uniform
    for measure in MEASURES:
        expected = confidence(logits, measure).numpy()
        got = s2dnas_runtime.confidence_np(logits.numpy(), measure)
        assert got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert dynamic_confidence_np is s2dnas_runtime.confidence_np  # one numpy implementation, not two
    single = np.zeros((3, 1), dtype=np.float32)
    for measure in MEASURES:
        np.testing.assert_array_equal(s2dnas_runtime.confidence_np(single, measure), np.ones(3, dtype=np.float32))


# ----------------------------------------------------------------------------------------------
# manifest, preprocessing, errors
# ----------------------------------------------------------------------------------------------
def test_manifest_fields(exported):
    net, directory = exported["default"]
    manifest = json.loads((directory / "manifest.json").read_text())
    for key in ("format", "format_version", "num_stages", "num_classes", "input_shape", "policy",
                "stage_macs", "class_names", "preprocessing", "opset", "features", "stages", "architecture"):
        assert key in manifest, key
    assert manifest["format_version"] == s2dnas_runtime.FORMAT_VERSION
    assert manifest["num_stages"] == 3 and manifest["num_classes"] == 10
    assert manifest["input_shape"] == list(RESNET_SHAPE)
    assert manifest["policy"] == P(0.5, 0.5).to_dict()
    assert manifest["stage_macs"] == net.stage_macs()
    assert manifest["class_names"] == [f"c{i}" for i in range(10)]
    assert manifest["preprocessing"] == {"input_size": list(RESNET_SHAPE[1:]), "channels": 1, "mean": [0.25],
                                         "std": [0.5]}
    assert manifest["opset"] == 17 and all(e["onnx_opset"] == 17 for e in manifest["stages"])
    assert all(e["onnx_exporter"] == "torchscript" for e in manifest["stages"])
    assert manifest["architecture"] == net.architecture.to_dict()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["manifest.json"] + [f"stage{s}.{ext}" for s in (1, 2, 3) for ext in ("onnx", "pt")])
    # one name per cache entry across stages; every graph has a dynamic batch axis
    for entry in manifest["stages"]:
        for item in entry["inputs"][1:] + entry["outputs"][1:]:
            assert manifest["features"][item["name"]] == item["cache_key"]
        session = _session(directory / entry["onnx"])
        assert all(isinstance(i.shape[0], str) for i in session.get_inputs() + session.get_outputs())


def test_preprocess_applies_the_manifest_normalisation(exported):
    _, directory = exported["toy"]
    runtime = OnnxDynamicNet(directory, num_threads=1)
    raw = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8), dtype=np.uint8)
    expected = ((raw.astype(np.float32) / 255 - 0.25) / 0.5)[:, None]
    for layout in (raw, raw[:, None], raw[..., None]):
        out = runtime.preprocess(layout)
        assert out.dtype == np.float32 and out.shape == (4, 1, 8, 8)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(runtime.preprocess(raw.astype(np.float32) / 255), expected, atol=1e-6)
    # predict scales integer images itself: the same answer as preprocessing first
    for a, b in zip(runtime(raw), runtime(runtime.preprocess(raw))):
        np.testing.assert_array_equal(a, b)
    assert runtime.preprocess(np.zeros((4, 7, 7), dtype=np.uint8)).shape == (4, 1, 8, 8)  # resized


def _copy(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def test_missing_or_malformed_files_raise_export_error(exported, tmp_path):
    _, directory = exported["toy"]
    broken = _copy(directory, tmp_path)
    (broken / "stage2.onnx").unlink()
    with pytest.raises(ExportError, match=r"Stage 2 file .*stage2\.onnx is missing") as info:
        OnnxDynamicNet(broken)
    assert "\n" not in str(info.value)
    with pytest.raises(s2dnas_runtime.ExportError, match="stage2.onnx is missing"):
        s2dnas_runtime.OnnxDynamicNet(broken)

    broken = _copy(directory, tmp_path / "b")
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match="invalid JSON"):
        OnnxDynamicNet(broken)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["policy"]["thresholds"] = [0.5]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="2 thresholds"):
        OnnxDynamicNet(broken)
    manifest["policy"]["thresholds"] = [True, 0.5]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="booleans are not thresholds"):
        OnnxDynamicNet(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(ExportError, match="manifest.json is missing"):
        OnnxDynamicNet(broken)
    with pytest.raises(ExportError, match="does not exist"):
        OnnxDynamicNet(tmp_path / "nowhere")

    swapped = _copy(directory, tmp_path / "c")
    shutil.copy(swapped / "stage1.onnx", swapped / "stage2.onnx")  # graph does not match the manifest
    with pytest.raises(ExportError, match="Stage 2 graph"):
        OnnxDynamicNet(swapped)


def test_missing_optional_dependencies_give_a_pip_hint(exported, toy_net, tmp_path, monkeypatch):
    _, directory = exported["toy"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match=r"pip install 's2dnas\[export\]'"):
        OnnxDynamicNet(directory)
    with pytest.raises(ImportError, match=r"pip install 's2dnas\[export\]'"):
        export_dynamic(toy_net, tmp_path / "out", policy=P(0.5))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="'onnx'"):
        export_dynamic(toy_net, tmp_path / "out", policy=P(0.5), check=False)
    assert not (tmp_path / "out").exists()


def test_runtime_does_not_import_torch(exported):
    net, directory = exported["toy"]
    code = (
        "import sys, numpy as np\n"
        "import s2dnas_runtime as rt\n"
        f"net = rt.OnnxDynamicNet({str(directory)!r}, num_threads=1)\n"
        "images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8), dtype=np.uint8)\n"
        "logits, exits = net(net.preprocess(images))\n"
        "assert logits.shape == (5, 5) and exits.shape == (5,)\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 's2dnas.')) or m == 's2dnas']\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ----------------------------------------------------------------------------------------------
# export behaviour: atomic replacement, validation, training flag
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def toy_net():
    torch.manual_seed(2)
    space = Space(_spread(ToyDwCat(), TOY_SHAPE, seed=2), input_shape=TOY_SHAPE, num_stages=2, ratio_grid=4)
    return space.build(space.default_architecture()).eval()


def test_existing_export_is_replaced_only_on_success(toy_net, tmp_path, monkeypatch, seed):
    out = tmp_path / "export"
    export_dynamic(toy_net, out, policy=P(0.3), torchscript=False)
    (out / "stale.txt").write_text("from an earlier export")
    before = (out / "manifest.json").read_text()

    import s2dnas.export.onnx as export_onnx
    real = export_onnx.export_stage_onnx
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ExportError("Stage 2: simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(export_onnx, "export_stage_onnx", failing)
    with pytest.raises(ExportError, match="simulated"):
        export_dynamic(toy_net, out, policy=P(0.9), torchscript=False)
    assert (out / "stale.txt").exists() and (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "temporary directories must be removed"

    monkeypatch.setattr(export_onnx, "export_stage_onnx", real)
    toy_net.train()  # export must run in eval mode (its check would fail otherwise) and restore the flag
    export_dynamic(toy_net, out, policy=P(0.9), torchscript=False)
    assert toy_net.training
    assert not (out / "stale.txt").exists()
    assert read_manifest(out)["policy"]["thresholds"] == [0.9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_refuses_to_replace_a_directory_that_is_not_an_export(toy_net, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="refusing to replace"):
        export_dynamic(toy_net, out, policy=P(0.5), check=False, torchscript=False)
    assert (out / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_dynamic(toy_net, tmp_path / "file", policy=P(0.5), check=False, torchscript=False)


def test_invalid_export_options(toy_net, tmp_path):
    with pytest.raises(CalibrationError, match="1 thresholds"):
        export_dynamic(toy_net, tmp_path / "a", policy=P(0.5, 0.5))
    with pytest.raises(ConfigError, match="exit policy"):
        export_dynamic(toy_net, tmp_path / "a")  # a bare network needs one
    with pytest.raises(ConfigError, match=r"inputs \[1, 8, 8\]"):
        export_dynamic(toy_net, tmp_path / "a", policy=P(0.5),
                       preprocessing=Preprocessing(input_size=(16, 16), channels=1, mean=[0.1], std=[1.0]))
    with pytest.raises(ConfigError, match="5 class names"):
        export_dynamic(toy_net, tmp_path / "a", policy=P(0.5), class_names=["a", "b"], check=False,
                       torchscript=False)
    with pytest.raises(ConfigError, match="opset"):
        export_dynamic(toy_net, tmp_path / "a", policy=P(0.5), opset=True)
    assert not (tmp_path / "a").exists()
    assert list(tmp_path.iterdir()) == []


def test_plan_features_names_and_errors():
    plan = plan_features([[], ["a@0"], ["a@0", "b@1"]], [["a@0", "unused@0"], ["b@1", "c@1"], []])
    assert [p.keep for p in plan] == [(0,), (0,), ()]
    assert plan[0].outputs == (("logits", None), ("feat_0", "a@0"))
    assert plan[2].inputs == (("image", None), ("feat_0", "a@0"), ("feat_1", "b@1"))
    with pytest.raises(ExportError, match="Stage 2 reads cache key 'x@0'"):
        plan_features([[], ["x@0"]], [[], []])
    with pytest.raises(ExportError, match="written by stages 1 and 2"):
        plan_features([[], [], ["a@0"]], [["a@0"], ["a@0"], []])


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def test_cli_help():
    from s2dnas.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0


def test_cli_export_of_a_saved_dynamic_model(resnet_space, tmp_path, capsys, seed):
    from s2dnas.cli.main import main

    msnet = resnet_space.build(resnet_space.sample(torch.Generator().manual_seed(5))).eval()
    spec = build_model_spec(resnet_space, num_classes=10, model="resnet20", mean=[0.3], std=[0.7],
                            class_names=[f"k{i}" for i in range(10)])
    x = _inputs(msnet, 17, seed=4)
    with torch.no_grad():
        conf = [confidence(z, "margin").numpy() for z in msnet(x)[:-1]]
    thresholds = [_separated(conf[0], 0.4), _separated(conf[1], 0.5)]
    dynamic = DynamicNet(msnet, ExitPolicy(thresholds=thresholds, confidence="margin"), model_spec=spec).eval()
    dynamic.save(tmp_path / "model")

    code = main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--no-torchscript"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files"] == ["manifest.json", "stage1.onnx", "stage2.onnx", "stage3.onnx"]
    runtime = OnnxDynamicNet(tmp_path / "out", num_threads=1)
    assert runtime.confidence == "margin" and runtime.thresholds == pytest.approx(thresholds)
    assert runtime.preprocessing.mean == (0.3,) and runtime.class_names[3] == "k3"
    logits, exit_stage = runtime(x.numpy())
    out = dynamic(x)
    np.testing.assert_array_equal(exit_stage, out.exit_stage.numpy())
    np.testing.assert_allclose(logits, out.logits.numpy(), rtol=0, atol=1e-4)

    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "out2")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_dynamo_exporter_fallback(toy_net, tmp_path, monkeypatch):
    """If the TorchScript-based exporter fails, the torch.export-based one writes the graph."""
    real = torch.onnx.export

    def legacy_fails(*args, dynamo=True, **kwargs):
        if not dynamo:
            raise RuntimeError("simulated: unsupported op")
        return real(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", legacy_fails)
    out = export_dynamic(toy_net, tmp_path / "export", policy=P(0.5), torchscript=False)
    manifest = read_manifest(out)
    assert all(e["onnx_exporter"] == "dynamo" for e in manifest["stages"])
