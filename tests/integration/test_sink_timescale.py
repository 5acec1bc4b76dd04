"""What the sink relies on in TimescaleDB, checked on a real TimescaleDB (2.23, PGlite + WASM,
the npm package pinned in tests/timescale/; the stack's PostgreSQL has no timescaledb): DML
into compressed chunks beyond ``timescaledb.max_tuples_decompressed_per_dml_transaction``
fails with SQLSTATE 53400 (what ``qryptify.db.is_limit_exceeded`` matches, so the sink halves
the transaction), smaller transactions pass, and an identical replay updates nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qryptify import db
from tests.integration.test_timescale_migrations import PGLITE, TS_DIR, _ensure_node_modules

SCRIPT = """
const dist = process.env.PGLITE_DIST
const { PGlite } = await import(dist + '/index.js')
const { timescaledb } = await import(dist + '/timescaledb/index.js')
import fs from 'fs'
const sql = JSON.parse(fs.readFileSync(process.env.SQL_JSON, 'utf8'))
const pg = await PGlite.create({ extensions: { timescaledb } })
for (const f of sql.migrations) await pg.exec(fs.readFileSync(f, 'utf8'))
await pg.exec(`INSERT INTO candlesticks SELECT ts, 'BTCUSDT', '1m', 1, 2, 0.5, 1.5, 10,
  ts + interval '59.999 s', 5, 3, 1, 1 FROM generate_series(timestamptz '2024-01-01',
  timestamptz '2024-01-02 23:59', interval '1 minute') ts`)
await pg.query("SELECT count(compress_chunk(c)) FROM show_chunks('candlesticks') c")
const limitSql = "SELECT set_config('timescaledb.max_tuples_decompressed_per_dml_transaction',"
  + " $1, true)"
// The stage is ON COMMIT DELETE ROWS: fill it inside the transaction, as write_batch does.
const fill = (from, to) => `INSERT INTO ${sql.stage}
  SELECT ts, 'BTCUSDT', '1m', 1, 2, 0.5,
         CASE WHEN ts = '2024-01-01 10:00' THEN 1.75 ELSE 1.5 END, 10,
         ts + interval '59.999 s', 5, 3, 1, 1
  FROM generate_series(timestamptz '${from}', timestamptz '${to}', interval '1 minute') ts`
const out = {}
const attempt = async (name, limit, from, to) => {
  await pg.exec('BEGIN')
  await pg.exec(sql.create_stage)
  await pg.query(limitSql, [String(limit)])
  await pg.exec(fill(from, to))
  try {
    const r = await pg.query(sql.upsert)
    await pg.exec('COMMIT')
    out[name] = { rows: r.affectedRows }
  } catch (e) {
    await pg.exec('ROLLBACK')
    out[name] = { code: e.code, message: e.message }
  }
}
await attempt('two_days_limit_1500', 1500, '2024-01-01', '2024-01-02 23:59')
await attempt('half_day_limit_1500', 1500, '2024-01-01', '2024-01-01 11:59')
await attempt('half_day_again', 1500, '2024-01-01', '2024-01-01 11:59')
const at = "SELECT close FROM candlesticks WHERE ts = '2024-01-01 10:00'"
out.close = (await pg.query(at)).rows[0].close
out.rows = (await pg.query('SELECT count(*)::int AS n FROM candlesticks')).rows[0].n
console.log(JSON.stringify(out))
await pg.close()
"""


def test_decompression_limit_is_sqlstate_53400_and_smaller_transactions_pass(
    tmp_path: Path,
) -> None:
    _ensure_node_modules()
    sql_json = tmp_path / "sql.json"
    migrations = [str(p) for p in sorted(db.sql_dir().glob("[0-9][0-9][0-9]_*.sql"))]
    sql_json.write_text(
        json.dumps(
            {
                "migrations": migrations,
                "stage": db._STAGE,
                "create_stage": db._CREATE_STAGE,
                "upsert": db._UPSERT,
            }
        )  # fmt: skip
    )
    script = tmp_path / "limit.mjs"
    script.write_text(SCRIPT)
    done = subprocess.run(
        ["node", str(script)],
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "SQL_JSON": str(sql_json),
            "PGLITE_DIST": f"file://{TS_DIR / 'node_modules' / PGLITE / 'dist'}",
        },  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"node failed: {done.stderr[-2000:]}", pytrace=False)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Two compressed days in one transaction decompress more than 1500 tuples: refused.
    assert out["two_days_limit_1500"]["code"] == "53400", out
    assert "decompression limit" in out["two_days_limit_1500"]["message"]
    # Half a day fits; only the differing candle is written, and a replay writes nothing.
    assert out["half_day_limit_1500"] == {"rows": 1}
    assert out["half_day_again"] == {"rows": 0}
    assert (out["close"], out["rows"]) == (1.75, 2 * 1440)


def test_is_limit_exceeded_matches_that_sqlstate(db_dsn: str) -> None:
    with db.connect(db_dsn) as conn:
        try:
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'limit' USING ERRCODE = '53400'; END $$")
        except Exception as exc:
            assert db.is_limit_exceeded(exc)
            assert db.is_database_error(exc)
        else:  # pragma: no cover
            raise AssertionError("no error raised")
