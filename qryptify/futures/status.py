"""``qryptify status`` for the futures kinds: one coverage row per series, one block.

- Funding, per symbol (kind ``funding``): rows, first and last funding time, gaps (consecutive
  fundings more than 8 h (and a minute: real times sit a few ms off) apart: no Binance
  perpetual settles less often; shorter intervals come from the data), the pointer.
- Mark / index / premium-index klines, per kind and pair: rows, first and last open time, gaps
  (candles missing between the first and the last that the exchange did not confirm empty),
  the confirmed-empty candles in that span, the pointer.

A gap in any of them breaches ``--max-gaps`` like a kline gap does (``breaches``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from psycopg import sql

from qryptify import db
from qryptify.futures.funding import KIND as FUNDING
from qryptify.futures.price import EMPTY_TABLES, TABLES, PriceKind
from qryptify.health_report import Breach, count_empty
from qryptify.pairs import Pair, count_opens, next_open

MAX_SPACING_H = 8
#: Real funding times sit a few ms off the hour (REST ``fundingTime`` 1678060800007): a spacing
#: counts as a gap only beyond 8 h and this.
SPACING_SLACK_S = 60

_FUNDING = """
SELECT count(*), min(funding_time), max(funding_time),
       count(*) FILTER (WHERE gap > make_interval(hours => %(h)s, secs => %(slack)s)),
       (SELECT last_ts FROM futures_sync_state
        WHERE kind = 'funding' AND symbol = %(s)s AND interval = '')
FROM (SELECT funding_time, funding_time - lag(funding_time) OVER (ORDER BY funding_time) AS gap
      FROM funding_rates WHERE symbol = %(s)s) AS f
"""


@dataclass(frozen=True, slots=True)
class Coverage:
    """One futures series in the database."""

    kind: str  # funding, mark, index, premium
    series: str  # the symbol (funding) or the pair
    rows: int
    first: str | None
    last: str | None
    gaps: int  # funding: spacings over 8 h; price klines: candles missing, not confirmed empty
    empty: int  # price klines: candles between first and last the exchange confirmed empty
    pointer: str | None

    @property
    def missing(self) -> str:
        """What ``gaps`` counts, for the breach's wording."""
        return "gaps" if self.kind == FUNDING else "candles missing"


def _text(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def coverage(
    conn: db.Connection, symbols: Sequence[str], kinds: Sequence[PriceKind], pairs: Sequence[Pair]
) -> list[Coverage]:
    """Funding per symbol of ``symbols`` (none when funding is off), then each price kind of
    ``kinds`` per pair."""
    out: list[Coverage] = []
    for symbol in dict.fromkeys(symbols):
        row = conn.execute(
            _FUNDING, {"s": symbol, "h": MAX_SPACING_H, "slack": SPACING_SLACK_S}
        ).fetchone()
        assert row is not None  # noqa: S101 - an aggregate always returns a row
        rows, first, last, gaps, pointer = row
        out.append(
            Coverage(
                FUNDING, symbol, int(rows), _text(first), _text(last), int(gaps), 0, _text(pointer)
            )
        )
    for kind in kinds:
        for pair in pairs:
            out.append(_price_coverage(conn, kind, pair))
    return out


def _price_coverage(conn: db.Connection, kind: PriceKind, pair: Pair) -> Coverage:
    key = {"k": kind, "s": pair.symbol, "i": pair.interval}
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), min(ts), max(ts), (SELECT last_ts FROM futures_sync_state"
            " WHERE kind = %(k)s AND symbol = %(s)s AND interval = %(i)s)"
            " FROM {} WHERE symbol = %(s)s AND interval = %(i)s"
        ).format(sql.Identifier(TABLES[kind])),
        key,
    ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    rows, first, last, pointer = row
    gaps = empty = 0
    if first is not None and last is not None:
        ranges = conn.execute(
            sql.SQL(
                "SELECT start_ts, end_ts FROM {} WHERE symbol = %(s)s AND interval = %(i)s"
                " AND end_ts > %(a)s AND start_ts <= %(b)s"
            ).format(sql.Identifier(EMPTY_TABLES[kind])),
            {**key, "a": first, "b": last},
        ).fetchall()
        spans = [(_ms(a), _ms(b)) for a, b in ranges]
        gaps, empty = price_gaps(pair.interval, _ms(first), _ms(last), int(rows), spans)
    return Coverage(
        kind, str(pair), int(rows), _text(first), _text(last), gaps, empty, _text(pointer)
    )


def price_gaps(
    interval: str, first_ms: int, last_ms: int, rows: int, empty: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """``(gaps, empty)`` of a series holding ``rows`` candles from ``first_ms`` to ``last_ms``
    (open times): the grid slots between them that are neither stored nor inside an
    exchange-confirmed empty range (the sink keeps no candle inside one), and those that are
    confirmed empty."""
    end = next_open(interval, last_ms)
    confirmed = count_empty(interval, first_ms, end, empty)
    return max(0, count_opens(interval, first_ms, end) - rows - confirmed), confirmed


def render(rows: Sequence[Coverage]) -> str:
    lines = [
        "futures: funding rates, mark / index / premium-index klines",
        f"  {'kind':<8}{'series':<16}{'rows':>8}  {'first':<17} {'last':<17} {'gaps':>5}"
        f" {'empty':>6}  pointer",
    ]
    for c in rows:
        lines.append(
            f"  {c.kind:<8}{c.series:<16}{c.rows:>8}  {c.first or '-':<17} {c.last or '-':<17} "
            f"{c.gaps:>5} {c.empty:>6}  {c.pointer or '-'}"
        )
    return "\n".join(lines)


def to_json(rows: Sequence[Coverage]) -> list[dict[str, object]]:
    return [asdict(c) for c in rows]


def breaches(rows: Sequence[Coverage], max_gaps: int) -> list[Breach]:
    """The futures series with more gaps than ``--max-gaps`` allows (funding: spacings over
    8 h; price klines: candles missing and not confirmed empty), as the verdict's breaches."""
    return [
        Breach("gaps", f"{c.kind} {c.series}", f"{c.gaps} {c.missing} > --max-gaps {max_gaps}")
        for c in rows
        if c.gaps > max_gaps
    ]
