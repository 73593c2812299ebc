"""SDN-style early exits (Kaya et al. 2019): internal classifiers attached to an unchanged base model.

The base graph is cut where a single tensor carries everything later layers need (between two
residual blocks, after a VGG layer), and stage ``s`` runs the layers between cut ``s-1`` and cut
``s`` and an exit head on the tensor at cut ``s``. The last stage ends with the base model's own
classifier. The result is a :class:`~s2dnas.space.MultiStageNet` (stage ``s`` reads the feature
stage ``s-1`` wrote), so :class:`~s2dnas.dynamic.DynamicNet`, calibration, MAC counting and the
speed benchmark treat it exactly like an S2DNAS network. Unlike S2DNAS, every exit pays for all
layers before it at full width.

Example:
    >>> import torch
    >>> from s2dnas.zoo import create_model
    >>> base = create_model("resnet20", num_classes=10, in_channels=1).eval()
    >>> net = attach_exits(base, num_stages=3, input_shape=(1, 16, 16)).eval()
    >>> x = torch.randn(2, 1, 16, 16)
    >>> torch.equal(net(x)[-1], base(x))  # the last stage is the base model
    True
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import fx, nn

from s2dnas.errors import ConfigError, UnsupportedModelError
from s2dnas.space.multistage import MultiStageNet

__all__ = ["ExitHead", "EarlyExitNet", "cut_points", "attach_exits", "freeze_trunk"]

_MIXING = (nn.Conv2d, nn.Linear)


class EarlyExitNet(MultiStageNet):
    """A :class:`MultiStageNet` of base-model segments with exit heads; with ``frozen`` set, only
    the heads train and the trunk's batch norms stay in eval mode in training mode."""

    frozen: bool = False

    def train(self, mode: bool = True) -> EarlyExitNet:
        super().train(mode)
        if self.frozen:
            for stage in self.stages:
                for name, child in stage.named_children():
                    if name != "exit_head":
                        child.train(False)
        return self


