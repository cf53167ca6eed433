"""The layering of ``src/pystream`` holds: no upward imports, no cycles between packages.

Walks every module with :mod:`ast` (imports under ``TYPE_CHECKING`` count too: a type
that names an upper layer is still a dependency on it) and fails on a forbidden edge,
naming the importing module, so a violation is found where it was written.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "pystream"

# The server's layers, bottom up.  A package may import its own layer's leaves and
# everything below, never above (DESIGN.md: broker -> coordinators/cluster -> storage ->
# _core; the coordinators are called by the broker, never the reverse).
LAYER = {
    "_core": 0,
    "errors": 0,
    "clock": 0,
    "version": 0,
    "fileutil": 0,
    "config": 1,
    "metrics": 1,  # a leaf (prometheus-client): storage, cluster, groups and broker count in it
    "protocol": 1,
    "security": 1.5,  # principals, TLS, SASL, ACLs: used by the client, cluster and broker
    "storage": 2,
    "purgatory": 2,
    "client": 2,
    "cluster": 3,
    "coordinator": 4,
    "groups": 5,
    "txn": 6,
    "broker": 7,
    "rest": 7.5,  # the REST proxy: over the client, below the CLI; never the broker
    "connect": 7.6,  # Connect workers: over the client (may reuse rest's serving); never the broker
    "console": 7.7,  # the web console: over the client (reuses rest's serving); never the broker
    "cli": 8,
    "testing": 8,  # the pytest plugin: brokers for users' tests; reuses cli's local-cluster tools
    "aio": 2,  # the asyncio client, re-exported
    "__init__": 9,
    "__main__": 9,
}

# Packages that must never import the broker, not even for a type.
BELOW_THE_BROKER = (
    "storage",
    "metrics",
    "cluster",
    "coordinator",
    "groups",
    "txn",
    "protocol",
    "_core",
    "rest",
    "connect",
    "console",
)


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every pystream import in the tree."""
    edges = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent).with_suffix("")
        parts = list(relative.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        module = ".".join(parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts if is_package else parts[:-1]
                    base = base[: len(base) - node.level + 1]
                    names = [".".join([*base, *([node.module] if node.module else [])])]
                else:
                    names = [node.module or ""]
            else:
                continue
            edges += [(module, name) for name in names if name.startswith("pystream")]
    return edges


EDGES = _imports()


def test_the_walk_sees_the_tree() -> None:
    """A walk that found nothing would pass every rule below."""
    importers = {source for source, _ in EDGES}
    assert "pystream.broker.server" in importers
    assert ("pystream.broker.server", "pystream.groups.coordinator") in EDGES
    assert len(EDGES) > 300


def test_every_package_has_a_layer() -> None:
    packages = {_package_of(m) for m, _ in EDGES} | {_package_of(t) for _, t in EDGES}
    assert packages <= set(LAYER), f"give these packages a layer: {packages - set(LAYER)}"


@pytest.mark.parametrize("package", BELOW_THE_BROKER)
def test_nothing_below_the_broker_imports_it(package: str) -> None:
    upward = [
        f"{source} imports {target}"
        for source, target in EDGES
        if _package_of(source) == package and _package_of(target) in ("broker", "cli")
    ]
    assert not upward, "\n".join(upward)


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        f"{source} (layer {LAYER[_package_of(source)]}) imports {target} "
        f"(layer {LAYER[_package_of(target)]})"
        for source, target in EDGES
        if LAYER[_package_of(target)] > LAYER[_package_of(source)]
    ]
    assert not upward, "\n".join(upward)


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in EDGES:
        a, b = _package_of(source), _package_of(target)
        if a != b:
            graph[a].add(b)
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif len(path) < len(graph) + 1:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "package cycles:\n" + "\n".join(sorted(set(cycles)))


def test_every_api_handler_lives_in_broker_apis() -> None:
    """One place for API handlers: ``@api_handler`` is used only under broker/apis/."""
    outside = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "@api_handler(" in path.read_text() and "broker/apis" not in path.as_posix()
    ]
    assert not outside, f"API handlers outside pystream.broker.apis: {outside}"
