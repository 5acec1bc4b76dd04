"""The database edge: connections, migrations, the idempotent batch write. The only psycopg
importer. SQL is always parameterised; identifiers never come from input."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from qryptify.config import redact_dsn
from qryptify.errors import DatabaseUnavailable
from qryptify.kline import EmptyRange, Kline

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

CANDLE_COLUMNS = (
    "ts", "symbol", "interval", "open", "high", "low", "close", "volume", "close_time",
    "quote_asset_volume", "number_of_trades", "taker_buy_base", "taker_buy_quote",
)  # fmt: skip
_VALUE_COLUMNS = CANDLE_COLUMNS[3:]


def sql_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "sql", Path.cwd() / "sql", Path("/app/sql")):
        if (candidate / "001_candlesticks.sql").exists():
            return candidate
    raise FileNotFoundError("sql/001_candlesticks.sql not found next to the qryptify package")


def connect(dsn: str, *, autocommit: bool = False, connect_timeout_s: int = 10) -> Connection:
    """Open a connection; failures become DatabaseUnavailable with the password redacted."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=connect_timeout_s)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(redact_message(str(exc), dsn)) from None


def redact_message(message: str, dsn: str) -> str:
    """Remove the DSN and its password from a driver message."""
    from urllib.parse import urlsplit

    password = urlsplit(dsn).password
    cleaned = message.replace(dsn, redact_dsn(dsn))
    if password:
        cleaned = cleaned.replace(password, "***")
    return cleaned.strip()


def is_connection_error(exc: BaseException) -> bool:
    """Errors after which the same transaction may succeed on a new connection."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def is_database_error(exc: BaseException) -> bool:
    """Any error raised by the driver or the server (retry the transaction, commit nothing)."""
    return isinstance(exc, psycopg.Error | DatabaseUnavailable)


def is_limit_exceeded(exc: BaseException) -> bool:
    """SQLSTATE 53400: e.g. TimescaleDB's "tuple decompression limit exceeded by operation"
    (``timescaledb.max_tuples_decompressed_per_dml_transaction``); a smaller transaction fits."""
    return isinstance(exc, psycopg.errors.ConfigurationLimitExceeded)


def migrate(conn: Connection, directory: Path | None = None) -> list[str]:
    """Apply every ``sql/NNN_*.sql`` not applied yet, each in its own transaction.

    Each file is itself idempotent, so a half-recorded run is safe to repeat. Returns the
    versions applied now (empty when the schema was already current).
    """
    base = directory or sql_dir()
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
    for path in sorted(base.glob("[0-9][0-9][0-9]_*.sql")):
        version = path.stem
        with conn.transaction():
            # Serialise concurrent migrators (several services starting at once).
            conn.execute("SELECT pg_advisory_xact_lock(4242001)")
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s", (version,)
            ).fetchone()
            if done:
                continue
            conn.execute(path.read_text(encoding="utf-8").encode())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
            logger.info("applied migration %s", version)
    return applied_now


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


_STAGE = "qryptify_stage"
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    symbol TEXT, interval TEXT, open_time BIGINT, close_time BIGINT,
    open TEXT, high TEXT, low TEXT, close TEXT, volume TEXT, quote_volume TEXT,
    trades BIGINT, taker_buy_base TEXT, taker_buy_quote TEXT
) ON COMMIT DELETE ROWS
"""
_EPOCH = "TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond'"
# Statements below interpolate only module constants (column names), never input.
_UPSERT = f"""
INSERT INTO candlesticks ({", ".join(CANDLE_COLUMNS)})
SELECT {_EPOCH.format("open_time")}, symbol, interval,
       open::float8, high::float8, low::float8, close::float8, volume::float8,
       {_EPOCH.format("close_time")}, quote_volume::float8, trades,
       taker_buy_base::float8, taker_buy_quote::float8
FROM {_STAGE}
ON CONFLICT (symbol, interval, ts) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUE_COLUMNS)}
WHERE ({", ".join(f"candlesticks.{c}" for c in _VALUE_COLUMNS)})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _VALUE_COLUMNS)})
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
_EMPTY_RANGES = f"""
INSERT INTO empty_ranges (symbol, interval, start_ts, end_ts, confirmed_at)
SELECT s, i, {_EPOCH.format("a")}, {_EPOCH.format("b")}, {_EPOCH.format("c")}
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[])
     AS u(s, i, a, b, c)
ON CONFLICT (symbol, interval, start_ts) DO UPDATE SET
    end_ts = GREATEST(empty_ranges.end_ts, EXCLUDED.end_ts)
WHERE EXCLUDED.end_ts > empty_ranges.end_ts
"""


def _copy_text(klines: Iterable[Kline]) -> bytes:
    # Fields are validated decimals, symbols and intervals: no tabs, newlines or backslashes,
    # so COPY's text format needs no escaping. One buffer beats per-row writes by far.
    return "".join(
        f"{k.symbol}\t{k.interval}\t{k.open_time}\t{k.close_time}\t{k.open}\t{k.high}\t{k.low}"
        f"\t{k.close}\t{k.volume}\t{k.quote_volume}\t{k.trades}\t{k.taker_buy_base}"
        f"\t{k.taker_buy_quote}\n"
        for k in klines
    ).encode()


def write_batch(
    conn: Connection,
    klines: Sequence[Kline],
    empty_ranges: Sequence[EmptyRange] = (),
    *,
    max_tuples_decompressed: int | None = None,
    before_commit: Callable[[], None] | None = None,
) -> WriteResult:
    """Upsert candles, advance sync_state, record empty ranges: ONE transaction.

    ``klines`` must hold at most one record per (symbol, interval, open time) — see
    ``qryptify.kline.latest_per_key``. Identical rows are not rewritten (replays are no-ops).
    The caller commits Kafka offsets only after this returns. ``max_tuples_decompressed``
    sets TimescaleDB's per-transaction decompression limit for this transaction only (0 =
    unlimited); ``before_commit`` runs inside the transaction after every statement (tests use
    it to crash at that point).
    """
    written = 0
    with conn.transaction():
        if max_tuples_decompressed is not None:
            conn.execute(
                "SELECT set_config('timescaledb.max_tuples_decompressed_per_dml_transaction',"
                " %s, true)",
                (str(max_tuples_decompressed),),
            )
        if klines:
            conn.execute(_CREATE_STAGE)
            with conn.cursor() as cur:
                with cur.copy(f"COPY {_STAGE} FROM STDIN") as copy:
                    copy.write(_copy_text(klines))
                cur.execute(_UPSERT)
                written = max(cur.rowcount, 0)
            newest: dict[tuple[str, str], int] = {}
            for k in klines:
                ident = (k.symbol, k.interval)
                if k.open_time > newest.get(ident, -1):
                    newest[ident] = k.open_time
            conn.execute(
                _SYNC_STATE,
                ([s for s, _ in newest], [i for _, i in newest], list(newest.values())),
            )
        if empty_ranges:
            conn.execute(
                _EMPTY_RANGES,
                (
                    [r.symbol for r in empty_ranges],
                    [r.interval for r in empty_ranges],
                    [r.start_time for r in empty_ranges],
                    [r.end_time for r in empty_ranges],
                    [r.confirmed_at for r in empty_ranges],
                ),
            )
        if before_commit is not None:
            before_commit()
    return WriteResult(
        written=written, unchanged=len(klines) - written, empty_ranges=len(empty_ranges)
    )


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
