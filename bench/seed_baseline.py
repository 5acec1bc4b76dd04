"""The seed's ingestion approach, rebuilt as the reference for ``make bench`` figures 1–3.

What the seed did, and what this module does the same way:

* pairs one after another; per pair, sequential REST pages of ``limit=1500`` from the start
  time, the next page starting after the last row received;
* a NEW ``httpx.Client`` for every request (no connection reuse);
* every page written with psycopg ``executemany`` of ``INSERT … ON CONFLICT DO NOTHING`` into
  ``candlesticks`` and committed;
* no weight accounting: HTTP 429 (or 418) raises ``SeedStopped`` — the seed exited there.

    .venv/bin/python -m bench.seed_baseline --url http://127.0.0.1:PORT --dsn DSN \
        --pairs BTCUSDT/1m,ETHUSDT/1m --start 2024-01-01 --end 2025-01-01
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from qryptify.kline import Kline
from qryptify.pairs import Pair, interval_ms, parse_pair

SEED_PAGE_LIMIT = 1500

INSERT_SQL = (
    "INSERT INTO candlesticks (ts, symbol, interval, open, high, low, close, volume, close_time,"
    " quote_asset_volume, number_of_trades, taker_buy_base, taker_buy_quote)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (symbol, interval, ts) DO NOTHING"
)

Row = tuple[Any, ...]


class SeedStopped(RuntimeError):
    """The exchange answered 429/418: the seed had no weight budget and died here."""

    def __init__(self, status: int, pair: Pair, pages: int, retry_after: str | None) -> None:
        self.status = status
        self.pair = pair
        self.pages = pages
        self.retry_after = retry_after
        super().__init__(
            f"HTTP {status} on {pair} after {pages} pages (Retry-After: {retry_after}); "
            "the seed exits here"
        )


@dataclass(slots=True)
class SeedResult:
    candles: int = 0
    pages: int = 0
    seconds: float = 0.0
    #: Why it stopped early (the 429/418 exception text), or None when it finished.
    stopped: str | None = None
    status_counts: dict[int, int] = field(default_factory=dict)

    @property
    def candles_per_s(self) -> float:
        return self.candles / self.seconds if self.seconds > 0 else float("nan")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def rest_row(symbol: str, interval: str, raw: Sequence[Any]) -> Row:
    """One ``/fapi/v1/klines`` array → the seed's insert parameters."""
    return (
        _dt(int(raw[0])),
        symbol,
        interval,
        float(raw[1]),
        float(raw[2]),
        float(raw[3]),
        float(raw[4]),
        float(raw[5]),
        _dt(int(raw[6])),
        float(raw[7]),
        int(raw[8]),
        float(raw[9]),
        float(raw[10]),
    )


def kline_row(k: Kline) -> Row:
    """A Kline → the seed's insert parameters (figure 1's write-path reference)."""
    return (
        _dt(k.open_time),
        k.symbol,
        k.interval,
        float(k.open),
        float(k.high),
        float(k.low),
        float(k.close),
        float(k.volume),
        _dt(k.close_time),
        float(k.quote_volume),
        k.trades,
        float(k.taker_buy_base),
        float(k.taker_buy_quote),
    )


def insert_rows(conn: psycopg.Connection[Any], rows: Sequence[Row]) -> None:
    """The seed's write: executemany INSERT … ON CONFLICT DO NOTHING, then COMMIT."""
    with conn.cursor() as cur:
        cur.executemany(INSERT_SQL, rows)
    conn.commit()


def seed_pages(
    base_url: str,
    pair: Pair,
    start_ms: int,
    end_ms: int,
    result: SeedResult,
    limit: int = SEED_PAGE_LIMIT,
    timeout_s: float = 30.0,
) -> Iterator[list[list[Any]]]:
    """Sequential pages of ``pair`` over ``[start_ms, end_ms)``, one new client per request."""
    start = start_ms
    step = interval_ms(pair.interval)
    while start < end_ms:
        with httpx.Client(base_url=base_url, timeout=timeout_s) as client:  # new per request
            response = client.get(
                "/fapi/v1/klines",
                params={
                    "symbol": pair.symbol,
                    "interval": pair.interval,
                    "startTime": start,
                    "endTime": end_ms - 1,
                    "limit": limit,
                },
            )
        status = response.status_code
        result.status_counts[status] = result.status_counts.get(status, 0) + 1
        if status in (418, 429):
            raise SeedStopped(status, pair, result.pages, response.headers.get("Retry-After"))
        response.raise_for_status()
        rows: list[list[Any]] = response.json()
        result.pages += 1
        if not rows:
            return
        yield rows
        start = int(rows[-1][0]) + step


def run_seed(
    base_url: str,
    dsn: str,
    pairs: Sequence[Pair],
    start_ms: int,
    end_ms: int,
    limit: int = SEED_PAGE_LIMIT,
) -> SeedResult:
    """Backfill ``pairs`` the seed's way into ``candlesticks`` at ``dsn``.

    Returns when every pair reached ``end_ms`` or at the first 429/418 (``stopped`` says so).
    """
    result = SeedResult()
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        try:
            for pair in pairs:
                for page in seed_pages(base_url, pair, start_ms, end_ms, result, limit):
                    rows = [rest_row(pair.symbol, pair.interval, raw) for raw in page]
                    insert_rows(conn, rows)
                    result.candles += len(rows)
        except SeedStopped as exc:
            result.stopped = str(exc)
    result.seconds = time.perf_counter() - started
    return result


def seed_write(dsn: str, klines: Sequence[Kline], page: int = SEED_PAGE_LIMIT) -> float:
    """Write ``klines`` with the seed's write path (one executemany + COMMIT per page of 1500,
    as the seed did per REST page). Returns the seconds taken (conversion included)."""
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for i in range(0, len(klines), page):
            insert_rows(conn, [kline_row(k) for k in klines[i : i + page]])
    return time.perf_counter() - started


def _ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.seed_baseline", description=__doc__)
    parser.add_argument("--url", required=True, help="exchange (simulator) base URL")
    parser.add_argument("--dsn", required=True, help="database with the candlesticks table")
    parser.add_argument("--pairs", required=True, help="comma-separated SYMBOL/interval")
    parser.add_argument("--start", required=True, help="ISO date/time (UTC)")
    parser.add_argument("--end", required=True, help="ISO date/time (UTC), exclusive")
    parser.add_argument("--limit", type=int, default=SEED_PAGE_LIMIT)
    args = parser.parse_args(argv)
    pairs = [parse_pair(p.strip()) for p in args.pairs.split(",") if p.strip()]
    result = run_seed(args.url, args.dsn, pairs, _ms(args.start), _ms(args.end), args.limit)
    print(
        f"seed: {result.candles} candles in {result.pages} pages, {result.seconds:.1f}s "
        f"({result.candles_per_s:,.0f}/s); statuses {result.status_counts}"
        + (f"; STOPPED: {result.stopped}" if result.stopped else "")
    )
    return 1 if result.stopped else 0


if __name__ == "__main__":
    raise SystemExit(main())
