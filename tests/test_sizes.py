"""Modules and classes stay small enough to read: no module over 400 lines, no class over 300."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("perseus_core", "perseus_tui", "perseus_cli")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_no_module_over_the_limit() -> None:
    too_long = {
        str(path.relative_to(ROOT)): count
        for path in _sources()
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}, f"split these modules (limit {MAX_MODULE_LINES} lines)"


def test_no_class_over_the_limit() -> None:
    too_long: dict[str, int] = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                span = node.end_lineno - node.lineno + 1
                if span > MAX_CLASS_LINES:
                    too_long[f"{path.relative_to(ROOT)}:{node.name}"] = span
    assert too_long == {}, f"split these classes (limit {MAX_CLASS_LINES} lines)"
