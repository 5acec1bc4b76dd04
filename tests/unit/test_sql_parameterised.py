"""SQL is only ever parameterised (docs/security.md): a static check of every statement the
production code sends to PostgreSQL.

For each ``.execute(…)``, ``.executemany(…)`` and ``.copy(…)`` call in ``qryptify/`` and
``services/``, the statement must be built from constants only: string literals, f-strings and
``+``/``join``/``format`` over module constants (``_UPSERT``, ``CANDLE_COLUMNS``…) and over
comprehension variables that iterate constants, or ``psycopg.sql`` compositions
(``sql.SQL(…).format(sql.Identifier(name))``). Values travel as parameters. Nothing
``%``-formats a statement. The one statement read from a file is a migration from the
repository's ``sql/`` directory (``qryptify.db.migrate``), allowed by name.

The checker is tested on bad code too, so it cannot pass by accepting everything.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("qryptify", "services")
SQL_METHODS = {"execute", "executemany", "copy"}
CONSTANT_NAME = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
#: (module path, function) → why its statement may come from elsewhere.
ALLOWED = {
    ("qryptify/db.py", "migrate"): "runs the repository's own sql/NNN_*.sql migration files",
}


@dataclass(frozen=True)
class Finding:
    where: str
    why: str


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and CONSTANT_NAME.match(target.id):
                found[target.id] = node.value
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
            and CONSTANT_NAME.match(node.target.id)
        ):
            found[node.target.id] = node.value
    return found


class _Checker:
    def __init__(self, tree: ast.Module, path: str) -> None:
        self.constants = _module_constants(tree)
        self.path = path
        self._seen: set[str] = set()

    def constant(self, node: ast.expr, bound: frozenset[str] = frozenset()) -> str | None:
        """None when ``node`` is built from constants only; else what is not."""
        if isinstance(node, ast.Constant):
            return None
        if isinstance(node, ast.Name):
            if node.id in bound:
                return None
            if not CONSTANT_NAME.match(node.id):
                return f"variable {node.id!r}"
            if node.id in self._seen:  # already checked (or being checked)
                return None
            self._seen.add(node.id)
            value = self.constants.get(node.id)
            if value is None:
                return None  # imported constant (e.g. CANDLE_COLUMNS): checked where defined
            return self.constant(value)
        if isinstance(node, ast.JoinedStr):
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    bad = self.constant(part.value, bound)
                    if bad:
                        return f"f-string interpolates {bad}"
            return None
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Mod):
                return "%-formatting"
            return self.constant(node.left, bound) or self.constant(node.right, bound)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return next((b for e in node.elts if (b := self.constant(e, bound))), None)
        if isinstance(node, ast.Attribute):
            return self.constant(node.value, bound)
        if isinstance(node, ast.Call):
            parts = [node.func, *node.args, *(k.value for k in node.keywords)]
            return next((b for p in parts if (b := self.constant(p, bound))), None)
        if isinstance(node, ast.GeneratorExp | ast.ListComp | ast.SetComp):
            names = set(bound)
            for gen in node.generators:
                bad = self.constant(gen.iter, frozenset(names))
                if bad:
                    return bad
                names |= {n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
            return self.constant(node.elt, frozenset(names))
        if isinstance(node, ast.Subscript):
            return self.constant(node.value, bound) or self.constant(node.slice, bound)
        if isinstance(node, ast.Slice):
            parts = [p for p in (node.lower, node.upper, node.step) if p is not None]
            return next((b for p in parts if (b := self.constant(p, bound))), None)
        return f"{type(node).__name__} expression"

    def statement(self, node: ast.expr) -> str | None:
        """A psycopg.sql composition, or constants only."""
        if _is_sql_composition(node):
            return None
        return self.constant(node)


def _is_sql_composition(node: ast.expr) -> bool:
    """``sql.SQL(<literal>)`` or ``sql.SQL(<literal>).format(sql.Identifier(...), ...)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "format":
            return _is_sql_composition(node.func.value) and all(
                _is_sql_composition(a) or _is_identifier(a) for a in node.args
            )
        if node.func.attr == "SQL" and _named(node.func.value, "sql"):
            return all(isinstance(a, ast.Constant) for a in node.args)
    return False


