"""The database edge: connections, migrations, the idempotent batch write. The only psycopg
importer. SQL is always parameterised; identifiers never come from input."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from qryptify.errors import DatabaseUnavailable
from qryptify.gaps import Range, holes_from_jumps, missing_runs
from qryptify.kline import EmptyRange, Kline
from qryptify.pairs import interval_ms
from qryptify.redaction import redact_message
from qryptify.sink.rows import CandleBatch, copy_binary

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

CANDLE_COLUMNS = (
    "ts", "symbol", "interval", "open", "high", "low", "close", "volume", "close_time",
    "quote_asset_volume", "number_of_trades", "taker_buy_base", "taker_buy_quote",
)  # fmt: skip
_VALUE_COLUMNS = CANDLE_COLUMNS[3:]


def sql_dir() -> Path:
    """The migrations shipped inside the package (``qryptify/sql``)."""
    return Path(__file__).resolve().parent / "sql"


#: No statement and no lock wait lasts forever: a hung server, a forgotten ``LOCK TABLE`` or a
#: stuck transaction elsewhere becomes an error the caller retries (55P03 / 57014). A sink batch
#: takes seconds; the limit stays under Kafka's max.poll.interval.ms (300 s), since a retried
#: write runs on the consumer's thread. Migrations lift it for themselves.
STATEMENT_TIMEOUT_MS = 120_000
LOCK_TIMEOUT_MS = 30_000
#: TCP keepalives: a peer that vanished (host down, NAT dropped the flow) is noticed in about
#: idle + interval * count = 60 s instead of the kernel's two hours.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 30, 10, 3


def connect(
    dsn: str,
    *,
    autocommit: bool = False,
    connect_timeout_s: int = 10,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
) -> Connection:
    """Open a connection with the timeouts and keepalives above (the DSN's own ``options``
    are kept, ours appended); failures become DatabaseUnavailable with the password redacted."""
    try:
        existing = conninfo_to_dict(dsn).get("options") or ""
        options = (
            f"{existing} -c statement_timeout={int(statement_timeout_ms)}"
            f" -c lock_timeout={int(lock_timeout_ms)}"
        ).strip()
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=connect_timeout_s,
            options=options,
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE_S,
            keepalives_interval=KEEPALIVE_INTERVAL_S,
            keepalives_count=KEEPALIVE_COUNT,
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(redact_message(str(exc), dsn)) from None


#: SQLSTATEs a single record causes (classes 22 data exception and 23 integrity constraint
#: violation) — except 23505, the primary-key conflict the write path expects and handles.
_EXPECTED_CONFLICT = "23505"


def is_record_sqlstate(sqlstate: str | None) -> bool:
    """True for a data error that one record causes: bisect the batch, dead-letter the
    record. Everything else (08 connection, 53 resources, 57 shutdown/cancel, 40001/40P01,
    55P03 lock timeout, no SQLSTATE at all) is about availability: pause and retry."""
    return (
        sqlstate is not None
        and len(sqlstate) == 5
        and sqlstate[:2] in ("22", "23")
        and sqlstate != _EXPECTED_CONFLICT
    )


def record_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` when one record caused it (see ``is_record_sqlstate``)."""
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None
    return sqlstate if is_record_sqlstate(sqlstate) else None


def is_database_error(exc: BaseException) -> bool:
    """Any error raised by the driver or the server (retry the transaction, commit nothing)."""
    return isinstance(exc, psycopg.Error | DatabaseUnavailable)


def is_limit_exceeded(exc: BaseException) -> bool:
    """SQLSTATE 53400: e.g. TimescaleDB's "tuple decompression limit exceeded by operation"
    (``timescaledb.max_tuples_decompressed_per_dml_transaction``); a smaller transaction fits."""
    return isinstance(exc, psycopg.errors.ConfigurationLimitExceeded)


#: The project's migration bookkeeping. A project-specific name: ``schema_migrations`` is also
#: Rails' (and other tools'), and trading code often shares this database.
MIGRATIONS_TABLE = "qryptify_schema_migrations"
#: What releases before the rename used; its rows are adopted once (see ``_adopt_legacy``).
LEGACY_MIGRATIONS_TABLE = "schema_migrations"
#: Every object the migrations create (the timescaledb extension aside: other schemas may use
#: it); ``reset-db`` drops exactly these.
PROJECT_TABLES = (
    "candlesticks", "sync_state", "empty_ranges", "funding_rates", "futures_sync_state",
    "mark_price_klines", "index_price_klines", "premium_index_klines",
    "mark_price_empty_ranges", "index_price_empty_ranges", "premium_index_empty_ranges",
    MIGRATIONS_TABLE,
)  # fmt: skip
_MIGRATION_LOCK = 4242001
# No CASCADE: an object of other code depending on these tables stops the drop, named.
_DROP_PROJECT_TABLES = "DROP TABLE IF EXISTS " + ", ".join(PROJECT_TABLES)


