"""Unit tests of graph/analysis.py: the dimension each node gets, ties, ranges, rewrites, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2dnas.errors import UnsupportedModelError
from s2dnas.graph import analyze
from s2dnas.graph.analysis import INPUT, OUTPUT, Dim, Part

SHAPE = (3, 8, 8)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.fc = nn.Linear(16 * 4, 5)

    def forward(self, x):
        a = F.relu(self.a(x))
        y = a + self.b(a)  # ties a's and b's output classes
        y = self.dw(y)  # grouped: granularity 2
        z = torch.cat([y, a], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(z, 2), 1))


def test_classes_ties_granularity_and_flatten():
    an = analyze(Toy(), input_shape=SHAPE)
    a_cls = an.mixing["a"].out_cls
    assert an.mixing["b"].out_cls == a_cls  # the residual add tied them: one class, two producers
    assert list(an.classes) == [a_cls] and an.classes[a_cls].producers == ["a", "b"]
    assert an.classes[a_cls].granularity == 2 and an.classes[a_cls].segments == ((0, 8),)
    assert an.mixing["a"].in_dim == Dim((Part(INPUT, 1, 0, 3),))
    # cat of two copies of the class, each channel flattened into 2 x 2 features
    assert an.mixing["fc"].in_dim == Dim((Part(a_cls, 4, 0, 8), Part(a_cls, 4, 0, 8)))
    assert an.dim_size(an.mixing["fc"].in_dim) == 64
    assert an.head == "fc" and an.output == "fc" and an.mixing["fc"].out_cls == OUTPUT
    assert an.channelwise["dw"] == Dim((Part(a_cls, 1, 0, 8),))
    assert an.rewrites["flatten"] == ("flatten",)


class Ranges(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 12, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        t = self.a(x)
        p, q = t.split([8, 4], 1)
        return self.fc(torch.cat([self.b(q), p[:, 2:], p[:, :2]], 1).mean((2, 3)))


def test_split_and_slices_give_ranges_and_cut_the_class():
    an = analyze(Ranges(), input_shape=SHAPE)
    a, b = an.mixing["a"].out_cls, an.mixing["b"].out_cls
    assert an.mixing["b"].in_dim == Dim((Part(a, 1, 8, 12),))
    assert an.mixing["fc"].in_dim == Dim((Part(b, 1, 0, 4), Part(a, 1, 2, 8), Part(a, 1, 0, 2)))
    assert an.classes[a].segments == ((0, 2), (2, 8), (8, 12))
    kind, axis, pieces = an.rewrites["split"]
    assert (kind, axis) == ("split", 1) and [an.dim_size(p) for p in pieces] == [8, 4]


class Shuffled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        t = torch.cat([self.a(x), self.b(x)], 1)
        b, c, h, w = t.shape
        t = t.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(t.mean((2, 3)))


def test_channel_shuffle_interleaves_without_tying():
    an = analyze(Shuffled(), input_shape=SHAPE)
    a, b = an.mixing["a"].out_cls, an.mixing["b"].out_cls
    assert a != b
    assert an.mixing["fc"].in_dim == Dim((Part(a, 1, 0, 1), Part(b, 1, 0, 1), Part(a, 1, 1, 2), Part(b, 1, 1, 2)))
    (gather,) = [rw for rw in an.rewrites.values() if rw[0] == "gather"]
    assert gather[3] == (0, 2, 1, 3)


class LayerScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.gamma = nn.Parameter(torch.ones(4, 1, 1))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.a(x).permute(0, 2, 3, 1)
        y = F.layer_norm(y, (4,))  # no parameters: a plain function of the channels
        return self.fc((self.gamma * y.permute(0, 3, 1, 2)).mean((2, 3)))


def test_per_channel_parameters_and_axes():
    model = LayerScale()
    with pytest.raises(UnsupportedModelError, match="node 'layer_norm'.*not one norm module's"):
        analyze(model, input_shape=SHAPE)

    class Scaled(LayerScale):
        def forward(self, x):
            return self.fc((self.gamma * self.a(x)).mean((2, 3)))

    an = analyze(Scaled(), input_shape=SHAPE)
    (ps,) = an.params.values()
    assert ps.target == "gamma" and ps.axis == 0 and ps.dim == Dim((Part(an.mixing["a"].out_cls, 1, 0, 4),))


def test_channels_last_linear_reads_the_last_axis():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.mlp = nn.Linear(4, 6)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            y = self.mlp(self.a(x).permute(0, 2, 3, 1))
            return self.fc(y.mean((1, 2)))

    an = analyze(M(), input_shape=SHAPE)
    assert an.axes["permute"] == 3 and an.axes["mlp"] == 3 and an.axes["mean"] == 1
    assert an.mixing["mlp"].group == an.mixing["a"].group  # same resolution, channels last


@pytest.mark.parametrize("forward, node, why", [
    (lambda m, x: m.fc(m.a(x).mean((2, 3))) + 1, "add", None),
    (lambda m, x: (m.fc(m.a(x).mean((2, 3))), 0), "output", "return only the classifier's output"),
    (lambda m, x: m.fc(m.a(x).sum(1).flatten(1)[:, :4]), "sum_1", "reduction over the channels"),
    (lambda m, x: m.fc(m.a(x + 1).mean((2, 3))), None, None),
])
def test_errors_name_the_node(forward, node, why):
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return forward(self, x)

    if node is None:  # adding a constant to the image is fine: every stage reads all of it
        analyze(M(), input_shape=SHAPE)
        return
    if node == "add":  # logits + 1 keeps the logits as the output
        assert analyze(M(), input_shape=SHAPE).output == "add"
        return
    with pytest.raises(UnsupportedModelError, match=f"node '{node}'.*{why}"):
        analyze(M(), input_shape=SHAPE)


def test_untraceable_model_says_how_to_fix():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            for row in x:  # iterating a traced tensor
                x = x + row
            return self.fc(x.mean((2, 3)))

    with pytest.raises(UnsupportedModelError) as err:
        analyze(M(), input_shape=SHAPE)
    msg = str(err.value)
    assert msg.startswith("Cannot trace M with torch.fx (TraceError") or "Proxy" in msg
    assert "leaf module" in msg and "torch.fx.wrap" in msg and "\n" not in msg


def test_cli_reports_an_untraceable_model_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "branchy_model.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Branchy(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.conv = nn.Conv2d(3, 8, 3)\n"
        "        self.fc = nn.Linear(8, 10)\n\n"
        "    def forward(self, x):\n        x = self.conv(x)\n        if x.sum() > 0:\n            x = x * 2\n"
        "        return self.fc(x.mean((2, 3)))\n\n"
        "def build(num_classes=10, in_channels=3):\n    return Branchy()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "s2dnas", "space", "--model", "branchy_model:build",
                           "--input-shape", "3,16,16"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("s2dnas: error: Cannot trace Branchy with torch.fx (TraceError")
    assert "torch.where" in line
