"""The package has no import cycle: every forensics module, its module-level and function-level imports alike.

A function-level ("lazy") import that closes a loop still makes one: it only hides the cycle until the function
runs. The graph is read from the source with `ast`, nothing is imported. `from x import y` is an edge to `x.y` when
that is a module of ours, else to `x`. Importing `a.b.c` also runs the packages `a` and `a.b`; those implicit edges
are left out: a package whose __init__ imports its own submodules is not a cycle Python trips on. Imports under
`if TYPE_CHECKING:` never run and are left out too (they are how a module names a type it must not import).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "forensics"


def module_name(path: Path) -> str:
    return module_name_in(ROOT, path)


def module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of dotted `name` that is one of our modules (None when it is not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree, at any depth, except the bodies of `if TYPE_CHECKING:` (their `else:` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The forensics modules `module` imports, anywhere in its body (functions and classes included)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target:
                    out.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:                      # relative: from the package this module is in
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                target = submodule if submodule in known else _resolve(origin, known)
                if target:
                    out.add(target)
    out.discard(module)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(m, p, known) for m, p in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None; depth-first, iterative, deterministic."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = GREY
        path = [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour.get(child, BLACK) == GREY:
                return path[path.index(child):] + [child]
            elif colour.get(child) == WHITE:
                colour[child] = GREY
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_the_graph_is_read():
    """The parser sees the edges it must (so an empty graph cannot pass the test below by accident)."""
    graph = import_graph()
    assert "forensics.ingest" in graph and "forensics.sources" in graph["forensics.ingest"]
    assert "forensics.sources.interface" in graph["forensics.sources"]
    # function-level imports count
    assert "forensics.ingest" in graph["forensics.cli"]


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path):
    pkg = tmp_path / "forensics"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from forensics import b\n"
                              "def f():\n    from forensics.c import thing\n")
    (pkg / "b.py").write_text("")
    (pkg / "c.py").write_text("from . import a\n")
    known = {module_name_in(tmp_path, p): p for p in sorted(pkg.rglob("*.py"))}
    assert imports_of("forensics.a", pkg / "a.py", known) == {"forensics.c"}
    assert imports_of("forensics.c", pkg / "c.py", known) == {"forensics.a"}
    assert find_cycle({m: imports_of(m, p, known) for m, p in known.items()}) == ["forensics.a", "forensics.c",
                                                                                  "forensics.a"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    if cycle:
        print("import cycle: " + " -> ".join(cycle))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
