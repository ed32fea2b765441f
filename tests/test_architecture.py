"""The layers of docs/architecture.md, checked from the source with ``ast`` (nothing is imported).

- the package's import graph has no cycle;
- the library (rladctl/ outside stages) never imports rladctl.stages, nor the CLI;
- no stage names an objective: stages ask the registry's record instead;
- no file outside rladctl/backends/ compares a backend's name: callers ask the backend object.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"rladctl": ROOT / "rladctl", "rladctl.stages": ROOT / "stages"}
BACKEND_NAMES = {"hf", "vllm"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the installed package."""
    found = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if prefix == "rladctl" and rel and rel[0] == "stages":
                continue
            name = ".".join((prefix, *rel))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def resolve(name: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = name.split(".")
    if MODULES[name].name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its file (also inside functions)."""
    out = set()
    for node in ast.walk(tree(name)):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, node)
            # `from pkg import mod` needs the module; `from pkg import attr` needs pkg/__init__.py
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target and target not in MODULES:  # `from pkg import name` names a module or an attribute
                target = target.rpartition(".")[0]
            if target and target != name and target != "rladctl":
                out.add(target)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_finder_sees_modules_and_cycles():
    assert {"rladctl.cli", "rladctl.stages.train", "rladctl.objectives.trrd", "rladctl.store.artifacts"} <= set(MODULES)
    assert "rladctl.stages.train" in GRAPH["rladctl.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "name",
    sorted(n for n in MODULES if not n.startswith("rladctl.stages") and n not in ("rladctl.cli", "rladctl.__main__")),
)
def test_the_library_never_imports_a_stage_or_the_cli(name):
    up = sorted(m for m in GRAPH[name] if m.startswith("rladctl.stages") or m in ("rladctl.cli", "rladctl.__main__"))
    assert not up, f"{name} imports {up}: the library points down only (docs/architecture.md)"


def string_constants(node: ast.AST):
    """Every string literal that is not a docstring."""
    docstrings = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            yield n


def objective_names() -> set[str]:
    from rladctl.objectives import OBJECTIVES

    return set(OBJECTIVES)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("rladctl.stages")))
def test_no_stage_names_an_objective(name):
    named = sorted({(c.value, c.lineno) for c in string_constants(tree(name)) if c.value in objective_names()})
    assert not named, f"{MODULES[name]} names objectives {named}: ask the registry's record instead"


def compared_backend_names(module: ast.Module):
    """Backend names used as an operand of ==, !=, in, not in (a dispatch on the name)."""
    for node in ast.walk(module):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                for value in values:
                    if isinstance(value, ast.Constant) and value.value in BACKEND_NAMES:
                        yield value.value, node.lineno


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("rladctl.backends")))
def test_no_backend_name_is_compared_outside_the_backends(name):
    found = sorted(set(compared_backend_names(tree(name))))
    assert not found, f"{MODULES[name]} compares backend names {found}: ask the backend object instead"


def test_the_checks_catch_what_they_forbid():
    bad = ast.parse('if cfg.backend == "vllm":\n    pass\nif name in ("sft", "x"):\n    pass\n')
    assert list(compared_backend_names(bad)) == [("vllm", 1)]
    assert {c.value for c in string_constants(bad)} == {"vllm", "sft", "x"}
    doc = ast.parse('"""mentions sft in prose"""\ndef f():\n    """and trrd"""\n')
    assert list(string_constants(doc)) == []
