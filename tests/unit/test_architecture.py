"""The package's layering: no import cycles, no library module importing a stage, foundations importing nothing
above them, and no module much over 400 lines (the exceptions are listed with their reason)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "pipeline"
#: modules allowed over MAX_LINES, and why
LONG_MODULES = {
    "pipeline.models.srgan": "one GAN family in one module (config, model, apply), as the family contract asks",
    "pipeline.config": "every stage's typed section in one place (the export section took it past the limit)",
}
MAX_LINES = 420
#: package prefixes that must not import the ones listed (the layers above them)
FORBIDDEN = {
    "pipeline.io": ("pipeline.config", "pipeline.models", "pipeline.inference", "pipeline.evaluation", "pipeline.report",
                    "pipeline.training", "pipeline.workflow", "pipeline.data", "pipeline.gan", "pipeline.nets"),
    "pipeline.config": ("pipeline.models", "pipeline.inference", "pipeline.evaluation", "pipeline.report",
                        "pipeline.training", "pipeline.workflow", "pipeline.data", "pipeline.gan", "pipeline.nets"),
    "pipeline.gan": ("pipeline.models", "pipeline.inference", "pipeline.evaluation", "pipeline.report",
                     "pipeline.training", "pipeline.workflow", "pipeline.data", "pipeline.nets"),
    "pipeline.nets": ("pipeline.models", "pipeline.inference", "pipeline.evaluation", "pipeline.report",
                      "pipeline.training", "pipeline.workflow", "pipeline.data"),
    "pipeline.imaging": ("pipeline.models", "pipeline.inference", "pipeline.evaluation", "pipeline.report",
                         "pipeline.training", "pipeline.workflow", "pipeline.data"),
    "pipeline.data": ("pipeline.models", "pipeline.inference", "pipeline.evaluation", "pipeline.report",
                      "pipeline.training", "pipeline.workflow"),
    "pipeline.models": ("pipeline.inference", "pipeline.evaluation", "pipeline.report", "pipeline.training",
                        "pipeline.workflow"),
    "pipeline.evaluation": ("pipeline.models", "pipeline.inference", "pipeline.report", "pipeline.training"),
    "pipeline.report": ("pipeline.models", "pipeline.inference", "pipeline.training"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules `path` imports (at the top or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("pipeline.") or name == "pipeline":
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) - {m, "pipeline"} for m, p in modules.items()}


def test_no_library_module_imports_a_stage():
    bad = {m: sorted(d for d in deps if d.startswith("pipeline.stages"))
           for m, deps in _graph().items() if not m.startswith(("pipeline.stages", "pipeline.cli"))}
    assert not {m: d for m, d in bad.items() if d}


def test_foundations_import_nothing_above_them():
    bad = []
    for module, deps in _graph().items():
        for layer, above in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                bad += [f"{module} -> {d}" for d in sorted(deps) if d.startswith(above)]
    assert not bad


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles


def test_modules_stay_short():
    long = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    over = {m: n for m, n in long.items() if n > MAX_LINES and m not in LONG_MODULES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
    assert all(long[m] > MAX_LINES for m in LONG_MODULES), "an allowed long module is short now: drop it from the list"


def test_the_import_graph_sees_top_level_and_lazy_imports():
    graph = _graph()
    assert "pipeline.models.contract" in graph["pipeline.models.srgan"]  # top-level import
    assert "pipeline.models" in graph["pipeline.inference.run"]  # an import inside a function
    assert "pipeline.stages.train" not in graph["pipeline.training"]
