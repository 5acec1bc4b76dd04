"""``qryptify reset-db`` as a real process against the real PostgreSQL from stack/."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qryptify import db
from qryptify.commands.reset_db import PROJECT_TABLES, database_name
from qryptify.kline import EmptyRange
from tests.conftest import T0, make_kline

Run = Callable[..., subprocess.CompletedProcess[str]]


def seed(dsn: str) -> None:
    klines = [make_kline("BTCUSDT", "1m", T0 + i * 60_000) for i in range(5)]
    with db.connect(dsn) as conn:
        db.write_batch(conn, klines, [EmptyRange("BTCUSDT", "1m", T0 - 60_000, T0, T0)])
        # Not the project's: reset-db must leave it alone.
        conn.execute("CREATE TABLE strategy_notes (note TEXT)")
        conn.execute("INSERT INTO strategy_notes VALUES ('keep me')")
        conn.commit()


def counts(dsn: str) -> dict[str, int]:
    with db.connect(dsn) as conn:
        return {
            table: int(row[0])
            for table in ("candlesticks", "sync_state", "empty_ranges", "strategy_notes")
            if (row := conn.execute(f"SELECT count(*) FROM {table}").fetchone()) is not None  # noqa: S608
        }


def applied_migrations(dsn: str) -> list[str]:
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT version FROM qryptify_schema_migrations ORDER BY version"
        ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.fixture
def config(tmp_path: Path, db_dsn: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"db": {"dsn": db_dsn}, "sink": {"group_id": "g-reset"}}))
    return path


@pytest.fixture
def run(config: Path) -> Run:
    def go(*args: str, stdin: int) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QRYPTIFY_")}
        return subprocess.run(
            [sys.executable, "-m", "qryptify", "--config", str(config), "reset-db", *args],
            stdin=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    return go


def test_force_drops_the_project_tables_and_migrates_again(db_dsn: str, run: Run) -> None:
    seed(db_dsn)
    assert counts(db_dsn) == {
        "candlesticks": 5,
        "sync_state": 1,
        "empty_ranges": 1,
        "strategy_notes": 1,
    }
    proc = run("-f", stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert counts(db_dsn) == {
        "candlesticks": 0,
        "sync_state": 0,
        "empty_ranges": 0,
        "strategy_notes": 1,
    }
    migrations = sorted(p.stem for p in db.sql_dir().glob("[0-9][0-9][0-9]_*.sql"))
    assert applied_migrations(db_dsn) == migrations
    assert "qryptify replay --dsn" in proc.stdout
    assert "make replay" in proc.stdout
    assert "g-reset" in proc.stdout  # the sink group's committed offsets are mentioned


def test_refuses_without_a_terminal_and_without_force(db_dsn: str, run: Run) -> None:
    seed(db_dsn)
    proc = run(stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert "stdin is not a terminal" in proc.stderr
    assert "-f/--force" in proc.stderr
    assert counts(db_dsn)["candlesticks"] == 5


def _run_on_tty(run: Run, answer: str) -> subprocess.CompletedProcess[str]:
    """Run with a pseudo-terminal as stdin, the answer already typed."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode() + b"\n")
        return run(stdin=slave)
    finally:
        os.close(master)
        os.close(slave)


def test_a_wrong_database_name_changes_nothing(db_dsn: str, run: Run) -> None:
    seed(db_dsn)
    proc = _run_on_tty(run, "not-" + database_name(db_dsn))
    assert proc.returncode == 1
    assert f"Type the database name ({database_name(db_dsn)})" in proc.stdout
    assert "candlesticks holds 5 rows" in proc.stdout
    assert "nothing changed" in proc.stderr
    assert counts(db_dsn)["candlesticks"] == 5


def test_typing_the_database_name_resets_it(db_dsn: str, run: Run) -> None:
    seed(db_dsn)
    proc = _run_on_tty(run, database_name(db_dsn))
    assert proc.returncode == 0, proc.stderr
    assert counts(db_dsn)["candlesticks"] == 0
    assert counts(db_dsn)["strategy_notes"] == 1
    assert set(PROJECT_TABLES) <= set(proc.stdout.replace(",", " ").split())


def test_lists_what_it_drops_before_asking(db_dsn: str, run: Run) -> None:
    seed(db_dsn)
    proc = _run_on_tty(run, "no")
    listing = proc.stdout.index("drops only the project's tables")
    assert listing < proc.stdout.index("Type the database name")
    assert (
        "candlesticks, empty_ranges, funding_rates, futures_sync_state, "
        "index_price_empty_ranges, index_price_klines, mark_price_empty_ranges, "
        "mark_price_klines, premium_index_empty_ranges, premium_index_klines, "
        "qryptify_schema_migrations, sync_state"
    ) in proc.stdout
    assert "never with CASCADE" in proc.stdout


def test_a_dependent_view_stops_it_and_nothing_changes(db_dsn: str, run: Run) -> None:
    seed(db_dsn)
    with db.connect(db_dsn) as conn:
        conn.execute("CREATE VIEW strategy_btc AS SELECT ts, close FROM candlesticks")
        conn.commit()
    proc = run("-f", stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert "strategy_btc" in proc.stderr and "Nothing changed" in proc.stderr
    assert counts(db_dsn)["candlesticks"] == 5
    with db.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM strategy_btc").fetchone() == (5,)


def test_another_tools_schema_migrations_is_left_alone(db_dsn: str, run: Run) -> None:
    with db.connect(db_dsn) as conn:
        conn.execute("CREATE TABLE schema_migrations (version VARCHAR PRIMARY KEY)")
        conn.execute("INSERT INTO schema_migrations VALUES ('20240101000000')")
        conn.commit()
    proc = run("-f", stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    with db.connect(db_dsn) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert rows == [("20240101000000",)]
        assert db.migrate(conn) == []
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == rows


def test_the_old_migrations_table_is_adopted_and_dropped(db_dsn: str) -> None:
    migrations = sorted(p.stem for p in db.sql_dir().glob("[0-9][0-9][0-9]_*.sql"))
    with db.connect(db_dsn) as conn:
        # The layout and rows an earlier release left behind.
        conn.execute("ALTER TABLE qryptify_schema_migrations RENAME TO schema_migrations")
        conn.commit()
        assert db.migrate(conn) == []  # nothing re-applied: the records were adopted
        legacy = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        assert legacy == (None,)
    assert applied_migrations(db_dsn) == migrations
