"""The import graph of `api/`, built from the source: no cycle, and dependencies point one way.

Read with `ast`, never by importing, so a cycle is found even where Python happens to resolve it. An edge is
every `import a.b` and `from a import b` in a module — at the top, inside functions (a deferred import is
still a dependency, and the usual way a cycle is hidden) and under `if TYPE_CHECKING:` (those count too: a
reader needs the other module to read this one, and an import kept there only to dodge a cycle is the
cycle). `from a import b` is an edge to `a.b` when `b` is a module, else to `a`; relative imports are
resolved. Importing `a.b` also runs `a/__init__.py`; that implicit edge to the parent package is not
counted — every submodule would otherwise form a cycle with a package that re-exports it.

Two levels:
- modules: no cycle at all;
- domains: a module of a layer (`api/models`, `api/routers`, `api/services`) belongs to the domain named
  by its module or package in that layer (`api.services.roster`, whether a module or a package); any other
  subpackage of `api/` is one domain (`api.channels`, `api.demo`, the worker); each top-level module of
  `api/` (plumbing: `api.settings`, `api.db` …) is its own. A cycle among domains is two domains leaning on
  each other even when no two modules do.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("api.models", "api.routers", "api.services")

# Domain cycles allowed to exist, each with what removes it. A listed cycle that no longer exists fails the
# test, so the list cannot go stale. Written from the alphabetically first domain, in import order.
KNOWN_CYCLES: set[tuple[str, ...]] = set()

# Imports that break a layering rule today, outside this change, each with what removes it. A listed import
# that no longer exists fails the test.
KNOWN_LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}

# The worker: the loop and the scheduler.
WORKER = ("api.worker",)
# Demo seeding is for the CLI (`seed-demo`, `serve --demo`) and tests only: serving a request never needs it.
DEMO = "api.demo"
# The fake providers: the CLI's `serve --demo` starts them (that wiring lives in api/cli.py); the app itself
# only ever knows provider URLs, so nothing else in api/ may import them. Tests and benchmarks use them freely.
FAKES = "api.channels.fakes"
CLI = "api.cli"


@dataclass
class Graph:
    """Modules of a source tree and the internal modules each one imports (and where)."""

    modules: dict[str, Path]
    imports: dict[str, dict[str, int]] = field(default_factory=dict)  # module → imported module → line
    external: dict[str, dict[str, int]] = field(default_factory=dict)  # module → top-level package → line

    def edges(self, module: str) -> list[str]:
        return sorted(self.imports[module])


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def build_graph(root: Path, package: str = "api") -> Graph:
    """Every module under `root/package` and its imports of modules of that package."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph = Graph(modules)

    def known(name: str) -> str | None:
        # `import a.b.c` where c is a name in a.b: the longest prefix that is one of our modules.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in modules.items():
        inside = graph.imports.setdefault(module, {})
        outside = graph.external.setdefault(module, {})
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
                ]
            for target in targets:
                if within(target, package):
                    resolved = known(target)
                    if resolved is not None and resolved != module:
                        inside.setdefault(resolved, node.lineno)
                else:
                    outside.setdefault(target.partition(".")[0], node.lineno)
    return graph