def drop_project_tables(conn: Connection) -> None:
    """Drop exactly the tables the migrations created (``PROJECT_TABLES``), never CASCADE:
    raises psycopg.errors.DependentObjectsStillExist when other objects depend on them."""
    conn.execute(_DROP_PROJECT_TABLES)


def migration_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or sql_dir()).glob("[0-9][0-9][0-9]_*.sql"))


def migrate(conn: Connection, directory: Path | None = None) -> list[str]:
    """Apply every ``sql/NNN_*.sql`` not applied yet, each in its own transaction.

    Each file is itself idempotent, so a half-recorded run is safe to repeat. Returns the
    versions applied now (empty when the schema was already current).
    """
    files = migration_files(directory)
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        _adopt_legacy(conn, [p.stem for p in files])
    for path in files:
        version = path.stem
        with conn.transaction():
            # Serialise concurrent migrators (several services starting at once).
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            # A migration may rewrite a large table: no statement limit for it.
            conn.execute("SET LOCAL statement_timeout = 0")
            done = conn.execute(
                f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE version = %s", (version,)
            ).fetchone()
            if done:
                continue
            conn.execute(path.read_text(encoding="utf-8").encode())
            conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES (%s)", (version,))
            applied_now.append(version)
            logger.info("applied migration %s", version)
    return applied_now


_ADOPT = (
    f"INSERT INTO {MIGRATIONS_TABLE} (version) SELECT version::text FROM"
    f" {LEGACY_MIGRATIONS_TABLE} WHERE version::text = ANY(%s) ON CONFLICT (version) DO NOTHING"
)
_ADOPT_WITH_TIMES = (
    f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at) SELECT version::text, applied_at"
    f" FROM {LEGACY_MIGRATIONS_TABLE} WHERE version::text = ANY(%s)"
    " ON CONFLICT (version) DO NOTHING"
)


def _adopt_legacy(conn: Connection, versions: list[str]) -> None:
    """Move this project's rows out of a ``schema_migrations`` written by an earlier release;
    drop that table only when it is then empty and has exactly the layout this project gave
    it (another tool's table of the same name keeps its rows and stays)."""
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (LEGACY_MIGRATIONS_TABLE,),
    ).fetchall()
    names = {str(c[0]) for c in columns}
    if "version" not in names:
        return
    if "applied_at" in names:
        moved = conn.execute(_ADOPT_WITH_TIMES, (versions,)).rowcount
    else:
        moved = conn.execute(_ADOPT, (versions,)).rowcount
    conn.execute(
        f"DELETE FROM {LEGACY_MIGRATIONS_TABLE} WHERE version::text = ANY(%s)", (versions,)
    )
    left = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {LEGACY_MIGRATIONS_TABLE})").fetchone()
    if names == {"version", "applied_at"} and left == (False,):
        conn.execute(f"DROP TABLE {LEGACY_MIGRATIONS_TABLE}")
    if moved:
        logger.info(
            "adopted %d migration records from %s into %s",
            moved,
            LEGACY_MIGRATIONS_TABLE,
            MIGRATIONS_TABLE,
        )


def timescale_version(conn: Connection) -> str | None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int  # rows inserted or changed
    unchanged: int  # rows identical to what the table had (replays)
    empty_ranges: int
    deleted: int = 0  # stored candles inside exchange-confirmed empty ranges, removed
    #: Wall and thread-CPU seconds of the statements, then of the COMMIT (the sink's timers).
    timings: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0), compare=False)