class ExitHead(nn.Module):
    """An internal classifier: average pool to ``pool x pool``, flatten, linear."""

    def __init__(self, channels: int, num_classes: int, *, pool: int = 2) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Linear(channels * pool * pool, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - tracing raises many unrelated types
        raise UnsupportedModelError(
            f"Cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); early exits need a "
            "traceable model") from None


def cut_points(gm: fx.GraphModule) -> list[str]:
    """Names of the nodes after which the graph can be cut: every later node reads, of everything
    computed so far, only that node (so one cached tensor carries the state). In graph order;
    the input, conv outputs (their batch norm must stay in the same stage) and the nodes after
    the last conv are excluded."""
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    modules = dict(gm.named_modules())
    last_conv = max((i for i, n in enumerate(nodes) if n.op == "call_module"
                     and isinstance(modules.get(str(n.target)), nn.Conv2d)), default=-1)
    position = {n: i for i, n in enumerate(nodes)}
    # the furthest position at which each node is still read (the output counts as the end)
    last_use = {n: max((position.get(u, len(nodes)) for u in n.users), default=i) for i, n in enumerate(nodes)}
    cuts, live_until = [], -1
    for i, n in enumerate(nodes[:last_conv]):
        # the cut after n is valid when no node before n is read after n
        # not right after a conv: its batch norm would land in the next stage, unfoldable
        after_conv = n.op == "call_module" and isinstance(modules.get(str(n.target)), _MIXING)
        if n.op in ("call_module", "call_function", "call_method") and not after_conv:
            if live_until <= i and last_use[n] > i:
                cuts.append(n.name)
        live_until = max(live_until, last_use[n])
    return cuts


def _shapes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Shape of every node's output for a batch of 2 (nodes that are not tensors: ``()``)."""
    from torch.fx.passes.shape_prop import ShapeProp

    ref = next(gm.parameters(), None)
    x = torch.zeros(2, *input_shape, dtype=ref.dtype if ref is not None else torch.float32,
                    device=ref.device if ref is not None else None)
    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    gm.train(was_training)
    shapes = {}
    for n in gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        shapes[n.name] = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()
    return shapes


def _segment(gm: fx.GraphModule, start: str | None, end: str | None, *, head: nn.Module | None,
             name: str) -> fx.GraphModule:
    """The nodes after ``start`` (the input if None) up to ``end`` (the output if None) as a stage
    ``(x, [feature]) -> (logits, [feature at end])``."""
    graph = fx.Graph()
    x = graph.placeholder("x")
    env: dict[str, fx.Node] = {}
    feat = graph.placeholder("feature") if start is not None else None
    active = start is None
    out: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = x
            continue
        if not active:
            if node.name == start:
                env[node.name] = feat  # type: ignore[assignment]
                active = True
            continue
        if node.op == "output":
            out = fx.node.map_arg(node.args[0], lambda n: env[n.name])  # type: ignore[assignment]
            break
        env[node.name] = graph.node_copy(node, lambda n: env[n.name])
        if node.name == end:
            break
    root = nn.Module()
    for target in {str(n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")}:
        _set_attr(root, target, _get_attr(gm, target))
    if end is not None:
        root.add_module("exit_head", head)
        logits = graph.call_module("exit_head", (env[end],))
        graph.output((logits, env[end]))
    else:
        graph.output((out,))
    graph.lint()
    return fx.GraphModule(root, graph, class_name=name)


def _get_attr(gm: fx.GraphModule, target: str) -> nn.Module | torch.Tensor:
    value: object = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value  # type: ignore[return-value]


def _set_attr(root: nn.Module, target: str, value: nn.Module | torch.Tensor) -> None:
    *path, leaf = target.split(".")
    owner = root
    for part in path:
        if not hasattr(owner, part):
            owner.add_module(part, nn.Module())
        owner = getattr(owner, part)
    if isinstance(value, nn.Module):
        owner.add_module(leaf, value)
    elif isinstance(value, nn.Parameter):
        owner.register_parameter(leaf, value)
    else:
        owner.register_buffer(leaf, value)


def attach_exits(base: nn.Module, *, num_stages: int, input_shape: tuple[int, ...], num_classes: int | None = None,
                 cuts: Sequence[str] | None = None, pool: int = 2) -> EarlyExitNet:
    """Attach ``num_stages - 1`` exit heads to a copy of ``base`` (the base model is not modified).

    Args:
        base: the trained static model (traceable with ``torch.fx``).
        num_stages: S, the number of exits including the base model's own classifier.
        input_shape: ``(C, H, W)`` of one input.
        num_classes: classes of the exit heads; default: the base's output size.
        cuts: node names to cut after (see :func:`cut_points`); default: the cut points closest
            to ``1/S, 2/S, ...`` of the base's MACs, after the activation where there is one.
        pool: the heads average-pool to ``pool x pool`` before their linear layer.

    Returns:
        An :class:`EarlyExitNet` whose last stage computes exactly ``base(x)``.

    Raises:
        ConfigError: ``num_stages`` or ``pool`` below 1.
        UnsupportedModelError: the model cannot be traced, has too few cut points, or a cut is
            not a 4-D feature map.
    """
    if not isinstance(num_stages, int) or num_stages < 1 or not isinstance(pool, int) or pool < 1:
        raise ConfigError(f"Expected num_stages >= 1 and pool >= 1, but got num_stages={num_stages!r}, pool={pool!r}")
    gm = _trace(copy.deepcopy(base))
    for p in gm.parameters():  # a copy of a frozen base (requires_grad False) must train when asked
        p.requires_grad_(True)
    for m in gm.modules():  # an in-place activation would overwrite a cached feature an exit head saved
        if getattr(m, "inplace", False):
            m.inplace = False
    available = cut_points(gm)
    shapes = _shapes(gm, input_shape)
    if cuts is None:
        cuts = _spread(gm, available, num_stages - 1, shapes)
    bad = [c for c in cuts if c not in available]
    if bad or len(cuts) != num_stages - 1 or len(set(cuts)) != len(cuts):
        raise UnsupportedModelError(
            f"Expected {num_stages - 1} distinct cut points among {available}, but got {list(cuts)}; pass fewer "
            "stages or other cuts")
    order = [n.name for n in gm.graph.nodes]
    cuts = sorted(cuts, key=order.index)
    if num_classes is None:
        output = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        num_classes = int(shapes[output.name][-1])
    stages, reads, writes = [], [], []
    bounds = [None, *cuts, None]
    for s in range(num_stages):
        start, end = bounds[s], bounds[s + 1]
        head = None
        if end is not None:
            shape = shapes[end]
            if len(shape) != 4:
                raise UnsupportedModelError(f"Expected a 4-D feature map at cut {end!r}, but got shape {shape}")
            head = ExitHead(shape[1], num_classes, pool=pool)
        stages.append(_segment(gm, start, end, head=head, name=f"Exit{s + 1}"))
        reads.append([f"{start}@0"] if start is not None else [])
        writes.append([f"{end}@0"] if end is not None else [])
    macs = [0] * num_stages  # analytic MACs are an S2DNAS build by-product; stage_macs() counts these
    return EarlyExitNet(stages, reads=reads, writes=writes, architecture={"kind": "early_exit", "cuts": list(cuts)},
                        input_shape=tuple(input_shape), analytic_macs=macs)


def _spread(gm: fx.GraphModule, available: Sequence[str], count: int, shapes: dict[str, tuple[int, ...]]
            ) -> list[str]:
    """``count`` cut points, the ``k``-th where the base's cumulative MACs come closest to
    ``k / (count + 1)`` of its total (SDN spaces its exits by cost); among points with the same
    MACs before them, the last one (after the activation, not before it)."""
    modules = dict(gm.named_modules())
    macs_before, seen = {}, 0
    for n in gm.graph.nodes:
        m = modules.get(str(n.target)) if n.op == "call_module" else None
        if isinstance(m, nn.Conv2d) and shapes.get(n.name):
            out = shapes[n.name]
            seen += out[1] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] * out[2] * out[3]
        elif isinstance(m, nn.Linear):
            seen += m.in_features * m.out_features
        macs_before[n.name] = seen
    if len(available) < count:
        raise UnsupportedModelError(f"Expected at least {count} cut points, but the model has {len(available)}: "
                                    f"{list(available)}; use fewer stages")
    chosen: list[str] = []
    for k in range(1, count + 1):
        goal = k * seen / (count + 1)
        options = [c for c in available if not chosen or macs_before[c] > macs_before[chosen[-1]]]
        if not options:
            raise UnsupportedModelError(f"Cannot place {count} distinct exits among {list(available)}; use fewer stages")
        # min over reversed candidates: ties go to the latest node
        chosen.append(min(reversed(options), key=lambda c: abs(macs_before[c] - goal)))
    return chosen


def freeze_trunk(net: EarlyExitNet) -> EarlyExitNet:
    """Freeze every parameter except the exit heads' (SDN's "IC-only" training on a frozen base);
    the trunk's batch norms then stay in eval mode when the network trains."""
    for stage in net.stages:
        for name, p in stage.named_parameters():
            p.requires_grad_(name.startswith("exit_head."))
    net.frozen = True
    return net.train(net.training)