def domain(module: str) -> str:
    parts = module.split(".")
    if ".".join(parts[:2]) in LAYERS:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def domain_graph(graph: Graph) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Domain → imported domain → the module imports behind that edge."""
    domains: dict[str, dict[str, list[tuple[str, str]]]] = {domain(m): {} for m in graph.modules}
    for module, targets in graph.imports.items():
        for target in targets:
            a, b = domain(module), domain(target)
            if a != b:
                domains[a].setdefault(b, []).append((module, target))
    return domains


def strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's components with more than one node (no self-edges are kept)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, []):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def canonical(cycle: tuple[str, ...]) -> tuple[str, ...]:
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]


def cycles(edges: dict[str, list[str]], *, limit: int = 500) -> set[tuple[str, ...]]:
    """Every elementary cycle (up to `limit`), each from its alphabetically first node, in import order."""
    found: set[tuple[str, ...]] = set()
    for component in strongly_connected(edges):
        members = set(component)

        for start in component:
            walk(edges, members, start, [start], found, limit)
    return found


def walk(
    edges: dict[str, list[str]], members: set[str], start: str, path: list[str], found: set[tuple[str, ...]], limit: int
) -> None:
    """Depth first from `start` through nodes after it: each cycle is found once, from its first node."""
    for other in edges.get(path[-1], []):
        if len(found) >= limit:
            return
        if other == start:
            found.add(tuple(path))
        elif other in members and other > start and other not in path:
            walk(edges, members, start, [*path, other], found, limit)


def shortest_path(edges: dict[str, list[str]], start: str, goal: set[str]) -> list[str] | None:
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node in goal and node != start:
            path = [node]
            while (parent := parents[path[-1]]) is not None:
                path.append(parent)
            return path[::-1]
        for other in edges.get(node, []):
            if other not in parents:
                parents[other] = node
                queue.append(other)
    return None


@cache
def api_graph() -> Graph:
    return build_graph(ROOT)


def module_edges(graph: Graph) -> dict[str, list[str]]:
    return {module: graph.edges(module) for module in graph.modules}


def show_module_cycle(graph: Graph, cycle: tuple[str, ...]) -> str:
    steps = [
        f"  {a} → {b}  ({graph.modules[a].relative_to(ROOT)}:{graph.imports[a][b]})"
        for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)
    ]
    return "\n".join(["cycle:", *steps])


def show_domain_cycle(graph: Graph, cycle: tuple[str, ...]) -> str:
    domains = domain_graph(graph)
    lines = ["cycle: " + " → ".join([*cycle, cycle[0]])]
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        module, target = domains[a][b][0]
        lines.append(
            f"  {a} → {b}: {module} imports {target} ({graph.modules[module].relative_to(ROOT)}:"
            f"{graph.imports[module][target]})"
        )
    return "\n".join(lines)


# --- the rules, on api/ ---------------------------------------------------------------------------------


def test_no_module_of_api_imports_another_that_imports_it_back():
    graph = api_graph()
    found = cycles(module_edges(graph))
    assert not found, "import cycles in api/:\n" + "\n".join(show_module_cycle(graph, c) for c in sorted(found))


def test_no_domain_leans_on_another_that_leans_back_beyond_the_known_cycles():
    graph = api_graph()
    found = cycles({d: sorted(targets) for d, targets in domain_graph(graph).items()})
    new = sorted(found - KNOWN_CYCLES, key=lambda cycle: (len(cycle), cycle))  # the shortest first
    gone = sorted(KNOWN_CYCLES - found)
    message = []
    if new:
        message += ["domain cycles in api/:", *(show_domain_cycle(graph, c) for c in new[:10])]
        message += [f"… and {len(new) - 10} more"] if len(new) > 10 else []
    if gone:
        message += ["KNOWN_CYCLES lists cycles that no longer exist — remove them:", *map(str, gone)]
    assert not message, "\n".join(message)


def imports_into(graph: Graph, target: str, *, allowed: tuple[str, ...]) -> list[str]:
    """Imports of `target` by modules outside `target` and `allowed`, minus the known exceptions."""
    return [
        f"{module} imports {imported} ({graph.modules[module].relative_to(ROOT)}:{line})"
        for module, targets in sorted(graph.imports.items())
        if not any(within(module, prefix) for prefix in (target, *allowed))
        for imported, line in sorted(targets.items())
        if within(imported, target) and (module, imported) not in KNOWN_LAYER_EXCEPTIONS
    ]


def reaches(graph: Graph, rule: str, importer: str, targets: tuple[str, ...]) -> list[str]:
    """Modules of `importer` that reach a module of `targets` through any chain of imports, with the chain."""
    edges = module_edges(graph)
    goal = {m for m in graph.modules if any(within(m, t) for t in targets)}
    broken = []
    for module in sorted(graph.modules):
        if within(module, importer) and (path := shortest_path(edges, module, goal)) is not None:
            broken.append(f"{rule}: " + " → ".join(path))
    return broken


def test_models_import_no_service_and_no_router():
    graph = api_graph()
    broken = reaches(graph, "models → services/routers", "api.models", ("api.services", "api.routers"))
    assert not broken, "\n".join(broken)


def test_services_import_no_router_and_no_fastapi():
    graph = api_graph()
    broken = reaches(graph, "services → routers", "api.services", ("api.routers",))
    broken += [
        f"services → {package}: {module} ({graph.modules[module].relative_to(ROOT)}:{line})"
        for module, packages in sorted(graph.external.items())
        if within(module, "api.services")
        for package, line in sorted(packages.items())
        if package in ("fastapi", "starlette")
    ]
    assert not broken, "\n".join(broken)


def test_routers_do_not_reach_the_worker():
    graph = api_graph()
    assert any(within(m, w) for m in graph.modules for w in WORKER), f"no worker module among {WORKER}"
    broken = reaches(graph, "routers → worker", "api.routers", WORKER)
    assert not broken, "\n".join(broken)


def test_only_the_cli_imports_the_demo():
    graph = api_graph()
    assert DEMO in graph.modules
    broken = imports_into(graph, DEMO, allowed=(CLI,))
    assert not broken, "only the CLI may import the demo:\n" + "\n".join(broken)


def test_only_the_cli_imports_the_fake_providers():
    graph = api_graph()
    assert FAKES in graph.modules
    broken = imports_into(graph, FAKES, allowed=(CLI,))
    assert not broken, "only the CLI (serve --demo) may import the fake providers:\n" + "\n".join(broken)


def test_known_layer_exceptions_still_exist():
    graph = api_graph()
    gone = [f"{a} → {b} ({why})" for (a, b), why in KNOWN_LAYER_EXCEPTIONS.items() if b not in graph.imports.get(a, {})]
    assert not gone, "KNOWN_LAYER_EXCEPTIONS lists imports that no longer exist — remove them:\n" + "\n".join(gone)


# --- the graph itself, on a made-up package: what counts as an import --------------------------------------


@pytest.fixture
def tree(tmp_path: Path):
    def write(files: dict[str, str]) -> Graph:
        for name, source in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        return build_graph(tmp_path, "pkg")

    return write


def test_an_import_inside_a_function_closes_a_cycle(tree):
    graph = tree(
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "def thing():\n    from pkg import a\n    return a\n",
        }
    )
    assert graph.edges("pkg.b") == ["pkg.a"]
    assert cycles(module_edges(graph)) == {("pkg.a", "pkg.b")}


def test_relative_and_type_checking_imports_count_and_parent_packages_do_not(tree):
    graph = tree(
        {
            "pkg/__init__.py": "from pkg.sub.c import C\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..d import D\nclass C: ...\n"
            ),
            "pkg/sub/e.py": "from . import c\nfrom .c import C\nimport pkg.sub.c as again\n",
            "pkg/d.py": "import httpx\nfrom pkg.sub import c\n",
        }
    )
    assert graph.edges("pkg.sub.c") == ["pkg.d"]  # not pkg.sub nor pkg, whose __init__ runs first
    assert graph.edges("pkg.sub.e") == ["pkg.sub.c"]
    assert graph.edges("pkg.d") == ["pkg.sub.c"]
    assert graph.external["pkg.d"] == {"httpx": 1}
    assert cycles(module_edges(graph)) == {("pkg.d", "pkg.sub.c")}


def test_domains_collapse_a_package_and_keep_plumbing_modules_apart():
    assert domain("api.services.roster.plan") == domain("api.services.roster") == "api.services.roster"
    assert domain("api.services.identity") == "api.services.identity"
    assert domain("api.channels.fakes.sms") == domain("api.channels") == "api.channels"
    assert domain("api.settings") == "api.settings"
    assert canonical(("api.settings", "api.escalation")) == ("api.escalation", "api.settings")
