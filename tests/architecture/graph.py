"""The import graph of gateway/ and adapters/, read from the source (imports inside functions included)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Edge:
    source: str   # importing module, dotted
    target: str   # imported module, dotted (resolved to a module of the tree where it is one)
    line: int
    lazy: bool    # inside a function, or under `if TYPE_CHECKING`
    typing_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def tree_modules() -> dict[str, Path]:
    """Every module of gateway/ and adapters/ by dotted name."""
    return {module_name(p): p for top in ("gateway", "adapters") for p in sorted((ROOT / top).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """``a.b.c`` → the longest prefix that is a module of the tree (``from a.b import c`` names c in a.b)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _lazy_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def edges(path: Path, modules: dict[str, Path]) -> Iterator[Edge]:
    """Imports of ``path`` that name a module of the tree (absolute and relative)."""
    source = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_lines, lazy_lines = _type_checking_lines(tree), _lazy_lines(tree)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved and resolved != source:
                typing_only = node.lineno in typing_lines
                yield Edge(source, resolved, node.lineno, node.lineno in lazy_lines or typing_only, typing_only)


def graph(include_typing: bool = False) -> dict[str, set[str]]:
    modules = tree_modules()
    out: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for edge in edges(path, modules):
            if include_typing or not edge.typing_only:
                out[name].add(edge.target)
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    for component in cycles(graph()):
        print(len(component), component)
