"""Rows of the ``candlesticks`` table in PostgreSQL's COPY text format, and batches of them.

Pure: the sink stages every candle as one COPY line as soon as it is consumed (see
``qryptify.sink.batch``), and ``qryptify.db`` sends a batch's lines in one ``COPY``. Lines carry
the seed table's columns in its order, so the same bytes serve a direct ``COPY candlesticks``
and the staging table of the upsert.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from qryptify import native
from qryptify.kline import Kline

DAY_MS = 86_400_000

#: One staged candle: (symbol, interval, open time ms, COPY line ending in a newline).
CandleRow = tuple[str, str, int, bytes]
PairKey = tuple[str, str]

_DAY_TEXT: dict[int, bytes] = {}
_TIME_TEXT: dict[int, bytes] = {}
_CACHE_LIMIT = 200_000


def ts_text(ms: int) -> bytes:
    """``ms`` since the epoch as TIMESTAMPTZ input text, e.g. ``b"2024-01-01 00:00:00.000+00"``.

    Candles share few distinct days and times of day, so both halves are cached; this is on the
    sink's per-row path (two calls per candle)."""
    day, rem = divmod(ms, DAY_MS)
    date = _DAY_TEXT.get(day)
    if date is None:
        if len(_DAY_TEXT) > _CACHE_LIMIT:
            _DAY_TEXT.clear()
        midnight = datetime.fromtimestamp(day * 86_400, UTC)
        date = _DAY_TEXT[day] = midnight.strftime("%Y-%m-%d ").encode()
    clock = _TIME_TEXT.get(rem)
    if clock is None:
        if len(_TIME_TEXT) > _CACHE_LIMIT:
            _TIME_TEXT.clear()
        seconds, millis = divmod(rem, 1000)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        clock = _TIME_TEXT[rem] = b"%02d:%02d:%02d.%03d+00" % (hours, minutes, seconds, millis)
    return date + clock


#: The COPY line of one candle, in ``qryptify.db.CANDLE_COLUMNS`` order. Fields are validated
#: decimals, symbols and intervals (no tab, newline or backslash), so nothing needs escaping.
LINE = b"%b\t%b\t%b\t%b\t%b\t%b\t%b\t%b\t%b\t%b\t%d\t%b\t%b\n"


def kline_line(k: Kline) -> bytes:
    """The COPY line of a validated Kline (the general path; the sink's fast path builds the
    same bytes straight from the Avro record)."""
    return LINE % (
        ts_text(k.open_time), k.symbol.encode(), k.interval.encode(), k.open.encode(),
        k.high.encode(), k.low.encode(), k.close.encode(), k.volume.encode(),
        ts_text(k.close_time), k.quote_volume.encode(), k.trades, k.taker_buy_base.encode(),
        k.taker_buy_quote.encode(),
    )  # fmt: skip


def copy_binary(text: bytes) -> bytes | None:
    """The rows of candle COPY ``text`` in PostgreSQL's binary COPY format (without its
    header and trailer), or None: without the compiled core, or when a line is not exactly
    what the sink stages (the text is then sent as it is, and PostgreSQL judges it)."""
    if native.MODULE is None or not text:
        return None
    rows: bytes | None = native.MODULE.copy_binary(text)
    return rows


@dataclass(frozen=True, slots=True)
class CandleBatch:
    """At most one row per (symbol, interval, open time), ready for one transaction.

    ``spans`` holds, per pair, the first and last open time in the batch: the database edge
    checks them against the table to choose a plain COPY (nothing there yet) or the upsert.
    """

    rows: Sequence[CandleRow]
    spans: dict[PairKey, tuple[int, int]]
    #: The rows' COPY lines joined, when the stager built them so (else joined on demand).
    text: bytes | None = None
    #: ``text`` in binary COPY format, when the compiled stager converted each line as it
    #: staged it (on the consumer thread, while the writer wrote the previous batch).
    binary: bytes | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, rows: Sequence[CandleRow]) -> CandleBatch:
        spans: dict[PairKey, tuple[int, int]] = {}
        for symbol, interval, open_time, _ in rows:
            pair = (symbol, interval)
            span = spans.get(pair)
            if span is None:
                spans[pair] = (open_time, open_time)
            elif not span[0] <= open_time <= span[1]:
                spans[pair] = (min(span[0], open_time), max(span[1], open_time))
        return cls(rows, spans)

    @classmethod
    def from_klines(cls, klines: Iterable[Kline]) -> CandleBatch:
        """From validated, de-duplicated Klines (tools and tests)."""
        return cls.of([(k.symbol, k.interval, k.open_time, kline_line(k)) for k in klines])

    def copy_text(self) -> bytes:
        if self.text is not None:
            return self.text
        return b"".join(row[3] for row in self.rows)

    def halves(self) -> tuple[CandleBatch, CandleBatch]:
        """Split by (pair, open time) into two batches of about half the rows each."""
        ordered = sorted(self.rows, key=lambda r: (r[0], r[1], r[2]))
        half = len(ordered) // 2
        return CandleBatch.of(ordered[:half]), CandleBatch.of(ordered[half:])
