"""The house rules of the package, walked from the source: no import circles (imports inside functions
count: a lazy import that dodges a circle is still a circle), no private name imported from another module,
no module longer than ~500 lines unless its docstring says why."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"blockcert": ROOT / "blockcert"}
MAX_LINES = 520


def _modules() -> dict[str, Path]:
    out = {}
    for name, base in PACKAGES.items():
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [name, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    parent = ".".join(parts[: len(parts) - node.level + 1])
    return f"{parent}.{node.module}" if node.module else parent


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of ``module``, except under TYPE_CHECKING."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    out: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            names = [a.name for a in node.names]
            out.append((base, names, node.lineno))
            out.extend((f"{base}.{n}", [], node.lineno) for n in names if f"{base}.{n}" in MODULES)  # `from . import x`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        deps = set()
        for target, _, _ in _imports(module):
            if target in MODULES and target != module and not module.startswith(target + "."):  # a package's own parents
                deps.add(target)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    cycles = _cycles(_graph())
    assert not cycles, "import circles (imports inside functions included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if target.startswith("blockcert") and target != module:
                bad += [f"{MODULES[module].relative_to(ROOT)}:{line}: {n} from {target}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, "private names imported across modules (give them a public name where they live):\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_long_modules_say_why(module):
    path = MODULES[module]
    lines = path.read_text().count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "Why this module is long" in doc, f"{path.relative_to(ROOT)} has {lines} lines: split it, or say why in its docstring"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))  # __main__ runs the CLI
def test_every_module_imports(module):
    """A moved name or a stale import fails here, not in the one test that happens to reach it."""
    importlib.import_module(module)


def test_the_package_face_is_its_api():
    """``dir(blockcert)`` is what users call; each name resolves, also after every submodule is imported (a
    submodule named like an API function would replace it), and ``import blockcert`` stays light."""
    import subprocess
    import sys

    code = ("import sys, blockcert; face = dir(blockcert); light = 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "import importlib, pkgutil; [importlib.import_module(m.name) for m in pkgutil.walk_packages(blockcert.__path__, 'blockcert.') "
            "if not m.name.endswith('__main__')]; "
            "print(light, sorted(set(face) - set(blockcert.__all__)), all(callable(getattr(blockcert, n)) or n == 'SCHEMA_VERSION' "
            "for n in blockcert.__all__), [n for n in ('Any', 'TYPE_CHECKING', 'annotations', 'import_module') if n in face])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[-2]
    assert out == "True ['__doc__', '__file__', '__name__', '__path__', '__version__'] True []", out
    import blockcert

    assert {"run", "verify", "stitch", "bound", "load_model", "Policy"} <= set(dir(blockcert))