_STAGE = "qryptify_stage_rows"
# Same columns as candlesticks, so one COPY line format serves both paths.
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE candlesticks) ON COMMIT DELETE ROWS
"""
_EPOCH = "TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond'"
# Statements below interpolate only module constants (column names), never input.
_COLUMNS = ", ".join(CANDLE_COLUMNS)
_COPY_CANDLES = f"COPY candlesticks ({_COLUMNS}) FROM STDIN"
_COPY_STAGE = f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN"
_COPY_CANDLES_BINARY = _COPY_CANDLES + " (FORMAT binary)"
_COPY_STAGE_BINARY = _COPY_STAGE + " (FORMAT binary)"
#: Binary COPY framing: signature, flags, header extension length; then a field count of -1.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
BINARY_TRAILER = b"\xff\xff"
_UPSERT = f"""
INSERT INTO candlesticks ({_COLUMNS})
SELECT {_COLUMNS} FROM {_STAGE}
ON CONFLICT (symbol, interval, ts) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUE_COLUMNS)}
WHERE ({", ".join(f"candlesticks.{c}" for c in _VALUE_COLUMNS)})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _VALUE_COLUMNS)})
"""
# Does the table hold any row inside a pair's span of the batch? (one index probe per pair)
_ANY_STORED = f"""
SELECT EXISTS (
    SELECT 1 FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS u(s, i, a, b)
    WHERE EXISTS (
        SELECT 1 FROM candlesticks c
        WHERE c.symbol = u.s AND c.interval = u.i
          AND c.ts BETWEEN {_EPOCH.format("u.a")} AND {_EPOCH.format("u.b")}
    )
)
"""
_SYNC_STATE = f"""
INSERT INTO sync_state (symbol, interval, last_closed_ts, updated_at)
SELECT s, i, {_EPOCH.format("t")}, now()
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(s, i, t)
ON CONFLICT (symbol, interval) DO UPDATE SET
    last_closed_ts = GREATEST(sync_state.last_closed_ts, EXCLUDED.last_closed_ts),
    updated_at = now()
WHERE EXCLUDED.last_closed_ts > sync_state.last_closed_ts
"""


def write_batch(
    conn: Connection,
    klines: Sequence[Kline],
    empty_ranges: Sequence[EmptyRange] = (),
    **options: Any,
) -> WriteResult:
    """``write_rows`` for validated Klines (tools and tests; the sink stages rows itself).
    ``klines`` must hold at most one record per (symbol, interval, open time) — see
    ``qryptify.kline.latest_per_key``."""
    return write_rows(conn, CandleBatch.from_klines(klines), empty_ranges, **options)


def write_rows(
    conn: Connection,
    batch: CandleBatch,
    empty_ranges: Sequence[EmptyRange] = (),
    *,
    max_tuples_decompressed: int | None = None,
    before_commit: Callable[[], None] | None = None,
) -> WriteResult:
    """Write candles, advance sync_state, record empty ranges (deleting the candles stored
    inside them): ONE transaction.

    When the table holds no row inside any pair's span of the batch (a first load, a replay
    into an empty database, live candles), the rows go in with one plain COPY — as fast as the
    table can take them. Otherwise, or if a concurrent writer got there first (unique violation,
    caught at a savepoint), they are staged and upserted: identical rows are not rewritten
    (replays are no-ops), changed ones are updated (later value wins).

    The caller commits Kafka offsets only after this returns. ``max_tuples_decompressed`` sets
    TimescaleDB's per-transaction decompression limit for this transaction only (0 = unlimited);
    ``before_commit`` runs inside the transaction after every statement (tests crash there).
    """
    written = 0
    deleted = 0
    started, started_cpu = time.perf_counter(), time.thread_time()
    with conn.transaction():
        if max_tuples_decompressed is not None:
            conn.execute(
                "SELECT set_config('timescaledb.max_tuples_decompressed_per_dml_transaction',"
                " %s, true)",
                (str(max_tuples_decompressed),),
            )
        if empty_ranges:
            # Before the rows: a row of this batch inside a range came after it (the batch
            # dropped the ones before it), so it must survive the delete.
            deleted = delete_emptied(conn, empty_ranges)
        if batch.rows:
            pairs = list(batch.spans)
            firsts = [span[0] for span in batch.spans.values()]
            lasts = [span[1] for span in batch.spans.values()]
            text = batch.copy_text()
            if _insert_new(conn, text, pairs, firsts, lasts, batch.binary):
                written = len(batch)
            else:
                written = _upsert(conn, text, batch.binary)
            conn.execute(_SYNC_STATE, ([s for s, _ in pairs], [i for _, i in pairs], lasts))
        record_empty(conn, empty_ranges)
        if batch.rows:
            trim_filled_ranges(conn, batch.spans)
        if before_commit is not None:
            before_commit()
        done, done_cpu = time.perf_counter(), time.thread_time()
    timings = (
        done - started,
        done_cpu - started_cpu,
        time.perf_counter() - done,
        time.thread_time() - done_cpu,
    )
    return WriteResult(
        written=written,
        unchanged=len(batch) - written,
        empty_ranges=len(empty_ranges),
        deleted=deleted,
        timings=timings,
    )


# The empty-range statements name their tables: ``candlesticks`` / ``empty_ranges`` for the
# klines, a price kind's kline table and its empty-range table (``qryptify.futures.store``) for
# the futures series, which keep the same rules. Table names come from fixed mappings.


def delete_emptied(
    conn: Connection, ranges: Sequence[EmptyRange], candles: str = "candlesticks"
) -> int:
    """Delete the candles stored inside exchange-confirmed empty ranges (a corrected archive
    file no longer has them; DESIGN invariant 8: nothing is kept that the exchange does not
    have). Returns how many."""
    if not ranges:
        return 0
    cur = conn.execute(
        sql.SQL(
            "DELETE FROM {0} c"
            " USING unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS u(s, i, a, b)"
            " WHERE c.symbol = u.s AND c.interval = u.i"
            " AND c.ts >= TIMESTAMPTZ 'epoch' + u.a * INTERVAL '1 millisecond'"
            " AND c.ts < TIMESTAMPTZ 'epoch' + u.b * INTERVAL '1 millisecond'"
        ).format(sql.Identifier(candles)),
        _spans(ranges),
    )
    return max(cur.rowcount, 0)


def _spans(ranges: Sequence[EmptyRange]) -> tuple[list[str], list[str], list[int], list[int]]:
    """The ranges as the statements' four arrays: symbols, intervals, starts, ends."""
    return (
        [r.symbol for r in ranges],
        [r.interval for r in ranges],
        [r.start_time for r in ranges],
        [r.end_time for r in ranges],
    )


