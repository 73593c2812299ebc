"""The package's imports point down the pipeline and form no circle (issue 16).

Every ``import`` of an ``s2dnas`` module is read from the source with ``ast`` (imports inside
functions included: a deferred import that hides a circle is still a circle), mapped to the layer
of the subpackage it names, and checked against the layer order the README's design section
gives. A violation names the importing file, the line and both layers. A subpackage never imports
the top package (``import s2dnas``, ``from s2dnas import __version__``): it sits above every layer,
and a name it re-exports is imported from the module that defines it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. Packages in one layer may import each other (without circles).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_io", "_device", "_version", "config", "distributed"),  # infrastructure: process groups need only errors
    ("zoo", "data", "graph", "cost"),
    ("space",),
    ("train", "baselines"),
    ("dynamic",),
    ("search", "export", "bench", "report", "deploy"),
    ("runner",),
    ("cli", "__main__", "__init__"),
)
_LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, roots: tuple[str, ...] = ("s2dnas",)) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` of a package named in ``roots``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports are for annotations only: never executed
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    if not path.is_relative_to(SRC):  # benchmarks/: plain scripts, absolute imports only
        package = ""
    else:
        package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in roots]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] not in roots:
                continue
            if module == "s2dnas" or not node.module and node.level:
                # `from s2dnas import x` / `from . import x`: x may be a subpackage
                found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _files() -> list[Path]:
    return sorted((SRC / "s2dnas").rglob("*.py"))


def test_every_subpackage_has_a_layer():
    tops = {_top(_module_name(p)) for p in _files()}
    assert tops - set(_LAYER) == set(), "add the new subpackage to LAYERS (and the README's design section)"


def test_imports_point_down_the_pipeline():
    bad = []
    for path in _files():
        own = _top(_module_name(path))
        if own in ("__init__", "__main__"):
            continue
        for line, module in _imports(path):
            target = _top(module)
            if target not in _LAYER or target in ("__init__", "__main__"):
                bad.append(f"{path.relative_to(SRC)}:{line} ({own}) imports {module}: the top package or a name "
                           "it re-exports; import it from the subpackage that defines it")
            elif _LAYER[target] > _LAYER[own]:
                bad.append(f"{path.relative_to(SRC)}:{line} ({own}, layer {_LAYER[own]}) imports {module} "
                           f"({target}, layer {_LAYER[target]})")
    assert not bad, "\n".join(bad)


def _module_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _files()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for _, target in _imports(path):
            while target and target not in modules:  # `from s2dnas.x import name` where name is not a module
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and target != "s2dnas":
                graph[name].add(target)
    return graph


def test_no_import_circles():
    graph = _module_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_runtime_does_not_import_the_torch_library():
    for path in sorted((SRC / "s2dnas_runtime").rglob("*.py")):
        for line, module in _imports(path, roots=("s2dnas", "torch", "torchvision")):
            pytest.fail(f"{path.relative_to(SRC)}:{line} imports {module}: the runtime must stay torch-free")


def test_benchmarks_use_the_library_not_the_cli():
    bad = []
    for path in sorted((SRC.parent / "benchmarks").glob("*.py")):
        for line, module in _imports(path):
            if _top(module) == "cli":
                bad.append(f"benchmarks/{path.name}:{line} imports {module}")
    assert not bad, "\n".join(bad)
