"""``qryptify status`` for the futures kinds.

- Funding, per symbol: rows, first and last funding time, gaps (consecutive fundings more than
  8 h apart: no Binance perpetual settles less often; shorter intervals come from the data),
  the pointer.
- Mark / index / premium-index klines, per kind and pair: rows, first and last open time, gaps
  (candles missing between the first and the last), the pointer.

A gap in any of them breaches ``--max-gaps`` like a kline gap does (``breaches``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from psycopg import sql

from qryptify import db
from qryptify.futures.price import TABLES, PriceKind
from qryptify.health_report import Breach
from qryptify.pairs import Pair, count_opens, next_open

MAX_SPACING_H = 8

_COVERAGE = """
SELECT count(*), min(funding_time), max(funding_time),
       count(*) FILTER (WHERE gap > make_interval(hours => %(h)s)),
       (SELECT last_ts FROM futures_sync_state
        WHERE kind = 'funding' AND symbol = %(s)s AND interval = '')
FROM (SELECT funding_time, funding_time - lag(funding_time) OVER (ORDER BY funding_time) AS gap
      FROM funding_rates WHERE symbol = %(s)s) AS f
"""


@dataclass(frozen=True, slots=True)
class FundingCoverage:
    symbol: str
    rows: int
    first: str | None
    last: str | None
    gaps: int
    pointer: str | None


def _text(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def funding_coverage(conn: db.Connection, symbols: Sequence[str]) -> list[FundingCoverage]:
    out: list[FundingCoverage] = []
    for symbol in dict.fromkeys(symbols):
        row = conn.execute(_COVERAGE, {"s": symbol, "h": MAX_SPACING_H}).fetchone()
        assert row is not None  # noqa: S101 - an aggregate always returns a row
        rows, first, last, gaps, pointer = row
        out.append(
            FundingCoverage(symbol, int(rows), _text(first), _text(last), int(gaps), _text(pointer))
        )
    return out


def render(coverage: Sequence[FundingCoverage]) -> str:
    lines = [
        "futures: funding rates",
        f"  {'symbol':<14}{'rows':>8}  {'first':<17} {'last':<17} {'gaps':>5}  pointer",
    ]
    for c in coverage:
        lines.append(
            f"  {c.symbol:<14}{c.rows:>8}  {c.first or '-':<17} {c.last or '-':<17} "
            f"{c.gaps:>5}  {c.pointer or '-'}"
        )
    return "\n".join(lines)


def to_json(coverage: Sequence[FundingCoverage]) -> list[dict[str, object]]:
    return [asdict(c) for c in coverage]


@dataclass(frozen=True, slots=True)
class PriceCoverage:
    kind: str
    pair: str
    rows: int
    first: str | None
    last: str | None
    gaps: int  # candles missing between first and last
    pointer: str | None


def price_coverage(
    conn: db.Connection, kinds: Sequence[PriceKind], pairs: Sequence[Pair]
) -> list[PriceCoverage]:
    out: list[PriceCoverage] = []
    for kind in kinds:
        for pair in pairs:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), min(ts), max(ts), (SELECT last_ts FROM futures_sync_state"
                    " WHERE kind = %(k)s AND symbol = %(s)s AND interval = %(i)s)"
                    " FROM {} WHERE symbol = %(s)s AND interval = %(i)s"
                ).format(sql.Identifier(TABLES[kind])),
                {"k": kind, "s": pair.symbol, "i": pair.interval},
            ).fetchone()
            assert row is not None  # noqa: S101 - an aggregate always returns a row
            rows, first, last, pointer = row
            gaps = 0
            if first is not None and last is not None:
                lo = int(first.timestamp() * 1000)
                hi = next_open(pair.interval, int(last.timestamp() * 1000))
                gaps = count_opens(pair.interval, lo, hi) - int(rows)
            out.append(
                PriceCoverage(
                    kind, str(pair), int(rows), _text(first), _text(last), gaps, _text(pointer)
                )
            )
    return out


def render_prices(coverage: Sequence[PriceCoverage]) -> str:
    lines = [
        "futures: mark / index / premium-index klines",
        f"  {'kind':<8}{'pair':<16}{'rows':>8}  {'first':<17} {'last':<17} {'gaps':>5}  pointer",
    ]
    for c in coverage:
        lines.append(
            f"  {c.kind:<8}{c.pair:<16}{c.rows:>8}  {c.first or '-':<17} {c.last or '-':<17} "
            f"{c.gaps:>5}  {c.pointer or '-'}"
        )
    return "\n".join(lines)


def prices_to_json(coverage: Sequence[PriceCoverage]) -> list[dict[str, object]]:
    return [asdict(c) for c in coverage]


def breaches(
    funding: Sequence[FundingCoverage], prices: Sequence[PriceCoverage], max_gaps: int
) -> list[Breach]:
    """The futures series with more gaps than ``--max-gaps`` allows (funding: spacings over
    8 h; price klines: candles missing), as the status verdict's breaches."""
    found = [
        Breach("gaps", f"funding {c.symbol}", f"{c.gaps} gaps > --max-gaps {max_gaps}")
        for c in funding
        if c.gaps > max_gaps
    ]
    found += [
        Breach("gaps", f"{c.kind} {c.pair}", f"{c.gaps} candles missing > --max-gaps {max_gaps}")
        for c in prices
        if c.gaps > max_gaps
    ]
    return found
