"""The library's imports point one way: down the layers below, never round a cycle, never into
the tests or the benchmarks. Read from the source (ast): no module is imported here.

Layers, lowest first; a module may import its own component and the components of lower
layers, never a component of its own layer or of a higher one (``rules`` and ``attacks`` do not
import each other; the engine imports neither the case studies nor anything that runs it):

    foundations     names, ops, rng, registry, protocols, version, determinism, threads,
                    tables, datasets/, allocator, scalars, inputs
    statistics      split_stats
    graphs          graph
    graph parts     graph_part
    neighbourhoods  neighbourhoods
    plug-ins        rules/, attacks/, tasks/
    machinery       engine/, recording, plots/, config, catalogue, figure_process
    checks          plugins, resources
    folders         destination
    results         results
    checkpoints     checkpoints
    runs            experiment
    studies         matrix, resume
    benchmark       bench
    processes       distributed
    command line    cli
    entry points    __main__, byzmtl (the package: its Python API)

A component is a module of the package or a sub-package with all its modules. What counts:
every import that runs, at module level or inside a function (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` only name types and never run. Cycles are
looked for among the imports that run when a module is imported: module level, outside
``TYPE_CHECKING``; an import inside a function is how a module defers one (it runs once the
modules are loaded, so it cannot deadlock an import).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "byzmtl"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundations",
        (
            "names",
            "ops",
            "rng",
            "registry",
            "protocols",
            "version",
            "determinism",
            "threads",
            "tables",
            "datasets",
            "allocator",
            "scalars",
            "inputs",
        ),
    ),
    ("statistics", ("split_stats",)),
    ("graphs", ("graph",)),
    ("graph parts", ("graph_part",)),
    ("neighbourhoods", ("neighbourhoods",)),
    ("plug-ins", ("rules", "attacks", "tasks")),
    (
        "machinery",
        ("engine", "recording", "plots", "config", "catalogue", "figure_process"),
    ),
    ("checks", ("plugins", "resources")),
    ("folders", ("destination",)),
    ("results", ("results",)),
    ("checkpoints", ("checkpoints",)),
    ("summaries and sizes", ("outcome", "sizing")),
    ("runs", ("experiment",)),
    ("studies", ("matrix", "resume")),
    ("benchmark", ("bench",)),
    ("processes", ("distributed",)),
    ("arguments", ("arguments",)),
    ("command line", ("cli",)),
    ("entry points", ("__main__", "byzmtl")),
)
RANK = {component: rank for rank, (_, components) in enumerate(LAYERS) for component in components}


@dataclass(frozen=True)
class Import:
    """One import statement's target, and where the statement stands."""

    target: str  # dotted name: a module where the statement names one, else its package
    lazy: bool  # inside a function
    typing_only: bool  # under ``if TYPE_CHECKING:``


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def component(module: str) -> str:
    """``byzmtl.rules.krum`` -> ``rules``; the package itself is ``byzmtl``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def imports(module: str) -> tuple[Import, ...]:
    """Every import statement of ``module``, resolved to the modules it names."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, lazy, typing_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = str(node.module)
            for alias in node.names:
                named = f"{source}.{alias.name}"
                found.append(Import(named if named in modules() else source, lazy, typing_only))
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            guarded = typing_only or (
                isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body
            )
            visit(child, inner, guarded)

    visit(ast.parse(path.read_text(), str(path)), False, False)
    return tuple(found)


def internal(module: str, *, at_import: bool) -> set[str]:
    """The byzmtl modules ``module`` imports when it runs (``at_import``: when it is imported)."""
    return {
        i.target
        for i in imports(module)
        if i.target in modules()
        and not i.typing_only
        and not (at_import and i.lazy)
        and i.target != module
    }


def test_imports_point_down_the_layers() -> None:
    unplaced = sorted({component(m) for m in modules()} - set(RANK))
    assert not unplaced, f"components in no layer of the table: {unplaced}"
    names = {c: name for name, components in LAYERS for c in components}
    wrong = []
    for module in modules():
        for target in sorted(internal(module, at_import=False)):
            mine, theirs = component(module), component(target)
            if mine != theirs and RANK[theirs] >= RANK[mine]:
                wrong.append(f"{module} ({names[mine]}) imports {target} ({names[theirs]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle_at_module_level() -> None:
    graph = {module: sorted(internal(module, at_import=True)) for module in modules()}
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in graph[module]:
            found = cycle_from(target, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in graph:
        cycle = cycle_from(module, []) or []
        assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", modules())
def test_the_library_never_imports_the_tests_or_the_benchmarks(module: str) -> None:
    outside = sorted(
        i.target for i in imports(module) if i.target.split(".")[0] in ("tests", "benchmarks")
    )
    assert not outside, f"{module} imports {', '.join(outside)}"
