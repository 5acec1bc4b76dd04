"""The futures tables' database edge: idempotent upserts of funding rates and price klines, the
price kinds' exchange-confirmed empty ranges (the klines' rules, ``qryptify.db``) and the
per-kind sync pointer, in one transaction. SQL is parameterised (arrays through unnest);
table names come from the fixed ``TABLES`` mapping, composed with ``psycopg.sql``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from psycopg import sql

from qryptify import db
from qryptify.db import Connection
from qryptify.futures.funding import KIND, FundingRate
from qryptify.futures.price import EMPTY_TABLES, TABLES, PriceEmptyRange, PriceKind, PriceKline

#: COALESCE keeps what only one source knows (REST's mark price, the archive's interval), so
#: any order of the two records for one funding leaves the same row; the WHERE makes a
#: repeated record a no-op (no dead tuple).
UPSERT_FUNDING = """
INSERT INTO funding_rates (funding_time, symbol, funding_rate, mark_price, interval_hours)
SELECT t, s, r::float8, m::float8, h
FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::int[]) AS u(t, s, r, m, h)
ON CONFLICT (symbol, funding_time) DO UPDATE SET
    funding_rate = EXCLUDED.funding_rate,
    mark_price = COALESCE(EXCLUDED.mark_price, funding_rates.mark_price),
    interval_hours = COALESCE(EXCLUDED.interval_hours, funding_rates.interval_hours)
WHERE (funding_rates.funding_rate, funding_rates.mark_price, funding_rates.interval_hours)
    IS DISTINCT FROM (EXCLUDED.funding_rate,
                      COALESCE(EXCLUDED.mark_price, funding_rates.mark_price),
                      COALESCE(EXCLUDED.interval_hours, funding_rates.interval_hours))
"""

ADVANCE_SYNC = """
INSERT INTO futures_sync_state (kind, symbol, interval, last_ts)
SELECT k, s, i, t
FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) AS u(k, s, i, t)
ON CONFLICT (kind, symbol, interval) DO UPDATE SET
    last_ts = GREATEST(futures_sync_state.last_ts, EXCLUDED.last_ts),
    updated_at = now()
WHERE EXCLUDED.last_ts > futures_sync_state.last_ts
"""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def write_funding(conn: Connection, rows: Sequence[FundingRate]) -> int:
    """Upsert ``rows`` (at most one per symbol and funding time) and advance the funding
    pointer per symbol, in one transaction. Returns the rows inserted or changed."""
    if not rows:
        return 0
    newest: dict[str, int] = {}
    for f in rows:
        if f.funding_time > newest.get(f.symbol, -1):
            newest[f.symbol] = f.funding_time
    with conn.transaction():
        cur = conn.execute(
            UPSERT_FUNDING,
            (
                [_dt(f.funding_time) for f in rows],
                [f.symbol for f in rows],
                [f.funding_rate for f in rows],
                [f.mark_price for f in rows],
                [f.interval_hours for f in rows],
            ),
        )
        changed = cur.rowcount
        n = len(newest)
        conn.execute(
            ADVANCE_SYNC, ([KIND] * n, list(newest), [""] * n, [_dt(t) for t in newest.values()])
        )
    return changed


def write_futures(
    conn: Connection,
    funding: Sequence[FundingRate],
    prices: Sequence[PriceKline],
    empty: Sequence[PriceEmptyRange] = (),
) -> int:
    """Funding rates, price klines (at most one per key) and the price kinds' confirmed empty
    ranges in one transaction, each kind's pointer advanced per symbol and interval. Returns
    the rows inserted or changed.

    Per kind, as for the klines (``db.write_rows``): the candles stored inside the batch's
    empty ranges are deleted first (the batch dropped its own candles that came before a
    range, so the ones left came after it), then the candles are upserted, the ranges
    recorded, and recorded ranges that now hold a candle trimmed to their still-empty parts."""
    with conn.transaction():
        changed = write_funding(conn, funding)
        by_kind: dict[PriceKind, list[PriceKline]] = {}
        for k in prices:
            by_kind.setdefault(k.kind, []).append(k)
        ranges: dict[PriceKind, list[PriceEmptyRange]] = {}
        for e in empty:
            ranges.setdefault(e.kind, []).append(e)
        for kind, spans in ranges.items():
            db.delete_emptied(conn, [e.range for e in spans], TABLES[kind])
        newest: dict[tuple[str, str, str], int] = {}
        for kind, rows in by_kind.items():
            # The same rules as candlesticks: a repeated candle is a no-op, a differing one
            # replaces it. The statement is inline: a psycopg.sql composition of a literal.
            cur = conn.execute(
                sql.SQL(
                    "INSERT INTO {0} (ts, symbol, interval, open, high, low, close, close_time,"
                    " samples) SELECT t, s, i, o::float8, h::float8, l::float8, c::float8, ct, n"
                    " FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[],"
                    " %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::bigint[])"
                    " AS u(t, s, i, o, h, l, c, ct, n)"
                    " ON CONFLICT (symbol, interval, ts) DO UPDATE SET open = EXCLUDED.open,"
                    " high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,"
                    " close_time = EXCLUDED.close_time, samples = EXCLUDED.samples"
                    " WHERE ({0}.open, {0}.high, {0}.low, {0}.close, {0}.close_time, {0}.samples)"
                    " IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low,"
                    " EXCLUDED.close, EXCLUDED.close_time, EXCLUDED.samples)"
                ).format(sql.Identifier(TABLES[kind])),
                (
                    [_dt(k.open_time) for k in rows],
                    [k.symbol for k in rows],
                    [k.interval for k in rows],
                    [k.open for k in rows],
                    [k.high for k in rows],
                    [k.low for k in rows],
                    [k.close for k in rows],
                    [_dt(k.close_time) for k in rows],
                    [k.samples for k in rows],
                ),
            )
            changed += cur.rowcount
            written: dict[tuple[str, str], tuple[int, int]] = {}
            for k in rows:
                ident = (k.kind, k.symbol, k.interval)
                if k.open_time > newest.get(ident, -1):
                    newest[ident] = k.open_time
                first, last = written.get((k.symbol, k.interval), (k.open_time, k.open_time))
                written[(k.symbol, k.interval)] = (min(first, k.open_time), max(last, k.open_time))
            if kind in ranges:
                db.record_empty(conn, [e.range for e in ranges.pop(kind)], EMPTY_TABLES[kind])
            db.trim_filled_ranges(conn, written, TABLES[kind], EMPTY_TABLES[kind])
        for kind, spans in ranges.items():  # kinds with ranges and no candles in the batch
            db.record_empty(conn, [e.range for e in spans], EMPTY_TABLES[kind])
        if newest:
            conn.execute(
                ADVANCE_SYNC,
                (
                    [i[0] for i in newest],
                    [i[1] for i in newest],
                    [i[2] for i in newest],
                    [_dt(ms) for ms in newest.values()],
                ),
            )
    return changed
