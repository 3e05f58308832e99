"""The shape of the product's code, read with ``ast``: no import circle between its modules, no long function.

import-linter (``pyproject.toml``) checks layers between packages, but a circle can hide below them: a base
module reaching up to a concrete one inside a function or under ``if TYPE_CHECKING:``. Such an import still
ties the two modules together (the base cannot be read, moved or tested without the concrete), so this graph
counts every ``import`` in a file, wherever it stands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("common", "inversion", "storage", "tasks", "flows", "reports", "toyworld", "deployments")
#: the longest a product function may be, from its ``def`` line to its last line (decorators excluded)
MAX_FUNCTION_LINES = 60


def product_files(root: Path = ROOT) -> dict[str, Path]:
    """Every product module by dotted name (a package by its own name, for its ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for package in PRODUCT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``(imported module, names taken from it)`` for every import in the file, at any depth."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level == 0:
                yield node.module or "", names
                continue
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            yield ".".join([*base, *([node.module] if node.module else [])]), names


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the product modules it imports.

    ``import a.b`` counts as ``a.b`` (a package as its ``__init__``); ``from a import b`` counts as ``a.b``
    when that is a module, else as ``a``.
    """
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for target, names in imported_names(module, path):
            if target not in modules:
                continue
            submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in modules]
            plain_names = [name for name in names if f"{target}.{name}" not in modules]
            graph[module].update(submodules)
            if plain_names or not names:
                graph[module].add(target)
        graph[module].discard(module)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None`` (an iterative depth-first search)."""
    finished: set[str] = set()
    for start in sorted(graph):
        if start in finished:
            continue
        path = [start]
        unvisited = [iter(sorted(graph[start]))]
        while path:
            following = next(unvisited[-1], None)
            if following is None:
                finished.add(path.pop())
                unvisited.pop()
            elif following in path:
                return [*path[path.index(following) :], following]
            elif following not in finished:
                path.append(following)
                unvisited.append(iter(sorted(graph[following])))
    return None


def long_functions(modules: Mapping[str, Path], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function longer than ``limit`` lines, ``def`` to last line."""
    found = []
    for path in modules.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return sorted(found)


def test_no_import_circle_between_product_modules() -> None:
    cycle = find_cycle(import_graph(product_files()))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("imports", "circle"),
    [
        ({"a": "", "a.base": "from a.top import X\n", "a.top": "from .base import Y\n"}, True),
        ({"a": "", "a.base": "def f():\n    from a import top\n", "a.top": "from a.base import Y\n"}, True),
        ({"a": "", "a.base": "if TYPE_CHECKING:\n    import a.top\n", "a.top": "from . import base\n"}, True),
        ({"a": "from .top import X\n", "a.base": "", "a.top": "from a.base import Y\n"}, False),
        ({"a": "", "a.base": "", "a.top": "from a.base import Y\nfrom . import base\n"}, False),
    ],
)
def test_the_circle_finder_counts_every_kind_of_import(tmp_path: Path, imports: dict[str, str], circle: bool) -> None:
    modules = {}
    for module, source in imports.items():
        path = tmp_path / Path(*module.split("."))
        path = path / "__init__.py" if module == "a" else path.with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        modules[module] = path
    assert (find_cycle(import_graph(modules)) is not None) is circle


def test_no_product_function_is_longer_than_the_limit() -> None:
    too_long = long_functions(product_files())
    listing = "\n".join(too_long)
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n{listing}"