def trim_filled_ranges(
    conn: Connection,
    spans: Mapping[tuple[str, str], tuple[int, int]],
    candles: str = "candlesticks",
    empty: str = "empty_ranges",
) -> None:
    """Recorded empty ranges of the ``spans`` (per (symbol, interval): the first and last open
    time just written) that now hold candles keep only their still-empty parts (a later candle
    wins over an earlier empty range, as a later value wins over an earlier one)."""
    found = conn.execute(
        sql.SQL(
            "SELECT e.symbol, e.interval, (extract(epoch FROM e.start_ts) * 1000)::bigint,"
            " (extract(epoch FROM e.end_ts) * 1000)::bigint,"
            " (extract(epoch FROM e.confirmed_at) * 1000)::bigint,"
            " ARRAY(SELECT (extract(epoch FROM c.ts) * 1000)::bigint FROM {0} c"
            " WHERE c.symbol = e.symbol AND c.interval = e.interval"
            " AND c.ts >= e.start_ts AND c.ts < e.end_ts ORDER BY c.ts)"
            " FROM {1} e"
            " JOIN unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS u(s, i, a, b)"
            " ON e.symbol = u.s AND e.interval = u.i"
            " AND e.start_ts <= TIMESTAMPTZ 'epoch' + u.b * INTERVAL '1 millisecond'"
            " AND e.end_ts > TIMESTAMPTZ 'epoch' + u.a * INTERVAL '1 millisecond'"
            " WHERE EXISTS (SELECT 1 FROM {0} c WHERE c.symbol = e.symbol"
            " AND c.interval = e.interval AND c.ts >= e.start_ts AND c.ts < e.end_ts)"
        ).format(sql.Identifier(candles), sql.Identifier(empty)),
        (
            [s for s, _ in spans],
            [i for _, i in spans],
            [a for a, _ in spans.values()],
            [b for _, b in spans.values()],
        ),
    ).fetchall()
    pieces: list[EmptyRange] = []
    for symbol, interval, start, end, confirmed, stored in found:
        conn.execute(
            sql.SQL(
                "DELETE FROM {0} WHERE symbol = %s AND interval = %s"
                " AND start_ts = TIMESTAMPTZ 'epoch' + %s * INTERVAL '1 millisecond'"
            ).format(sql.Identifier(empty)),
            (symbol, interval, start),
        )
        pieces += [
            EmptyRange(symbol, interval, a, b, confirmed)
            for a, b in missing_runs(interval, start, end, stored)
        ]
    record_empty(conn, pieces, empty)


