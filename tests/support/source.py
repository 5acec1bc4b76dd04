"""Reading the product's own source for the tests that hold "one place per concept": where a
rule or a loop is written again outside the module that owns it."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("qryptify", "services")


def places_outside(owner: str, found: Callable[[ast.AST], bool]) -> list[str]:
    """``path:line`` of every AST node of qryptify/ and services/ for which ``found`` holds,
    except in ``owner`` (a path relative to the repository root)."""
    return [
        f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        for folder in PRODUCT
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / owner
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if found(node)
    ]
