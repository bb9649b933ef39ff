"""The import graph of the project's own modules: no cycles, and the layers point one way.

Every import counts, at module level or inside a function (a lazy import is still a dependency), except
those under `if __name__ == "__main__":` (entry-point glue that never runs on import).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("circuits", "analyses")
COMMANDS = {"circuits.train", "circuits.evaluate", "circuits.decompose", "circuits.pairs", "circuits.heads",
            "circuits.synthetic", "circuits.report.__main__"}


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports (`from a import b` → a.b when that is a module, else a)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "circuits.interp.attribution" in graph["circuits.interp.ranks"]
    assert cycles(graph) == []


def test_layers_point_one_way():
    graph = import_graph()
    for module, deps in graph.items():
        # nothing imports a command (they are entry points), except the package listing them nowhere
        assert not deps & COMMANDS, f"{module} imports a command module: {deps & COMMANDS}"
        if module.startswith("analyses."):
            assert not any(d.startswith("circuits.report") for d in deps), f"{module} imports the report"
        elif module != "circuits.report.experiments":
            # the report owns the experiments' sections; no other part of the library reads analyses/
            assert not any(d.startswith("analyses") for d in deps), f"{module} imports analyses"
        if module.startswith(("circuits.model", "circuits.config", "circuits.data", "circuits.errors")):
            upper = ("circuits.training", "circuits.scoring", "circuits.interp", "circuits.report", "circuits.runs")
            assert not any(d.startswith(upper) for d in deps), f"{module} imports a higher layer: {deps}"
