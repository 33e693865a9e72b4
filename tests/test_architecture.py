"""The shape docs/architecture.md promises: layers that point one way, public APIs only.

The layer contracts live in pyproject.toml (`[tool.importlinter]`) and run in
`make lint` too; here they fail the suite as well, as harlequin's do.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("exalate_tui", "screens", "tests", "benchmarks")
OUR_PACKAGES = {"exalate_tui", "screens", "tests", "benchmarks", "conftest"}


def python_files() -> Iterator[Path]:
    for top in SOURCES:
        yield from sorted((ROOT / top).rglob("*.py"))


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def names_we_define(trees: list[ast.Module]) -> set[str]:
    """Every underscore name our own code defines: functions, classes, attributes, names."""
    defined: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                # Textual dispatches `_on_<event>` itself: defining one overrides its internals.
                if not node.name.startswith("_on_"):
                    defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                # `self._x = ...` defines _x; `screen._x = ...` only writes another's.
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    defined.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, ast.alias):
                defined.add(node.asname or node.name.split(".")[0])
    return {name for name in defined if private(name)}


def test_the_layer_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_no_underscore_attribute_of_another_project_is_used() -> None:
    """`x._name` only where our own code defines `_name`; no import of another's `_module`.

    What a library keeps private moves between its releases: using it forces an
    exact pin and breaks on an upgrade (docs/architecture.md, Public APIs only).
    """
    parsed = {path: ast.parse(path.read_text(), str(path)) for path in python_files()}
    ours = names_we_define(list(parsed.values()))
    found = []
    for path, tree in parsed.items():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in ours:
                found.append(f"{where}:{node.lineno}: .{node.attr}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("_on_"):
                    found.append(f"{where}:{node.lineno}: def {node.name} (a Textual internal)")
            elif isinstance(node, ast.Call) and len(node.args) >= 2:
                # setattr(obj, "_name", ...), monkeypatch.setattr(obj, "_name", ...), getattr...
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                name = node.args[1]
                if (
                    called in ("setattr", "getattr", "hasattr", "delattr")
                    and isinstance(name, ast.Constant)
                    and isinstance(name.value, str)
                    and private(name.value)
                    and name.value not in ours
                ):
                    found.append(f"{where}:{node.lineno}: {called}(..., {name.value!r})")
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] in OUR_PACKAGES:
                    continue
                if any(private(part) for part in parts):
                    found.append(f"{where}:{node.lineno}: from {node.module}")
                found += [
                    f"{where}:{node.lineno}: import {alias.name} from {node.module}"
                    for alias in node.names
                    if private(alias.name)
                ]
    assert not found, "private names of other projects:\n" + "\n".join(found)
