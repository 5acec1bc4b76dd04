"""The futures tables' database edge: one idempotent upsert of funding rates and the
per-kind sync pointer, in one transaction. SQL is parameterised (arrays through unnest)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from qryptify.db import Connection
from qryptify.futures.funding import KIND, FundingRate

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
SELECT %s, s, '', t FROM unnest(%s::text[], %s::timestamptz[]) AS u(s, t)
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
        conn.execute(ADVANCE_SYNC, (KIND, list(newest), [_dt(ms) for ms in newest.values()]))
    return changed
