"""Where does the batch-1 time go in ONNX Runtime, per stage and per thread count? (issue 13)

    python -m benchmarks.ort_batch1 RUN > benchmarks/results/ort_batch1.json

RUN is an ``s2dnas run`` directory (``RUN/model`` and ``RUN/export``). On its first 256 test images, one
image at a time (median of 5 passes, microseconds per image): the base exported to ONNX, the
exported dynamic network's ``OnnxDynamicNet.predict``, each stage's session alone, the numpy
confidence, with 1 and 2 intra-op threads; and the eager PyTorch base and DynamicNet at 1 and 2
threads. Not interleaved: run it on a quiet machine.
"""
import json, statistics, sys, tempfile, time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from s2dnas.data import splits_for_model
from s2dnas.dynamic import load
from s2dnas.export.onnx import export_stage_onnx
from s2dnas.bench.onnx_speed import ort_session
from s2dnas.train.evaluate import load_base_model
from s2dnas_runtime import OnnxDynamicNet
from s2dnas_runtime.confidence import confidence_np

torch.set_num_threads(2)
run = Path(sys.argv[1])
dyn = load(run / "model", device="cpu").eval()
spec = dyn.model_spec or {}
splits = splits_for_model(spec.get("data"), dataset=None, data_dir=None, need_val=False, source=str(run))
base, _, _ = load_base_model(splits=splits, model_name=spec.get("model"), weights=None)
n = 256
x = np.stack([splits.test[i][0].numpy() for i in range(n)]).astype(np.float32)
tmp = Path(tempfile.mkdtemp())
export_stage_onnx(base.eval(), (torch.zeros(2, 1, 28, 28),), tmp / "base.onnx", input_names=["image"], output_names=["logits"])


def per_image(fn, reps=5):
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(times[1:])


out = {}
# ONNX Runtime's worker threads spin after each run by default; "nospin" turns that off
# (session option session.intra_op.allow_spinning=0) for sessions made while it is set
_options = ort.SessionOptions


def _no_spin_options() -> object:
    options = _options()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


for threads, spin in ((1, True), (2, True), (2, False)):
    ort.SessionOptions = _options if spin else _no_spin_options
    net = OnnxDynamicNet(run / "export", num_threads=threads)
    base_sess = ort_session(tmp / "base.onnx", threads=threads)
    ort.SessionOptions = _options
    feats = {}
    stage_inputs = []
    for s in range(net.num_stages):
        stage_inputs.append(dict(feats))
        net.run_stage(s, x[:1], feats)
    res = {}
    res["base_us"] = per_image(lambda i: base_sess.run(["logits"], {"image": x[i:i + 1]}))
    res["predict_us"] = per_image(lambda i: net.predict(x[i:i + 1]))
    for s in range(net.num_stages):
        def one(i, s=s):
            f = dict(stage_inputs[s])
            net.run_stage(s, x[i:i + 1], f)
        res[f"stage{s + 1}_us"] = per_image(one)
    logits = base_sess.run(["logits"], {"image": x[:1]})[0]
    res["confidence_np_us"] = per_image(lambda i: confidence_np(logits, "max_softmax"))
    res["exits"] = np.bincount(net.predict(x)[1], minlength=3).tolist()
    out[f"ort_threads{threads}" + ("" if spin else "_nospin")] = res
# PyTorch: the DynamicNet and the base, eager, at 1 and 2 threads (bench's frozen variants not rebuilt here)
xt = torch.from_numpy(x)
for threads in (1, 2):
    torch.set_num_threads(threads)
    with torch.inference_mode():
        out[f"torch_threads{threads}"] = {
            "base_us": per_image(lambda i: base(xt[i:i + 1])),
            "dynamic_us": per_image(lambda i: dyn(xt[i:i + 1]))}
print(json.dumps(out, indent=1))
