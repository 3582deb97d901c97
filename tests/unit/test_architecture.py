"""The import graph and the size of the production code hold the layout of docs/architecture.md.

Every production module (everything but `tests/` and `bench/`) is parsed with `ast`; an import
anywhere in a module counts (module level, inside a function, under `TYPE_CHECKING`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import ROOT

EXCLUDED_DIRS = frozenset({"tests", "bench"})
LOWER_LAYERS = frozenset({"venue", "execution", "storage", "resilience", "observability"})
UPPER_LAYERS = frozenset({"strategies", "wiring", "orchestrator", "demo"})
SQL_DRIVERS = frozenset({"sqlite3", "aiosqlite"})
MAX_MODULE_LINES = 600
MAX_EXECUTOR_LINES = 500


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: set[str] = field(default_factory=set)  # every dotted name it imports

    @property
    def top(self) -> str:
        return self.name.split(".")[0]


def production_files() -> Iterator[Path]:
    """Every `.py` file of the checkout outside hidden folders, `tests/` and `bench/`, and
    outside folders that are not packages (a virtualenv, generated data)."""
    yield from sorted(ROOT.glob("*.py"))
    for top in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        if top.name.startswith(".") or top.name in EXCLUDED_DIRS:
            continue
        if not (top / "__init__.py").is_file():
            continue
        yield from sorted(top.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.Module, module: str, *, is_package: bool) -> set[str]:
    """Every dotted name `tree` imports: `import a.b` gives `a.b`; `from a import b, c` gives
    `a.b` and `a.c` (the caller keeps whichever is a module, else `a`). Relative imports are
    resolved against `module`."""
    out: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return out


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in production_files():
        text = path.read_text("utf-8")
        name = _module_name(path)
        tree = ast.parse(text, filename=str(path))
        found[name] = Module(
            name=name,
            path=path,
            tree=tree,
            lines=len(text.splitlines()),
            imports=imported_names(tree, name, is_package=path.name == "__init__.py"),
        )
    return found


def _resolve(name: str, known: Mapping[str, Module]) -> str | None:
    """The production module `name` refers to: itself, or its longest known prefix."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in known:
            return candidate
    return None


def graph(mods: Mapping[str, Module]) -> dict[str, set[str]]:
    """Module -> the production modules it imports (itself excluded)."""
    edges: dict[str, set[str]] = {}
    for name, m in mods.items():
        targets = {_resolve(i, mods) for i in m.imports}
        edges[name] = {t for t in targets if t is not None and t != name}
    return edges


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def _calls(tree: ast.Module, function: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == function) or (
                isinstance(f, ast.Attribute) and f.attr == function
            ):
                yield node


# --------------------------------------------------------------------------------------------
# The checker itself (so a broken parser cannot pass every rule vacuously)
# --------------------------------------------------------------------------------------------


def test_the_scan_sees_the_production_code_and_not_the_tests() -> None:
    mods = modules()
    for name in ("orchestrator", "executor", "storage.db", "wiring.shared", "simulator"):
        assert name in mods, name
    assert not any(n.split(".")[0] in EXCLUDED_DIRS for n in mods)
    edges = graph(mods)
    assert "storage.db" in edges["storage"]  # storage/__init__ re-exports Database
    assert "wiring.shared" in edges["orchestrator"]


def test_imported_names_resolve_relative_and_from_imports() -> None:
    tree = ast.parse(
        "import a.b\nfrom c import d, e\nfrom . import f\nfrom ..g import h\n"
        "def lazy():\n    import i\n"
    )
    names = imported_names(tree, "pkg.sub.mod", is_package=False)
    assert names >= {"a.b", "c", "c.d", "c.e", "pkg.sub", "pkg.sub.f", "pkg.g", "pkg.g.h", "i"}


def test_cycles_finds_every_loop_and_nothing_else() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"a"}}
    assert cycles(edges) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------


def test_no_import_cycles_between_modules() -> None:
    found = cycles(graph(modules()))
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_lower_layers_never_import_strategies_wiring_or_the_entry_points() -> None:
    mods = modules()
    edges = graph(mods)
    bad = sorted(
        f"{name} imports {target}"
        for name, targets in edges.items()
        if mods[name].top in LOWER_LAYERS
        for target in targets
        if mods[target].top in UPPER_LAYERS
    )
    assert bad == []


def test_sql_drivers_are_imported_only_under_storage() -> None:
    bad = sorted(
        f"{m.name} imports {driver}"
        for m in modules().values()
        if m.top != "storage"
        for driver in SQL_DRIVERS
        if any(i == driver or i.startswith(driver + ".") for i in m.imports)
    )
    assert bad == []
    assert any(
        "sqlite3" in m.imports or "aiosqlite" in m.imports
        for m in modules().values()
        if m.top == "storage"
    )


def test_polymarket_limits_are_turned_into_buckets_in_one_place() -> None:
    callers = sorted(m.name for m in modules().values() if any(_calls(m.tree, "polymarket_limits")))
    assert callers == ["wiring.shared"]


def test_no_production_module_is_over_the_size_limit() -> None:
    big = sorted(
        f"{m.name}: {m.lines} lines" for m in modules().values() if m.lines > MAX_MODULE_LINES
    )
    assert big == []


def test_the_executor_class_is_within_its_size_limit() -> None:
    classes = [
        node
        for m in modules().values()
        for node in ast.walk(m.tree)
        if isinstance(node, ast.ClassDef) and node.name == "Executor"
    ]
    assert len(classes) == 1
    (executor,) = classes
    assert executor.end_lineno is not None
    assert executor.end_lineno - executor.lineno + 1 <= MAX_EXECUTOR_LINES


@pytest.mark.parametrize("layer", sorted(LOWER_LAYERS | UPPER_LAYERS))
def test_every_layer_named_in_the_rules_exists(layer: str) -> None:
    assert any(m.top == layer for m in modules().values()), layer