def record_empty(
    conn: Connection, ranges: Sequence[EmptyRange], table: str = "empty_ranges"
) -> None:
    """Upsert exchange-confirmed empty ranges: one row per (symbol, interval, start), the
    widest end kept (a repeated range is a no-op)."""
    if ranges:
        conn.execute(
            sql.SQL(
                "INSERT INTO {0} (symbol, interval, start_ts, end_ts, confirmed_at)"
                " SELECT s, i, TIMESTAMPTZ 'epoch' + a * INTERVAL '1 millisecond',"
                " TIMESTAMPTZ 'epoch' + b * INTERVAL '1 millisecond',"
                " TIMESTAMPTZ 'epoch' + c * INTERVAL '1 millisecond'"
                " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
                " AS u(s, i, a, b, c)"
                " ON CONFLICT (symbol, interval, start_ts) DO UPDATE SET"
                " end_ts = GREATEST({0}.end_ts, EXCLUDED.end_ts)"
                " WHERE EXCLUDED.end_ts > {0}.end_ts"
            ).format(sql.Identifier(table)),
            (*_spans(ranges), [r.confirmed_at for r in ranges]),
        )


#: Text per binary conversion while copying: about 1,000 rows, small enough that PostgreSQL
#: parses one piece while the next is converted.
COPY_PIECE_BYTES = 128 * 1024


def copy_pieces(text: bytes, size: int) -> list[bytes]:
    """``text`` cut after a newline about every ``size`` bytes (whole COPY lines)."""
    pieces: list[bytes] = []
    start = 0
    while len(text) - start > size:
        end = text.find(b"\n", start + size - 1)
        if end < 0:
            break
        pieces.append(text[start : end + 1])
        start = end + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _copy_rows(cur: Any, *, stage: bool, text: bytes, binary: bytes | None = None) -> None:
    """COPY the candle rows into candlesticks or the staging table.

    PostgreSQL reads binary rows with less CPU than text (no float or timestamp parsing):
    ``binary`` (the rows of ``text`` converted as they were staged) goes as it is. Otherwise,
    with the compiled core, the lines are converted piece by piece while the server parses
    the previous piece; from the first piece the core does not take (a line that is not
    exactly what the sink stages) the rest goes by a second, text COPY in the same
    transaction, for PostgreSQL to judge; without the core, all of it does."""
    # The pieces to send, and each one's binary rows (None: not taken by the core).
    pieces: list[bytes]
    convert: Callable[[bytes], bytes | None]
    if binary is not None:
        pieces, convert = [text], lambda _piece: binary
    else:
        pieces, convert = copy_pieces(text, COPY_PIECE_BYTES), copy_binary
    first = convert(pieces[0]) if pieces else None
    rest = 0
    if first is not None:
        rest = len(pieces)
        statement = cur.copy(_COPY_STAGE_BINARY) if stage else cur.copy(_COPY_CANDLES_BINARY)
        with statement as copy:
            copy.write(BINARY_HEADER)
            copy.write(first)
            for i in range(1, len(pieces)):
                rows = convert(pieces[i])
                if rows is None:
                    rest = i
                    break
                copy.write(rows)
            copy.write(BINARY_TRAILER)
    if rest < len(pieces):
        statement = cur.copy(_COPY_STAGE) if stage else cur.copy(_COPY_CANDLES)
        with statement as copy:
            for piece in pieces[rest:]:
                copy.write(piece)


def _insert_new(
    conn: Connection,
    text: bytes,
    pairs: list[tuple[str, str]],
    firsts: list[int],
    lasts: list[int],
    binary: bytes | None = None,
) -> bool:
    """COPY straight into candlesticks when nothing stored overlaps; False when it may."""
    row = conn.execute(
        _ANY_STORED, ([s for s, _ in pairs], [i for _, i in pairs], firsts, lasts)
    ).fetchone()
    if row is None or row[0]:
        return False
    try:
        with conn.transaction(), conn.cursor() as cur:
            _copy_rows(cur, stage=False, text=text, binary=binary)
    except psycopg.errors.UniqueViolation:
        logger.debug("a row appeared between the overlap check and COPY; upserting instead")
        return False
    return True


def _upsert(conn: Connection, text: bytes, binary: bytes | None = None) -> int:
    conn.execute(_CREATE_STAGE)
    with conn.cursor() as cur:
        _copy_rows(cur, stage=True, text=text, binary=binary)
        cur.execute(_UPSERT)
        return max(cur.rowcount, 0)


