"""Symbols, intervals and pairs: parsing, validation and the candle grid.

A pair is one kline series, ``SYMBOL|interval``. The grid functions are pure: they say which
open times exist for an interval, aligned the way Binance aligns them (UTC epoch boundaries,
weeks opening on Monday 00:00 UTC, ``1M`` on the first of each calendar month).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from qryptify.errors import PairError

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

#: Every USDⓈ-M futures kline interval, in Binance's spelling (case-sensitive: 1m != 1M).
FIXED_INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": 7 * DAY_MS,
}
INTERVALS: tuple[str, ...] = (*FIXED_INTERVAL_MS, "1M")

# 1970-01-01 was a Thursday; Binance weeks open on Monday, four days later.
_WEEK_ANCHOR_MS = 4 * DAY_MS

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}(_[0-9]{6})?$")
_PAIR_RE = re.compile(r"^\s*([^/\-|:\s]+)\s*[/\-|:\s]\s*(\S+)\s*$")


def validate_symbol(symbol: object) -> str:
    """Return the symbol if it is a Binance USDⓈ-M symbol name, else raise PairError."""
    if not isinstance(symbol, str):
        raise PairError(symbol, "symbol must be a string such as 'BTCUSDT'")
    if symbol != symbol.strip() or not _SYMBOL_RE.match(symbol):
        hint = " (symbols are upper case)" if _SYMBOL_RE.match(symbol.strip().upper()) else ""
        raise PairError(
            symbol,
            f"not a valid symbol{hint}; expected 2-20 characters A-Z/0-9, e.g. 'BTCUSDT'",
        )
    return symbol


def validate_interval(interval: object) -> str:
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise PairError(interval, f"unknown interval; allowed: {' '.join(INTERVALS)}")
    return interval


@dataclass(frozen=True, slots=True, order=True)
class Pair:
    """One kline series: a symbol and an interval."""

    symbol: str
    interval: str

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        validate_interval(self.interval)

    @property
    def key(self) -> str:
        """The Kafka record key: UTF-8 ``SYMBOL|interval``."""
        return f"{self.symbol}|{self.interval}"

    @property
    def stream(self) -> str:
        """The WebSocket stream name, ``btcusdt@kline_1m``."""
        return f"{self.symbol.lower()}@kline_{self.interval}"

    def __str__(self) -> str:
        return f"{self.symbol}/{self.interval}"

    @classmethod
    def from_key(cls, key: str) -> Pair:
        symbol, sep, interval = key.partition("|")
        if not sep:
            raise PairError(key, "a pair key is 'SYMBOL|interval'")
        return cls(symbol, interval)


def parse_pair(value: object) -> Pair:
    """Parse ``BTCUSDT/4h``, ``ETHUSDT-1h`` or ``{symbol: BNBUSDT, interval: 15m}``."""
    if isinstance(value, Mapping):
        extra = set(value) - {"symbol", "interval"}
        if extra:
            raise PairError(dict(value), f"unknown keys {sorted(extra)}; allowed: symbol, interval")
        if "symbol" not in value or "interval" not in value:
            raise PairError(dict(value), "a pair mapping needs both 'symbol' and 'interval'")
        return Pair(validate_symbol(value["symbol"]), validate_interval(value["interval"]))
    if isinstance(value, str):
        match = _PAIR_RE.match(value)
        if not match:
            raise PairError(
                value, "expected SYMBOL/interval, SYMBOL-interval or {symbol, interval}"
            )
        return Pair(validate_symbol(match.group(1)), validate_interval(match.group(2)))
    raise PairError(value, "expected SYMBOL/interval, SYMBOL-interval or {symbol, interval}")


def is_fixed(interval: str) -> bool:
    return interval in FIXED_INTERVAL_MS


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms; ``1M`` has no fixed length (use next_open)."""
    try:
        return FIXED_INTERVAL_MS[interval]
    except KeyError:
        raise PairError(interval, "interval has no fixed length; use next_open()") from None


def month_start(ts_ms: int) -> int:
    """The first millisecond (UTC) of the calendar month containing ``ts_ms``."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return calendar.timegm((dt.year, dt.month, 1, 0, 0, 0)) * 1000


def next_month(ts_ms: int) -> int:
    """The first millisecond (UTC) of the calendar month after the one containing ``ts_ms``."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def align_open(interval: str, ts_ms: int) -> int:
    """The open time of the candle that contains ``ts_ms``."""
    if interval == "1M":
        return month_start(ts_ms)
    step = FIXED_INTERVAL_MS[interval]
    anchor = _WEEK_ANCHOR_MS if interval == "1w" else 0
    return (ts_ms - anchor) // step * step + anchor


def next_open(interval: str, open_ms: int) -> int:
    """The open time of the candle after the one opening at ``open_ms``."""
    if interval == "1M":
        return next_month(open_ms)
    return open_ms + FIXED_INTERVAL_MS[interval]


def close_time(interval: str, open_ms: int) -> int:
    """Binance's close time: the last millisecond of the candle."""
    return next_open(interval, open_ms) - 1


def ceil_open(interval: str, ts_ms: int) -> int:
    """The first open time at or after ``ts_ms``."""
    aligned = align_open(interval, ts_ms)
    return aligned if aligned == ts_ms else next_open(interval, aligned)


def open_times(interval: str, start_ms: int, end_ms: int) -> Iterator[int]:
    """Open times ``t`` on the grid with ``start_ms <= t < end_ms``."""
    t = ceil_open(interval, start_ms)
    if is_fixed(interval):
        yield from range(t, max(t, end_ms), FIXED_INTERVAL_MS[interval])
        return
    while t < end_ms:
        yield t
        t = next_open(interval, t)


def count_opens(interval: str, start_ms: int, end_ms: int) -> int:
    """How many candles open in ``[start_ms, end_ms)``."""
    first = ceil_open(interval, start_ms)
    if first >= end_ms:
        return 0
    if is_fixed(interval):
        step = FIXED_INTERVAL_MS[interval]
        return (end_ms - first + step - 1) // step
    return sum(1 for _ in open_times(interval, start_ms, end_ms))


def last_closed_open(interval: str, now_ms: int) -> int:
    """Open time of the newest candle that is closed at ``now_ms`` (close_time < now)."""
    current = align_open(interval, now_ms)
    # The candle containing now is open unless now is past its last millisecond (impossible),
    # so the newest closed one is the previous candle.
    return align_open(interval, current - 1)