def _is_identifier(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("Identifier", "Literal")
        and _named(node.func.value, "sql")
    )


def _named(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def check_source(text: str, path: str) -> tuple[list[Finding], int]:
    """Findings, and how many SQL calls were checked."""
    tree = ast.parse(text)
    checker = _Checker(tree, path)
    findings: list[Finding] = []
    checked = 0
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    owner = {id(c): f.name for f in functions for c in ast.walk(f)}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_METHODS
            and node.args
        ):
            continue
        checked += 1
        where = f"{path}:{node.lineno}"
        if (path, owner.get(id(node))) in ALLOWED:
            continue
        checker._seen = set()
        bad = checker.statement(node.args[0])
        if bad:
            findings.append(Finding(where, f"statement built from {bad}"))
    return findings, checked


def production_files() -> list[Path]:
    return sorted(p for base in SOURCES for p in (ROOT / base).rglob("*.py"))


def test_every_sql_statement_in_the_services_is_parameterised() -> None:
    findings: list[Finding] = []
    total = 0
    for path in production_files():
        rel = path.relative_to(ROOT).as_posix()
        found, checked = check_source(path.read_text(encoding="utf-8"), rel)
        findings += found
        total += checked
    assert total >= 20, f"only {total} SQL calls found: is the checker looking in the right place?"
    assert not findings, "\n".join(f"{f.where}: {f.why}" for f in findings)


@pytest.mark.parametrize(
    "code",
    [
        "def f(conn, symbol):\n    conn.execute(f\"SELECT * FROM t WHERE s = '{symbol}'\")",
        "def f(conn, symbol):\n    conn.execute(\"SELECT * FROM t WHERE s = '%s'\" % symbol)",
        "def f(conn, table):\n    conn.execute('SELECT * FROM ' + table)",
        "def f(conn, cfg):\n    q = 'SELECT 1'\n    conn.execute(q)",
        "def f(conn, name):\n    conn.execute('DROP TABLE {}'.format(name))",
        "def f(cur, table):\n    cur.copy(f'COPY {table} FROM STDIN')",
        "def f(conn, name):\n    conn.execute(sql.SQL('DROP TABLE ' + name))",
        "_Q = 'SELECT {}'\ndef f(conn, v):\n    conn.execute(_Q.format(v))",
    ],
)
def test_the_checker_flags_statements_built_from_input(code: str) -> None:
    findings, checked = check_source(code, "example.py")
    assert checked == 1 and findings, code


@pytest.mark.parametrize(
    "code",
    [
        "def f(conn, s):\n    conn.execute('SELECT * FROM t WHERE s = %s', (s,))",
        "_T = 'stage'\ndef f(cur):\n    cur.copy(f'COPY {_T} FROM STDIN')",
        "COLS = ('a', 'b')\n_Q = f\"INSERT INTO t ({', '.join(COLS)}) VALUES (%s, %s)\"\n"
        "def f(conn, a, b):\n    conn.execute(_Q, (a, b))",
        "_V = ('a', 'b')\n_Q = f\"SET {', '.join(f'{c} = EXCLUDED.{c}' for c in _V)}\"\n"
        "def f(conn):\n    conn.execute(_Q)",
        "def f(conn, name):\n"
        "    conn.execute(sql.SQL('CREATE DATABASE {}').format(sql.Identifier(name)))",
        "TABLES = ('a', 'b')\ndef f(conn):\n    conn.execute('DROP TABLE ' + ', '.join(TABLES))",
    ],
)
def test_the_checker_accepts_parameters_and_constants(code: str) -> None:
    findings, checked = check_source(code, "example.py")
    assert checked == 1 and not findings, findings
