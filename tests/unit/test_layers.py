"""The package's shape, held by a test: which subpackage may import which, no import cycles, and
tools that read runs only through output/rundir (docs/architecture.md draws the map).

Every import counts, the ones inside functions too: a lazy import still ties two stages. Only
imports for type checkers (`if TYPE_CHECKING:`) are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "src" / "snactok"
# subpackage -> the subpackages it must never import
# (the engine may call tools at a run's end, report=true and save.hub_repo; never the reverse)
FORBIDDEN = {
    "config": {"inputs", "engine", "output", "monitor", "tools"},
    "inputs": {"engine", "output", "monitor", "tools"},
    "codec": {"config", "inputs", "engine", "monitor", "tools"},
    "output": {"engine", "monitor", "tools"},
    "monitor": {"engine", "tools"},
    "tools": {"engine"},
}
RUN_DIR_NAMES = ("manifest.jsonl", "rejects.jsonl", "metrics.jsonl", "*.jsonl.gz", "*.parquet")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The snactok modules `path` imports, anywhere in it."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("snactok"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from snactok.x import y`
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("snactok")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(p) if m in modules and m != name} for name, p in modules.items()}


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_no_stage_imports_a_later_one_or_the_engine():
    broken = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        for dep in deps
        if subpackage(dep) in FORBIDDEN.get(subpackage(mod), set())
    ]
    assert not broken, broken


def test_there_are_no_import_cycles():
    edges = graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(edges[node]):
            if dep in path:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start])
    # the package's own __init__ re-exports the API; a submodule importing it is what would cycle
    cycles = [c for c in cycles if "snactok" not in c]
    assert not cycles, cycles


def test_tools_read_runs_only_through_rundir():
    for path in (PACKAGE / "tools").glob("*.py"):
        text = path.read_text()
        named = [name for name in RUN_DIR_NAMES if f'"{name}"' in text or f"'{name}'" in text]
        assert not named, f"{path.name} names {named}: read runs through snactok.output.rundir"


def test_the_rules_see_real_imports():
    """The checks above would pass on an empty graph: make sure the graph is the package's."""
    edges = graph()
    assert "snactok.output.rundir" in edges["snactok.tools.publish"]
    assert "snactok.engine.run" in edges["snactok.api"]
    assert subpackage("snactok.engine.run") == "engine" and subpackage("snactok.api") is None
