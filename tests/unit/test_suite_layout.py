"""The suite's own layout: the harness lives in tests/support/, conftest.py files
hold fixtures (and pytest hooks) only, and no test module imports another or a
conftest, so every suite can be read, run and moved on its own."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = TESTS / "support"


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_every_helper_module_lives_in_support() -> None:
    stray = [
        str(path.relative_to(TESTS))
        for path in _modules()
        if path.name not in ("conftest.py", "__init__.py")
        and not path.name.startswith("test_")
        and SUPPORT not in path.parents
    ]
    assert stray == []


def test_nothing_imports_a_test_module_or_a_conftest() -> None:
    offenders = []
    for path in _modules():
        for name in _imported(ast.parse(path.read_text())):
            last = name.rsplit(".", 1)[-1]
            if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                offenders.append(f"{path.relative_to(TESTS)} imports {name}")
    assert offenders == []


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "fixture"


def test_conftest_files_hold_fixtures_and_hooks_only() -> None:
    offenders = []
    for path in TESTS.rglob("conftest.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                offenders.append(f"{path.relative_to(TESTS)}: class {node.name}")
            elif (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and not node.name.startswith("pytest_")
                and not any(_is_fixture(d) for d in node.decorator_list)
            ):
                offenders.append(f"{path.relative_to(TESTS)}: def {node.name}")
    assert offenders == []