def create_database(admin_dsn: str, name: str) -> None:
    """CREATE DATABASE (tests, replay targets). The name is quoted as an identifier."""
    with connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_dsn: str, name: str) -> None:
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# Neighbours that are not one grid step apart: one index range scan of the pair, jump rows only.
# The step is an SQL interval so that 1M steps by calendar month (in UTC, set below).
_CANDLE_JUMPS = f"""
SELECT (extract(epoch FROM ts) * 1000)::bigint, (extract(epoch FROM next_ts) * 1000)::bigint
FROM (
    SELECT ts, lead(ts) OVER (ORDER BY ts) AS next_ts
    FROM candlesticks
    WHERE symbol = %(symbol)s AND interval = %(interval)s
      AND ts >= {_EPOCH.format("%(start)s")} AND ts < {_EPOCH.format("%(end)s")}
) AS steps
WHERE next_ts <> ts + %(step)s::interval
ORDER BY ts
"""


def candle_jumps(
    conn: Connection, symbol: str, interval: str, start_ms: int, end_ms: int
) -> list[tuple[int, int]]:
    """``(open, next stored open)`` for every stored candle of the pair in ``[start_ms,
    end_ms)`` whose successor is not the next grid slot (``qryptify.gaps`` turns them into
    holes). The one candle-jump query, used by the backfiller's gap finder and by status."""
    step = "1 month" if interval == "1M" else f"{interval_ms(interval)} milliseconds"
    params = {"symbol": symbol, "interval": interval, "start": start_ms, "end": end_ms}
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")  # calendar months of UTC
        rows = conn.execute(_CANDLE_JUMPS, params | {"step": step}).fetchall()
    return [(int(a), int(b)) for a, b in rows]


_MS = "(extract(epoch FROM {}) * 1000)::bigint"
_STORED_SPAN = f"""
SELECT {_MS.format("min(ts)")}, {_MS.format("max(ts)")}
FROM candlesticks
WHERE symbol = %(symbol)s AND interval = %(interval)s
  AND ts >= {_EPOCH.format("%(start)s")} AND ts < {_EPOCH.format("%(end)s")}
"""
_EMPTY_WITHIN = f"""
SELECT {_MS.format("start_ts")}, {_MS.format("end_ts")}
FROM empty_ranges
WHERE symbol = %(symbol)s AND interval = %(interval)s
  AND end_ts > {_EPOCH.format("%(start)s")} AND start_ts < {_EPOCH.format("%(end)s")}
ORDER BY start_ts
"""
_SYNC_POINTER = f"""
SELECT {_MS.format("last_closed_ts")}
FROM sync_state WHERE symbol = %(symbol)s AND interval = %(interval)s
"""


def stored_holes(
    conn: Connection, symbol: str, interval: str, start_ms: int, end_ms: int
) -> list[Range]:
    """Holes of the pair in ``candlesticks`` over ``[start_ms, end_ms)``, minus recorded empty
    ranges. The jumps are found server-side (``candle_jumps``); only their ends travel."""
    if end_ms <= start_ms:
        return []
    params = {"symbol": symbol, "interval": interval, "start": start_ms, "end": end_ms}
    with conn.transaction():
        first, last = conn.execute(_STORED_SPAN, params).fetchone() or (None, None)
        jumps = candle_jumps(conn, symbol, interval, start_ms, end_ms)
        empty = empty_ranges_within(conn, symbol, interval, start_ms, end_ms)
    return holes_from_jumps(
        interval,
        start_ms,
        end_ms,
        None if first is None else int(first),
        None if last is None else int(last),
        jumps,
        empty,
    )


def empty_ranges_within(
    conn: Connection, symbol: str, interval: str, start_ms: int, end_ms: int
) -> list[tuple[int, int]]:
    """Recorded empty ranges of the pair overlapping ``[start_ms, end_ms)``, as ``(start,
    end)`` ms in start order: the exchange confirmed no candle there."""
    params = {"symbol": symbol, "interval": interval, "start": start_ms, "end": end_ms}
    return [(int(a), int(b)) for a, b in conn.execute(_EMPTY_WITHIN, params).fetchall()]


def sync_pointer(conn: Connection, symbol: str, interval: str) -> int | None:
    """``sync_state.last_closed_ts`` of the pair (ms): everything the sink wrote is at or
    before it; None before its first write."""
    row = conn.execute(_SYNC_POINTER, {"symbol": symbol, "interval": interval}).fetchone()
    return None if row is None or row[0] is None else int(row[0])
