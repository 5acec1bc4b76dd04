"""Compare the ``candlesticks`` table with the simulator's ground truth, row by row.

``python -m sim check --dsn DSN --sim URL --pair BTCUSDT/1m ... --start ... --end ...``
prints one line per pair (missing / extra / wrong / ignored) and exits 1 on any discrepancy.

* Truth is ``GET /sim/truth`` (closed candles only, exchange-empty ranges excluded), fetched in
  chunks so a year of 1m candles never has to sit in one response.
* Numbers compare as ``float(truth string) == db value``: exact double equality is right because
  both sides parse the same decimal string (the DB column is DOUBLE PRECISION).
* DB rows whose candle lies entirely inside an exchange-empty range (``GET /sim/availability``)
  are ignored, not counted as extra: empty ranges may be switched on after the rows were
  ingested. They are reported as ``ignored``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from qryptify.errors import PairError
from qryptify.pairs import Pair, close_time, parse_pair
from sim.symbols import parse_time_ms

# The 12 REST columns mapped to candlesticks columns (index → column); 0 is the key (ts).
COMPARED: tuple[tuple[int, str], ...] = (
    (1, "open"),
    (2, "high"),
    (3, "low"),
    (4, "close"),
    (5, "volume"),
    (6, "close_time"),
    (7, "quote_asset_volume"),
    (8, "number_of_trades"),
    (9, "taker_buy_base"),
    (10, "taker_buy_quote"),
)
DB_COLUMNS = ("ts",) + tuple(name for _, name in COMPARED)
TRUTH_CHUNK_MS = 35 * 86_400_000  # ~50k 1m candles per truth request


@dataclass(frozen=True, slots=True)
class RowDiff:
    open_time: int
    column: str
    truth: object
    db: object


@dataclass(frozen=True, slots=True)
class PairReport:
    pair: Pair
    truth_rows: int
    db_rows: int
    missing: tuple[int, ...] = ()  # open times in truth, not in the DB
    extra: tuple[int, ...] = ()  # open times in the DB, not in truth
    wrong: tuple[RowDiff, ...] = ()
    ignored: tuple[int, ...] = ()  # DB rows inside exchange-empty ranges

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.wrong)


@dataclass(frozen=True, slots=True)
class CheckReport:
    start_ms: int
    end_ms: int
    pairs: tuple[PairReport, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.pairs)


def _to_ms(value: object) -> int:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return round(moment.timestamp() * 1000)
    if isinstance(value, int):
        return value
    raise TypeError(f"expected a timestamp, got {value!r}")


def compare_rows(
    pair: Pair,
    truth: Sequence[Sequence[Any]],
    db_rows: Iterable[Mapping[str, Any]],
    empty_ranges: Sequence[tuple[int, int]] = (),
) -> PairReport:
    """Pure comparison of truth rows (REST layout) with DB rows (``DB_COLUMNS`` keys)."""
    by_open = {int(row[0]): row for row in truth}
    seen: set[int] = set()
    extra: list[int] = []
    wrong: list[RowDiff] = []
    ignored: list[int] = []
    db_count = 0
    for db in db_rows:
        db_count += 1
        ts = _to_ms(db["ts"])
        row = by_open.get(ts)
        if row is None:
            if _inside_empty(pair.interval, ts, empty_ranges):
                ignored.append(ts)
            else:
                extra.append(ts)
            continue
        seen.add(ts)
        for index, column in COMPARED:
            expected = row[index]
            actual = db[column]
            if column == "close_time":
                if _to_ms(actual) != int(expected):
                    wrong.append(RowDiff(ts, column, expected, actual))
            elif column == "number_of_trades":
                if actual is None or int(actual) != int(expected):
                    wrong.append(RowDiff(ts, column, expected, actual))
            elif actual is None or float(expected) != float(actual):
                wrong.append(RowDiff(ts, column, expected, actual))
    missing = sorted(t for t in by_open if t not in seen)
    return PairReport(
        pair,
        len(by_open),
        db_count,
        tuple(missing),
        tuple(sorted(extra)),
        tuple(wrong),
        tuple(sorted(ignored)),
    )


def _inside_empty(interval: str, open_ms: int, ranges: Sequence[tuple[int, int]]) -> bool:
    last = close_time(interval, open_ms)
    return any(start <= open_ms and last < end for start, end in ranges)


def fetch_truth(client: httpx.Client, pair: Pair, start_ms: int, end_ms: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    lo = start_ms
    while lo < end_ms:
        hi = min(end_ms, lo + TRUTH_CHUNK_MS)
        response = client.get(
            "/sim/truth",
            params={"symbol": pair.symbol, "interval": pair.interval, "start": lo, "end": hi},
        )
        response.raise_for_status()
        rows.extend(response.json())
        lo = hi
    return rows


def fetch_empty_ranges(client: httpx.Client, symbol: str) -> list[tuple[int, int]]:
    response = client.get("/sim/availability", params={"symbol": symbol})
    response.raise_for_status()
    body = response.json()
    ranges = [(int(a), int(b)) for a, b in body["empty_ranges"]]
    # Before listing and after settlement nothing exists either.
    ranges.append((-(2**62), int(body["first_open"])))
    if body["end"] is not None:
        ranges.append((int(body["end"]), 2**62))
    return ranges


def compare_db_with_truth(
    dsn: str, sim_url: str, pairs: list[Pair], start_ms: int, end_ms: int
) -> CheckReport:
    """Compare ``candlesticks`` rows with ``start_ms <= ts < end_ms`` against the truth."""
    import psycopg
    from psycopg.rows import dict_row

    reports: list[PairReport] = []
    query = (
        "SELECT ts, open, high, low, close, volume, close_time, quote_asset_volume, "
        "number_of_trades, taker_buy_base, taker_buy_quote FROM candlesticks "
        "WHERE symbol = %s AND interval = %s AND ts >= %s AND ts < %s ORDER BY ts"
    )
    start_dt = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    end_dt = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    with (
        httpx.Client(base_url=sim_url, timeout=120.0) as client,
        psycopg.connect(dsn, row_factory=dict_row) as conn,
    ):
        for pair in pairs:
            truth = fetch_truth(client, pair, start_ms, end_ms)
            empty = fetch_empty_ranges(client, pair.symbol)
            with conn.cursor() as cur:
                cur.execute(query, (pair.symbol, pair.interval, start_dt, end_dt))
                reports.append(compare_rows(pair, truth, cur, empty))
    return CheckReport(start_ms, end_ms, tuple(reports))


def format_report(report: CheckReport, details: int = 5) -> str:
    heads = ("truth", "db", "missing", "extra", "wrong", "ignored")
    lines = [f"{'pair':<22} " + " ".join(f"{h:>8}" for h in heads)]
    for p in report.pairs:
        lines.append(
            f"{str(p.pair):<22} {p.truth_rows:>8} {p.db_rows:>8} {len(p.missing):>8} "
            f"{len(p.extra):>8} {len(p.wrong):>8} {len(p.ignored):>8}"
        )
        for label, times in (("missing", p.missing), ("extra", p.extra)):
            for t in times[:details]:
                lines.append(f"    {label} {t} ({_iso(t)})")
        for diff in p.wrong[:details]:
            lines.append(
                f"    wrong {diff.open_time} ({_iso(diff.open_time)}) {diff.column}: "
                f"truth {diff.truth!r} db {diff.db!r}"
            )
    lines.append("OK" if report.ok else "DISCREPANCIES FOUND")
    return "\n".join(lines)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when the database matches, 1 on a discrepancy, 2 bad arguments, 3 the simulator
    or the database unreachable (one line, no traceback)."""
    import psycopg

    parser = argparse.ArgumentParser(prog="qryptify-sim check")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--sim", required=True, help="simulator base URL")
    parser.add_argument("--pair", action="append", required=True, help="e.g. BTCUSDT/1m")
    parser.add_argument("--start", required=True, help="ISO date or epoch ms (inclusive)")
    parser.add_argument("--end", default=None, help="ISO date or epoch ms (exclusive); default now")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        pairs = [parse_pair(p) for p in args.pair]
        start = parse_time_ms(args.start, "--start")
        if args.end is None:
            end = int(httpx.get(f"{args.sim}/fapi/v1/time", timeout=30).json()["serverTime"])
        else:
            end = parse_time_ms(args.end, "--end")
    except httpx.HTTPError as exc:
        print(f"check: simulator {args.sim} unavailable: {exc}", file=sys.stderr)
        return 3
    except (PairError, ValueError) as exc:
        print(f"check: {exc}", file=sys.stderr)
        return 2
    try:
        report = compare_db_with_truth(args.dsn, args.sim, pairs, start, end)
    except httpx.HTTPError as exc:
        print(f"check: simulator {args.sim} unavailable: {exc}", file=sys.stderr)
        return 3
    except psycopg.Error as exc:
        print(f"check: database unavailable: {' '.join(str(exc).split())}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(report_to_json(report), indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def report_to_json(report: CheckReport) -> dict[str, Any]:
    return {
        "start": report.start_ms,
        "end": report.end_ms,
        "ok": report.ok,
        "pairs": [
            {
                "pair": str(p.pair),
                "truth_rows": p.truth_rows,
                "db_rows": p.db_rows,
                "missing": list(p.missing),
                "extra": list(p.extra),
                "wrong": [
                    {"open_time": d.open_time, "column": d.column, "truth": d.truth, "db": d.db}
                    for d in p.wrong
                ],
                "ignored": list(p.ignored),
            }
            for p in report.pairs
        ],
    }
