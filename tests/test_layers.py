"""The package's layers, as declared for import-linter in setup.cfg, hold in the source.

``lint-imports`` (run by .ci/run) is the contract; this test checks the same layers on
every interpreter of the tox matrix without needing import-linter, from the import
statements themselves (those inside functions included), and shows the check would
catch a lower layer importing a higher one, directly or through a public module.
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gpool"

Graph = Mapping[str, set[str]]
# The packages whose children must not import each other in a circle.
PACKAGES = ["gpool", "gpool._core", "gpool._serving", "gpool._cli", "gpool._bench"]


def declared_layers() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["importlinter:contract:layers"]["layers"].split()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every gpool module *path* imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            # `from . import x` may name a submodule.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in found if target == "gpool" or target.startswith("gpool.")}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports_of(path, name) if t in modules and t != name} for name, path in modules.items()}


def layer_of(module: str, layers: list[str]) -> int | None:
    for index, layer in enumerate(layers):
        if module == layer or module.startswith(layer + "."):
            return index
    return None


def reachable(graph: Graph, start: str) -> dict[str, str]:
    """Every module *start* imports, directly or not, with the module it came through."""
    seen: dict[str, str] = {}
    stack = [start]
    while stack:
        current = stack.pop()
        for target in graph.get(current, ()):
            if target not in seen and target != start:
                seen[target] = current
                stack.append(target)
    return seen


def layer_violations(graph: Graph, layers: list[str]) -> list[str]:
    """Chains by which a module of a lower layer reaches one of a higher layer.

    Layers are listed highest first. Modules outside every layer (``gpool`` itself and
    the public facades) are followed, so importing ``gpool.wsgi`` from the core counts.
    """
    problems = []
    for module in sorted(graph):
        own = layer_of(module, layers)
        if own is None:
            continue
        for target, via in sorted(reachable(graph, module).items()):
            other = layer_of(target, layers)
            # Reaching the package root is not a layer breach by itself: gpool/__init__
            # re-exports the core; what it leads to is checked as its own chain.
            if other is not None and other < own:
                problems.append(f"{module} reaches {target} (via {via})")
    return problems


def cycles_between_siblings(graph: Graph, parents: Iterable[str]) -> list[str]:
    """Pairs of sibling subpackages/modules that import each other, however indirectly."""
    problems = []
    for parent in parents:
        depth = parent.count(".") + 1
        children = sorted({".".join(m.split(".")[: depth + 1]) for m in graph if m.startswith(parent + ".")})

        def child_of(module: str, depth: int = depth) -> str:
            return ".".join(module.split(".")[: depth + 1])

        edges = {
            (child_of(a), child_of(b))
            for a, targets in graph.items()
            for b in targets
            if a.startswith(parent + ".") and b.startswith(parent + ".") and child_of(a) != child_of(b)
        }
        sibling_graph = {child: {b for a, b in edges if a == child} for child in children}
        for child in children:
            if child in reachable(sibling_graph, child) or any(
                child in reachable(sibling_graph, other) for other in sibling_graph[child]
            ):
                problems.append(f"{child} is in an import cycle under {parent}")
    return problems


def test_no_lower_layer_imports_a_higher_one() -> None:
    layers = declared_layers()
    assert layers == ["gpool._cli", "gpool._bench", "gpool._serving", "gpool._core"]
    assert layer_violations(import_graph(), layers) == []


def test_no_import_cycle_between_subpackages_or_modules() -> None:
    graph = import_graph()
    assert cycles_between_siblings(graph, PACKAGES) == []


def test_the_core_reads_without_the_rest() -> None:
    graph = import_graph()
    core = [m for m in graph if m.startswith("gpool._core")]
    assert len(core) >= 10
    for module in core:
        assert all(t.startswith("gpool._core") for t in reachable(graph, module)), module


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("gpool._core.pool", "gpool._serving.wsgi"),  # directly
        ("gpool._core.pool", "gpool.wsgi"),  # through a public facade
        ("gpool._serving.drain", "gpool._cli.serve"),
        ("gpool._bench.command", "gpool._cli.main"),
    ],
)
def test_the_check_catches_an_upward_import(importer: str, imported: str) -> None:
    graph = import_graph()
    graph[importer] = graph[importer] | {imported}
    assert layer_violations(graph, declared_layers())


def test_the_check_catches_a_cycle() -> None:
    graph = import_graph()
    graph["gpool._core.ready"] = graph["gpool._core.ready"] | {"gpool._core.pool"}
    assert cycles_between_siblings(graph, ["gpool._core"])


def test_every_module_is_in_a_layer_or_is_a_public_facade() -> None:
    layers = declared_layers()
    outside = sorted(m for m in import_graph() if layer_of(m, layers) is None)
    assert outside == [
        "gpool",
        "gpool.__main__",
        "gpool.cli",
        "gpool.metrics",
        "gpool.websocket",
        "gpool.workers",
        "gpool.wsgi",
    ]
