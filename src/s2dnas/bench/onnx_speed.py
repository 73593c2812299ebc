"""The same timing in ONNX Runtime: the base as one graph, the dynamic network as exported stages."""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from s2dnas.dynamic.executor import DynamicNet
from s2dnas.errors import ConfigError

__all__ = ["time_onnx", "ort_session"]


def ort_session(path: str | Path, *, threads: int) -> object:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _median_pass(fn: Callable[[np.ndarray], object], batches: Sequence[np.ndarray], *, warmup: int,
                 repeats: int) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        for x in batches:
            fn(x)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_onnx(base: nn.Module, dynamic: DynamicNet, batches: Mapping[int, Sequence[torch.Tensor]], *,
              repeats: int = 5, warmup: int = 1, threads: int | Sequence[int] = (1,)
              ) -> dict[int, tuple[tuple[float, int], tuple[float, int]]]:
    """Export ``base`` and ``dynamic`` to a temporary folder and time both in ONNX Runtime, each with
    every intra-op thread count of ``threads``, the fastest kept per model.

    Args:
        base: the static base model (exported in eval mode; ONNX Runtime folds its batch norms).
        dynamic: the dynamic network (its stages, thresholds and confidence measure are exported).
        batches: batch size -> the batches to time (the same ones the PyTorch rows used).
        repeats: timed passes (median).
        warmup: untimed passes first.
        threads: ONNX Runtime intra-op thread counts to try.

    Returns:
        batch size -> ``((base seconds, its threads), (dynamic seconds, its threads))``, seconds per
        pass over its batches.

    Raises:
        ImportError: onnx/onnxruntime missing (``pip install 's2dnas[export]'``).
        ExportError: a model could not be exported.
    """
    from s2dnas.export.onnx import export_dynamic, export_stage_onnx
    from s2dnas_runtime import OnnxDynamicNet

    counts = sorted({int(threads)} if isinstance(threads, int) else set(threads))
    if not counts or counts[0] < 1:
        raise ConfigError(f"Expected ONNX Runtime thread counts >= 1, but got {threads!r}")

    c, h, w = dynamic.input_shape
    out: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="s2dnas-bench-") as tmp:
        base_path = Path(tmp) / "base.onnx"
        was_training = base.training
        try:
            export_stage_onnx(base.eval().cpu(), (torch.zeros(2, c, h, w),), base_path, input_names=["image"],
                              output_names=["logits"])
        finally:
            base.train(was_training)
        stage_dir = Path(tmp) / "dynamic"
        export_dynamic(dynamic, stage_dir, torchscript=False, check=False)
        sessions = {t: (ort_session(base_path, threads=t), OnnxDynamicNet(stage_dir, num_threads=t))
                    for t in counts}
        for bs, tensors in batches.items():
            arrays = [np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32) for t in tensors]
            base_best, dyn_best = (math.inf, 0), (math.inf, 0)
            for t, (session, net) in sessions.items():
                base_s = _median_pass(lambda x: session.run(["logits"], {"image": x}),  # type: ignore[attr-defined]
                                      arrays, warmup=warmup, repeats=repeats)
                dyn_s = _median_pass(net.predict, arrays, warmup=warmup, repeats=repeats)
                base_best, dyn_best = min(base_best, (base_s, t)), min(dyn_best, (dyn_s, t))
            out[bs] = (base_best, dyn_best)
    return out
