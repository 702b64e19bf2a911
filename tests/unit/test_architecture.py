"""The package's import graph, drawn from the source (function-local imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import complex_ner

PACKAGE = Path(complex_ner.__file__).resolve().parent
#: The one function-local project import: the CLI imports the pipeline steps (torch,
#: transformers) on first use, so that `complex-ner predict` runs the ONNX export without them.
LAZY = {("complex_ner.cli", "complex_ner.app.stages")}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def _targets(node: ast.AST, known: set[str]) -> list[str]:
    """Project modules an import statement names (``from a import b`` may name module a.b)."""
    names: list[str] = []
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    return [n for n in names if n in known]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    modules = _modules()
    known = set(modules)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    local: list[tuple[str, int]] = []
    for name, tree in modules.items():
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            targets = [t for t in _targets(node, known) if t != name]
            if not targets:
                continue
            edges[name].update(targets)
            if id(node) not in top and not all((name, t) in LAZY for t in targets):
                local.append((name, node.lineno))
    return edges, local


def test_project_imports_are_at_module_top_level() -> None:
    _, local = _graph()
    assert local == []


def test_no_import_cycles() -> None:
    edges, _ = _graph()
    # Packages import their own children only through __init__, which must stay empty of them.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_graph_sees_function_local_imports(tmp_path: Path) -> None:
    tree = ast.parse("def f():\n    from complex_ner.core import paths\n")
    node = tree.body[0].body[0]  # type: ignore[attr-defined]
    assert _targets(node, {"complex_ner.core.paths"}) == ["complex_ner.core.paths"]
