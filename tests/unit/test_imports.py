"""The package's imports run one way: no module imports itself through others, and no part does.

Every ``import`` and ``from ... import`` in the source counts, wherever it stands: at module level,
inside a function, or under ``if TYPE_CHECKING:`` (a cycle through annotations is still a cycle for
the reader). Relative imports are resolved against the importing module's package. The parent
packages that Python imports before a module (``yadtq.worker`` before ``yadtq.worker.runner``) are
not counted as dependencies of it.

The parts are the subpackages directly under ``yadtq/`` (README's "How it works"); ``yadtq``'s own
``__init__`` and ``__main__`` stand above them all.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "yadtq"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # file:line of the import


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(root: Path) -> Iterator[Edge]:
    """Every import of one project module by another."""
    known = modules(root)
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        where = path.relative_to(root.parent)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [_deepest(alias.name, known) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, package)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else _deepest(base, known)
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target is not None and target != name and not name.startswith(f"{target}."):
                    yield Edge(name, target, f"{where}:{node.lineno}")


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _deepest(dotted: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of ``dotted`` that is a project module (``import a.b.c`` imports a.b.c)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One cycle of the graph, as the imports that make it up, or None."""
    out: dict[str, list[Edge]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge)
    state: dict[str, str] = {}  # absent: not seen; "open": on the current path; "done": no cycle through it
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = "open"
        for edge in out.get(node, []):
            if state.get(edge.target) == "open":
                start = next(i for i, e in enumerate(path) if e.source == edge.target)
                return [*path[start:], edge]
            if edge.target not in state:
                path.append(edge)
                if found := visit(edge.target):
                    return found
                path.pop()
        state[node] = "done"
        return None

    for node in sorted(out):
        if node not in state and (found := visit(node)):
            return found
    return None


def describe(cycle: list[Edge]) -> str:
    steps = "\n".join(f"  {e.source} -> {e.target}  ({e.where})" for e in cycle)
    return f"import cycle: {' -> '.join([cycle[0].source, *(e.target for e in cycle)])}\n{steps}"


def part_of(module: str) -> str | None:
    """``yadtq.worker.runner`` -> ``worker``; None for ``yadtq`` itself and ``yadtq.__main__``."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__main__":
        return None
    return parts[1]


def test_no_module_imports_itself_through_others() -> None:
    edges = list(imports(PACKAGE))
    assert len(edges) > 100, "the walk found too few imports to be looking at the package"
    if cycle := find_cycle(edges):
        pytest.fail(describe(cycle), pytrace=False)


def test_the_parts_depend_on_each_other_one_way() -> None:
    edges = []
    for edge in imports(PACKAGE):
        source, target = part_of(edge.source), part_of(edge.target)
        if source and target and source != target:
            edges.append(Edge(source, target, f"{edge.source} -> {edge.target}, {edge.where}"))
    if cycle := find_cycle(edges):
        pytest.fail(describe(cycle), pytrace=False)


def test_readme_lists_every_part_after_the_parts_it_imports() -> None:
    """README's table of folders is the list of parts, in an order in which each imports only earlier ones."""
    listed = re.findall(r"^\| `(\w+)/` \|", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    parts = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))
    assert sorted(listed) == parts, f"README's table lists {listed}; the parts are {parts}"
    for edge in imports(PACKAGE):
        source, target = part_of(edge.source), part_of(edge.target)
        if source and target and source != target:
            assert listed.index(target) < listed.index(source), (
                f"{edge.source} imports {edge.target} ({edge.where}): {target}/ must come before {source}/ in README"
            )


def test_a_cycle_is_found_and_named(tmp_path: Path) -> None:
    """The walk itself: relative and absolute imports, inside functions and TYPE_CHECKING, all count."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import sub\nfrom pkg.a import thing\n")
    edges = list(imports(pkg))
    assert {(e.source, e.target) for e in edges} == {
        ("pkg.a", "pkg.sub.b"),
        ("pkg.sub.b", "pkg.c"),
        ("pkg.c", "pkg.a"),
        ("pkg.d", "pkg.sub"),
        ("pkg.d", "pkg.a"),
    }
    cycle = find_cycle(edges)
    assert cycle is not None
    message = describe(cycle)
    assert "pkg.a -> pkg.sub.b -> pkg.c -> pkg.a" in message
    assert "pkg/c.py:4" in message
