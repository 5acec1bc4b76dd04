"""The simulator's own kline grid: which open times Binance's intervals have.

The simulator is the tests' oracle, so it must not share the pipeline's calendar arithmetic
(``qryptify/pairs.py``): a bug there would then be on both sides of every end-to-end
comparison and pass. This module is written independently, from Binance's documented facts
(``shared/reference/binance-api.md``) and tested against the documented examples:

* every interval is aligned on UTC epoch boundaries;
* ``1w`` opens on Monday 00:00 UTC (the doc's 1w example opens 2017-07-03, a Monday);
* ``1M`` is a calendar month opening on the 1st 00:00 UTC;
* ``closeTime = nextOpen - 1``, the candle's last millisecond.

Day and month arithmetic is done on whole days since 1970-01-01 with the proleptic Gregorian
civil-date conversion (no ``datetime``/``calendar``), so it shares no code with the product.
"""

from __future__ import annotations

import re

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# The interval spelling Binance uses (case-sensitive: "1m" is a minute, "1M" a month),
# with its length in minutes; a month has no fixed length.
_MINUTES: dict[str, int] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1_440,
    "3d": 4_320,
    "1w": 10_080,
}
FIXED_INTERVAL_MS: dict[str, int] = {name: m * MINUTE_MS for name, m in _MINUTES.items()}
INTERVALS: tuple[str, ...] = (*_MINUTES, "1M")

# 1970-01-01 was a Thursday: (days + 3) % 7 is 0 on Mondays.
_THURSDAY_TO_MONDAY = 3

# Binance USDⓈ-M symbol names: upper-case letters and digits, and a delivery contract's
# ``_YYMMDD`` suffix (``BTCUSDT_250926``).
_SYMBOL_RE = re.compile(r"[A-Z0-9]{2,20}(?:_[0-9]{6})?")


def check_symbol(symbol: object) -> str:
    """Return ``symbol`` when it is a USDⓈ-M symbol name, else raise ValueError."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
        raise ValueError(f"{symbol!r}: not a symbol name (2-20 of A-Z 0-9, e.g. BTCUSDT)")
    return symbol


def check_interval(interval: object) -> str:
    """Return ``interval`` when Binance has it, else raise ValueError."""
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise ValueError(f"{interval!r}: not a kline interval ({' '.join(INTERVALS)})")
    return interval


def is_fixed(interval: str) -> bool:
    """Whether every candle of ``interval`` has the same length (all but ``1M``)."""
    return interval in _MINUTES


def interval_ms(interval: str) -> int:
    """Length of a fixed-length interval in ms; ValueError for ``1M``."""
    minutes = _MINUTES.get(interval)
    if minutes is None:
        raise ValueError(f"{interval!r} has no fixed length")
    return minutes * MINUTE_MS


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the day ``days`` after 1970-01-01, proleptic Gregorian."""
    z = days + 719_468  # days since 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to (year, month, day), proleptic Gregorian."""
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def align_open(interval: str, ts_ms: int) -> int:
    """Open time of the ``interval`` candle that contains ``ts_ms``."""
    if interval == "1M":
        year, month, _ = civil_from_days(ts_ms // DAY_MS)
        return days_from_civil(year, month, 1) * DAY_MS
    if interval == "1w":
        days = ts_ms // DAY_MS
        return (days - (days + _THURSDAY_TO_MONDAY) % 7) * DAY_MS
    step = interval_ms(interval)
    return ts_ms - ts_ms % step


def next_open(interval: str, open_ms: int) -> int:
    """Open time of the candle after the one opening at ``open_ms``."""
    if interval == "1M":
        year, month, _ = civil_from_days(open_ms // DAY_MS)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return days_from_civil(year, month, 1) * DAY_MS
    return open_ms + interval_ms(interval)


def close_time(interval: str, open_ms: int) -> int:
    """Binance's close time: the candle's last millisecond (``nextOpen - 1``)."""
    return next_open(interval, open_ms) - 1


def ceil_open(interval: str, ts_ms: int) -> int:
    """The first open time at or after ``ts_ms``."""
    start = align_open(interval, ts_ms)
    return start if start == ts_ms else next_open(interval, start)
