"""The deterministic market: every kline is a pure function of (symbol, interval, open time).

Design
------
* The 1m series is the atom. Minute ``m`` (``open_ms // 60_000``) of a symbol is computed from
  a counter-based hash (splitmix64) of ``(symbol seed, m)``; no state, no storage, so the truth
  for any range is known without having recorded anything.
* Price is a sum of value-noise octaves (1 minute … half a year) in log space, so it trends and
  mean-reverts like a market. ``open(m) = P(m)`` and ``close(m) = P(m + 1)``, so closes chain
  into the next opens.
* Trade counts use a telescoping form ``n(m) = B + g(m) − g(m − 1)`` with ``0 <= g < B + 1``:
  the cumulative count up to any minute is then O(1) (``B·m + g(m−1) + const``), which gives
  contiguous trade ids (``n == L − f + 1``, as on the real exchange) without a prefix sum over
  history. ``n`` can be 0, and a zero-trade minute is flat with zero volumes (BPD#153 shape).
* Prices are integer ticks (10^-pricePrecision), quantities integer steps
  (10^-quantityPrecision), quote volumes integer units of 10^-(pp+qp); all sums are exact, so a
  higher interval is exactly the aggregate of its 1m candles and decimal strings never drift.
* Work is vectorised per UTC day (1440 minutes) with numpy and cached: a day block costs
  ~0.6 ms of CPU, every interval up to 12h divides a day, and 1d/3d/1w/1M aggregate cached day
  summaries.
* Wire text is formatted by whole columns (:func:`format_rows`: 4-digit word tables, one
  gather, one pass dropping padding), never per value. REST pages of intervals up to 1d are
  slices of cached formatted days (:meth:`Market.day_rows`, bounded in bytes), so a backfill
  that pages through a day in several requests formats each row once; only the still-open
  candle is formatted per request.
* Candles that do not exist (before onboarding, after delisting, inside maintenance windows)
  are described by an :class:`Availability`; higher intervals aggregate only existing 1m
  candles, and a higher candle with no existing 1m candle does not exist.
* The still-open candle is "closed minutes so far + the current minute's partial state". The
  partial minute follows a fixed path O → X → Y → C (X, Y = high/low in a hashed order) and
  accrues volumes linearly, so the partial candle converges to the final one as the minute
  ends and its high/low/volume never move backwards.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from sim.grid import (
    DAY_MS,
    MINUTE_MS,
    align_open,
    ceil_open,
    close_time,
    interval_ms,
    is_fixed,
    next_open,
)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

MINUTES_PER_DAY = 1440
_MASK64 = (1 << 64) - 1
# 1970-01-01 was a Thursday; Binance weeks open on Monday (pairs.py uses the same anchor).
_WEEK_ANCHOR_DAY = 4

# Value-noise octaves: (period in minutes, amplitude in log-price). Chosen so that a minute moves
# a few bp, a day a few %, a year by tens of % — plausible for a crypto perpetual.
_OCTAVES: tuple[tuple[int, float], ...] = (
    (1, 0.0003),
    (7, 0.0008),
    (60, 0.003),
    (720, 0.010),
    (4320, 0.030),
    (30240, 0.080),
    (259200, 0.250),
)

# Salts that separate the independent hash streams of one symbol.
_SALT_PRICE = 0x51
_SALT_WICK_HI = 0x52
_SALT_WICK_LO = 0x53
_SALT_TRADES = 0x54
_SALT_SIZE = 0x55
_SALT_VWAP = 0x56
_SALT_TAKER = 0x57
_SALT_PATH = 0x58


# ---------------------------------------------------------------------------------------------
# Symbols
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One listed contract and the parameters of its synthetic market."""

    symbol: str
    base_asset: str
    quote_asset: str
    onboard_ms: int
    price_precision: int
    quantity_precision: int
    base_price: float
    volume_per_minute: float  # mean base-asset volume per minute
    trades_per_minute: int  # mean trades per minute (B in the telescoping count)
    status: str = "TRADING"
    delist_ms: int | None = None  # first ms with no candles; deliveryDate of a settled contract
    maintenance: tuple[tuple[int, int], ...] = ()  # [start_ms, end_ms): no candles
    seed: int = field(default=0)

    def __post_init__(self) -> None:
        if not 0 <= self.price_precision <= 8 or not 0 <= self.quantity_precision <= 8:
            raise ValueError(f"{self.symbol}: precisions must be within 0..8")
        if self.base_price <= 0 or self.volume_per_minute <= 0 or self.trades_per_minute < 1:
            raise ValueError(f"{self.symbol}: base_price, volume and trades must be positive")
        if self.delist_ms is not None and self.delist_ms <= self.onboard_ms:
            raise ValueError(f"{self.symbol}: delist must come after onboard")
        # Per-minute quote units must stay far below int64 even summed over a day in numpy.
        peak_quote = (self.base_price * math.exp(0.5) * 10**self.price_precision) * (
            self.volume_per_minute * 4 * 10**self.quantity_precision
        )
        if peak_quote * MINUTES_PER_DAY > 2**62:
            raise ValueError(f"{self.symbol}: price × volume too large for exact integer sums")

    @property
    def quote_precision(self) -> int:
        return self.price_precision + self.quantity_precision

    @property
    def effective_seed(self) -> int:
        if self.seed:
            return self.seed & _MASK64
        acc = 1469598103934665603  # FNV-1a offset: a stable seed from the name
        for byte in self.symbol.encode():
            acc = ((acc ^ byte) * 1099511628211) & _MASK64
        return acc


# ---------------------------------------------------------------------------------------------
# Hashing (vectorised splitmix64)
# ---------------------------------------------------------------------------------------------


def _mix_scalar(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(x: U64) -> U64:
    # Array arithmetic on uint64 wraps modulo 2^64 silently, which is what splitmix64 needs.
    # In place on one fresh array: the same values with fewer temporaries.
    x = x + _GAMMA
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _salt(seed: int, tag: int) -> int:
    return _mix_scalar(seed ^ _mix_scalar(tag))


def _hash(salt: int, idx: I64) -> U64:
    return _mix(idx.astype(np.uint64) ^ np.uint64(salt))


def _uniform(salt: int, idx: I64) -> F64:
    """Uniform floats in [0, 1) from the top 53 bits."""
    return (_hash(salt, idx) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def stable_fraction(*parts: int) -> float:
    """A deterministic uniform [0, 1) from integers (fault selection, close delays)."""
    acc = 0x243F6A8885A308D3
    for part in parts:
        acc = _mix_scalar(acc ^ (part & _MASK64))
    return (acc >> 11) / float(1 << 53)


def stable_string_key(text: str) -> int:
    acc = 1469598103934665603
    for byte in text.encode():
        acc = ((acc ^ byte) * 1099511628211) & _MASK64
    return acc


# ---------------------------------------------------------------------------------------------
# Availability: which 1m candles exist
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Availability:
    """Minute indices that have candles: ``[first, end)`` minus ``holes``.

    ``holes`` are sorted, disjoint ``[a, b)`` minute-index ranges strictly inside the listing.
    """

    first_minute: int
    end_minute: int | None
    holes: tuple[tuple[int, int], ...] = ()

    @classmethod
    def build(
        cls,
        onboard_ms: int,
        delist_ms: int | None,
        empty_ranges_ms: Iterable[tuple[int, int]] = (),
    ) -> Availability:
        first = -(
            -onboard_ms // MINUTE_MS
        )  # a candle exists from the first minute opening >= onboard
        end = None if delist_ms is None else -(-delist_ms // MINUTE_MS)
        spans: list[tuple[int, int]] = []
        for start_ms, end_ms in empty_ranges_ms:
            # A minute is missing iff its open time lies in [start_ms, end_ms).
            a = max(-(-start_ms // MINUTE_MS), first)
            b = -(-end_ms // MINUTE_MS)
            if end is not None:
                b = min(b, end)
            if b > a:
                spans.append((a, b))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return cls(first, end, tuple(merged))

    def contains(self, minute: int) -> bool:
        if minute < self.first_minute or (
            self.end_minute is not None and minute >= self.end_minute
        ):
            return False
        i = bisect.bisect_right(self.holes, (minute, 1 << 62)) - 1
        return not (i >= 0 and self.holes[i][0] <= minute < self.holes[i][1])

    def span_mask(self, lo: int, hi: int) -> Mask | bool:
        """Existence of minutes ``[lo, hi)``: True (all), False (none) or a boolean mask."""
        a = max(lo, self.first_minute)
        b = hi if self.end_minute is None else min(hi, self.end_minute)
        if a >= b:
            return False
        i = bisect.bisect_right(self.holes, (a, 1 << 62)) - 1
        i = max(i, 0)
        cuts: list[tuple[int, int]] = []
        while i < len(self.holes) and self.holes[i][0] < b:
            ha, hb = self.holes[i]
            if hb > a:
                cuts.append((max(ha, a), min(hb, b)))
            i += 1
        if a == lo and b == hi and not cuts:
            return True
        mask = np.zeros(hi - lo, dtype=np.bool_)
        mask[a - lo : b - lo] = True
        for ca, cb in cuts:
            mask[ca - lo : cb - lo] = False
        if not mask.any():
            return False
        return mask

    def empty_spans_ms(self) -> list[tuple[int, int]]:
        """Maintenance-style holes as ``[start_ms, end_ms)`` (listing bounds excluded)."""
        return [(a * MINUTE_MS, b * MINUTE_MS) for a, b in self.holes]


# ---------------------------------------------------------------------------------------------
# Bars
# ---------------------------------------------------------------------------------------------


class Bar(NamedTuple):
    """One aggregated candle in integer units (a NamedTuple: built millions of times per run).

    open/high/low/close in price ticks; volume/taker_base in quantity steps; quote/taker_quote in
    units of 10^-(pp+qp); trades; first/last trade id (last = first + trades − 1).
    """

    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    trades: int
    taker_base: int
    taker_quote: int
    first_id: int
    last_id: int


def merge_bars(a: Bar | None, b: Bar | None) -> Bar | None:
    """Aggregate two consecutive bars (``a`` before ``b``)."""
    if a is None:
        return b
    if b is None:
        return a
    return Bar(
        a.open,
        max(a.high, b.high),
        min(a.low, b.low),
        b.close,
        a.volume + b.volume,
        a.quote + b.quote,
        a.trades + b.trades,
        a.taker_base + b.taker_base,
        a.taker_quote + b.taker_quote,
        a.first_id,
        b.last_id,
    )


@dataclass(frozen=True, slots=True)
class KlineColumns:
    """Candles of one pair, column-wise (Python ints), ascending by open time."""

    interval: str
    open_time: list[int]
    open: list[int]
    high: list[int]
    low: list[int]
    close: list[int]
    volume: list[int]
    quote: list[int]
    trades: list[int]
    taker_base: list[int]
    taker_quote: list[int]
    first_id: list[int]
    last_id: list[int]

    def __len__(self) -> int:
        return len(self.open_time)

    @classmethod
    def empty(cls, interval: str) -> KlineColumns:
        return cls(interval, [], [], [], [], [], [], [], [], [], [], [], [])

    def bar(self, i: int) -> Bar:
        return Bar(
            self.open[i],
            self.high[i],
            self.low[i],
            self.close[i],
            self.volume[i],
            self.quote[i],
            self.trades[i],
            self.taker_base[i],
            self.taker_quote[i],
            self.first_id[i],
            self.last_id[i],
        )

    def close_time(self, i: int) -> int:
        return close_time(self.interval, self.open_time[i])

    def slice(self, start: int, stop: int) -> KlineColumns:
        return KlineColumns(
            self.interval,
            self.open_time[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
            self.quote[start:stop],
            self.trades[start:stop],
            self.taker_base[start:stop],
            self.taker_quote[start:stop],
            self.first_id[start:stop],
            self.last_id[start:stop],
        )

    def extend(self, other: KlineColumns) -> None:
        for name in _COLUMN_NAMES:
            getattr(self, name).extend(getattr(other, name))

    def append(self, open_time: int, bar: Bar) -> None:
        self.open_time.append(open_time)
        self.open.append(bar.open)
        self.high.append(bar.high)
        self.low.append(bar.low)
        self.close.append(bar.close)
        self.volume.append(bar.volume)
        self.quote.append(bar.quote)
        self.trades.append(bar.trades)
        self.taker_base.append(bar.taker_base)
        self.taker_quote.append(bar.taker_quote)
        self.first_id.append(bar.first_id)
        self.last_id.append(bar.last_id)


_COLUMN_NAMES = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote",
    "trades",
    "taker_base",
    "taker_quote",
    "first_id",
    "last_id",
)


# ---------------------------------------------------------------------------------------------
# Caches
# ---------------------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small thread-safe LRU (the market is shared by the server loop and test threads).

    Bounded by entry count and, with ``weigh``, by the summed weight of the entries (bytes):
    the least recently used entries go first.
    """

    def __init__(
        self, size: int, weigh: Callable[[V], int] | None = None, max_weight: int = 0
    ) -> None:
        self._size = size
        self._weigh = weigh
        self._max_weight = max_weight
        self._weight = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def weight(self) -> int:
        return self._weight

    def __len__(self) -> int:
        return len(self._data)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
                return found
        value = make()  # outside the lock: two threads may both compute; results are equal
        weight = self._weigh(value) if self._weigh is not None else 0
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None and self._weigh is not None:
                self._weight -= self._weigh(old)
            self._data[key] = value
            self._weight += weight
            while len(self._data) > 1 and (
                len(self._data) > self._size
                or (self._weigh is not None and self._weight > self._max_weight)
            ):
                _, dropped = self._data.popitem(last=False)
                if self._weigh is not None:
                    self._weight -= self._weigh(dropped)
        return value


@dataclass(frozen=True, slots=True)
class DayBlock:
    """The 1440 final 1m candles of one UTC day, as if every minute existed."""

    open: I64
    high: I64
    low: I64
    close: I64
    volume: I64
    quote: I64
    trades: I64
    taker_base: I64
    taker_quote: I64
    first_id: I64
    path_high_first: npt.NDArray[np.bool_]

    def bar(self, i: int) -> Bar:
        n = int(self.trades[i])
        f = int(self.first_id[i])
        return Bar(
            int(self.open[i]),
            int(self.high[i]),
            int(self.low[i]),
            int(self.close[i]),
            int(self.volume[i]),
            int(self.quote[i]),
            n,
            int(self.taker_base[i]),
            int(self.taker_quote[i]),
            f,
            f + n - 1,
        )


@dataclass(frozen=True, slots=True)
class DayRows:
    """Final candles of one interval that open during one UTC day, as REST JSON rows.

    ``body`` holds the rows back to back, each ``[...],``; row ``i`` opens at ``opens[i]`` and
    ends (exclusive) at ``ends[i]``.
    """

    opens: I64
    body: bytes
    ends: I64

    def weight(self) -> int:
        return len(self.body) + self.opens.nbytes + self.ends.nbytes + 200

    def __len__(self) -> int:
        return len(self.opens)

    def span(self, i: int, j: int) -> memoryview:
        """Rows ``i`` to ``j`` (exclusive), each with its trailing comma."""
        a = int(self.ends[i - 1]) if i else 0
        return memoryview(self.body)[a : int(self.ends[j - 1])]


_NO_ROWS = DayRows(np.zeros(0, dtype=np.int64), b"", np.zeros(0, dtype=np.int64))
_ROW_END = ord("]")  # each row ends with "],"


# ---------------------------------------------------------------------------------------------
# The market
# ---------------------------------------------------------------------------------------------


class Market:
    """Deterministic klines for a fixed set of symbols. Thread-safe; all methods are pure in
    their arguments (the caches only save work)."""

    def __init__(
        self,
        symbols: Sequence[SymbolSpec],
        day_cache: int = 256,
        summary_cache: int = 200_000,
        rows_cache_entries: int = 4096,
        rows_cache_bytes: int = 32 << 20,
    ) -> None:
        self.symbols: dict[str, SymbolSpec] = {s.symbol: s for s in symbols}
        if len(self.symbols) != len(symbols):
            raise ValueError("duplicate symbol in the symbol list")
        self._days: LruCache[tuple[str, int], DayBlock] = LruCache(day_cache)
        self._summaries: LruCache[tuple[str, int], tuple[Bar | None]] = LruCache(summary_cache)
        # Final 1m bars of recent minutes: every interval of a symbol streams from the same ones.
        self._minutes: LruCache[tuple[str, int], tuple[Bar, bool]] = LruCache(16384)
        self._salts: dict[str, dict[int, int]] = {}
        # Formatted REST rows per (symbol, interval, day, availability), bounded in bytes.
        self._rows: LruCache[tuple[str, str, int, Availability], DayRows] = LruCache(
            rows_cache_entries, DayRows.weight, rows_cache_bytes
        )

    # -- 1m generation ------------------------------------------------------------------------

    def _salt(self, spec: SymbolSpec, tag: int) -> int:
        table = self._salts.get(spec.symbol)
        if table is None:
            seed = spec.effective_seed
            table = {
                t: _salt(seed, t)
                for t in (
                    _SALT_PRICE,
                    _SALT_WICK_HI,
                    _SALT_WICK_LO,
                    _SALT_TRADES,
                    _SALT_SIZE,
                    _SALT_VWAP,
                    _SALT_TAKER,
                    _SALT_PATH,
                )
            }
            self._salts[spec.symbol] = table
        return table[tag]

    def _log_price(self, spec: SymbolSpec, minutes: I64) -> F64:
        acc = np.full(minutes.shape, math.log(spec.base_price), dtype=np.float64)
        base_salt = self._salt(spec, _SALT_PRICE)
        for octave, (period, amp) in enumerate(_OCTAVES):
            salt = _mix_scalar(base_salt ^ octave)
            knot = minutes // period
            if period == 1:
                acc += amp * (2.0 * _uniform(salt, knot) - 1.0)
                continue
            frac = (minutes - knot * period).astype(np.float64) / period
            smooth = frac * frac * (3.0 - 2.0 * frac)
            # Hash each knot once (a day spans few of them), then spread: same values.
            k0 = int(knot[0]) if len(knot) else 0
            k1 = int(knot[-1]) + 2 if len(knot) else 0
            if len(knot) and k1 - k0 < len(knot) and int(knot.min()) == k0:
                values = 2.0 * _uniform(salt, np.arange(k0, k1, dtype=np.int64)) - 1.0
                at = knot - k0
                v0 = values[at]
                v1 = values[at + 1]
            else:
                v0 = 2.0 * _uniform(salt, knot) - 1.0
                v1 = 2.0 * _uniform(salt, knot + 1) - 1.0
            acc += amp * (v0 + (v1 - v0) * smooth)
        return acc

    def _trade_g(self, spec: SymbolSpec, minutes: I64) -> I64:
        modulus = np.uint64(spec.trades_per_minute + 1)
        return (_hash(self._salt(spec, _SALT_TRADES), minutes) % modulus).astype(np.int64)

    def day_block(self, spec: SymbolSpec, day: int) -> DayBlock:
        return self._days.get_or_make((spec.symbol, day), lambda: self._make_day(spec, day))

    def _make_day(self, spec: SymbolSpec, day: int) -> DayBlock:
        m0 = day * MINUTES_PER_DAY
        edges = np.arange(m0, m0 + MINUTES_PER_DAY + 1, dtype=np.int64)
        minutes = edges[:-1]
        scale = float(10**spec.price_precision)
        ticks = np.maximum(np.rint(np.exp(self._log_price(spec, edges)) * scale), 1).astype(
            np.int64
        )
        o = ticks[:-1]
        c = ticks[1:]
        # Trades: telescoping, so the trade-id base is O(1) at any minute.
        g_all = self._trade_g(spec, np.arange(m0 - 1, m0 + MINUTES_PER_DAY, dtype=np.int64))
        b = spec.trades_per_minute
        n = b + g_all[1:] - g_all[:-1]
        onboard_minute = -(-spec.onboard_ms // MINUTE_MS)
        g_before = int(self._trade_g(spec, np.array([onboard_minute - 1], dtype=np.int64))[0])
        first_id = b * (minutes - onboard_minute) + g_all[:-1] - g_before + 1
        # Wicks: a fraction of a typical one-minute range (a few bp) beyond open/close.
        wick = np.maximum(ticks[:-1].astype(np.float64) * 0.0006, 1.0)
        hi = np.maximum(o, c) + np.floor(
            _uniform(self._salt(spec, _SALT_WICK_HI), minutes) ** 2 * wick
        ).astype(np.int64)
        lo = np.minimum(o, c) - np.floor(
            _uniform(self._salt(spec, _SALT_WICK_LO), minutes) ** 2 * wick
        ).astype(np.int64)
        lo = np.maximum(lo, 1)
        # Volume: trades × a per-trade size that breathes with the time of day.
        step = float(10**spec.quantity_precision)
        tod = (minutes % MINUTES_PER_DAY).astype(np.float64) / MINUTES_PER_DAY
        activity = 0.65 + 0.35 * np.sin(2.0 * math.pi * (tod - 0.3))
        mean_size = spec.volume_per_minute / spec.trades_per_minute * step
        size = mean_size * activity * (0.4 + 1.2 * _uniform(self._salt(spec, _SALT_SIZE), minutes))
        vol = np.maximum(np.floor(n * size).astype(np.int64), n)
        vwap = lo + np.floor((hi - lo) * _uniform(self._salt(spec, _SALT_VWAP), minutes)).astype(
            np.int64
        )
        taker = np.floor(
            vol * (0.3 + 0.4 * _uniform(self._salt(spec, _SALT_TAKER), minutes))
        ).astype(np.int64)
        # A zero-trade minute is flat at its open with zero volumes.
        idle = n == 0
        c = np.where(idle, o, c)
        hi = np.where(idle, o, hi)
        lo = np.where(idle, o, lo)
        path = (_hash(self._salt(spec, _SALT_PATH), minutes) & np.uint64(1)).astype(np.bool_)
        return DayBlock(
            open=o.copy(),
            high=hi,
            low=lo,
            close=c,
            volume=vol,
            quote=vol * vwap,
            trades=n,
            taker_base=taker,
            taker_quote=taker * vwap,
            first_id=first_id,
            path_high_first=path,
        )

    # -- aggregation -------------------------------------------------------------------------

    def day_summary(self, spec: SymbolSpec, day: int, avail: Availability) -> Bar | None:
        """The 1d bar of ``day`` over existing minutes (None when none exists)."""
        lo = day * MINUTES_PER_DAY
        cover = avail.span_mask(lo, lo + MINUTES_PER_DAY)
        if cover is False:
            return None
        if cover is True:
            return self._summaries.get_or_make(
                (spec.symbol, day),
                lambda: (self._slice_bar(self.day_block(spec, day), 0, MINUTES_PER_DAY, None),),
            )[0]
        return self._slice_bar(self.day_block(spec, day), 0, MINUTES_PER_DAY, cover)

    @staticmethod
    def _slice_bar(block: DayBlock, i: int, j: int, mask: Mask | None) -> Bar | None:
        if mask is None:
            first, last = i, j - 1
            sel = slice(i, j)
            return Bar(
                int(block.open[first]),
                int(block.high[sel].max()),
                int(block.low[sel].min()),
                int(block.close[last]),
                int(block.volume[sel].sum()),
                int(block.quote[sel].sum()),
                int(block.trades[sel].sum()),
                int(block.taker_base[sel].sum()),
                int(block.taker_quote[sel].sum()),
                int(block.first_id[first]),
                int(block.first_id[last] + block.trades[last] - 1),
            )
        idx = np.flatnonzero(mask) + i
        if idx.size == 0:
            return None
        first, last = int(idx[0]), int(idx[-1])
        return Bar(
            int(block.open[first]),
            int(block.high[idx].max()),
            int(block.low[idx].min()),
            int(block.close[last]),
            int(block.volume[idx].sum()),
            int(block.quote[idx].sum()),
            int(block.trades[idx].sum()),
            int(block.taker_base[idx].sum()),
            int(block.taker_quote[idx].sum()),
            int(block.first_id[first]),
            int(block.first_id[last] + block.trades[last] - 1),
        )

    def minutes_bar(self, spec: SymbolSpec, lo: int, hi: int, avail: Availability) -> Bar | None:
        """Aggregate of the existing final 1m candles with minute index in ``[lo, hi)``."""
        acc: Bar | None = None
        m = lo
        while m < hi:
            day = m // MINUTES_PER_DAY
            day_lo = day * MINUTES_PER_DAY
            day_hi = day_lo + MINUTES_PER_DAY
            if m == day_lo and hi >= day_hi:
                acc = merge_bars(acc, self.day_summary(spec, day, avail))
                m = day_hi
                continue
            end = min(hi, day_hi)
            cover = avail.span_mask(m, end)
            if cover is not False:
                block = self.day_block(spec, day)
                mask = None if cover is True else cover
                acc = merge_bars(acc, self._slice_bar(block, m - day_lo, end - day_lo, mask))
            m = end
        return acc

    def _day_columns(
        self, spec: SymbolSpec, interval: str, day: int, avail: Availability
    ) -> KlineColumns:
        """All final candles of an interval <= 1d that open during ``day`` (existing only)."""
        found = self._day_arrays(spec, interval, day, avail)
        if found is None:
            return KlineColumns.empty(interval)
        opens, values = found
        return KlineColumns(interval, opens.tolist(), *(v.tolist() for v in values))

    def _day_arrays(
        self, spec: SymbolSpec, interval: str, day: int, avail: Availability
    ) -> tuple[I64, list[I64]] | None:
        """``_day_columns`` as numpy: open times and the 11 value columns of :class:`Bar`
        (open … taker_quote, first_id, last_id); None when no candle exists that day."""
        k = interval_ms(interval) // MINUTE_MS
        lo = day * MINUTES_PER_DAY
        cover = avail.span_mask(lo, lo + MINUTES_PER_DAY)
        if cover is False:
            return None
        block = self.day_block(spec, day)
        groups = MINUTES_PER_DAY // k
        opens = (lo + np.arange(groups, dtype=np.int64) * k) * MINUTE_MS
        if k == 1:
            if cover is True:
                n = block.trades
                f = block.first_id
                return opens, [
                    block.open,
                    block.high,
                    block.low,
                    block.close,
                    block.volume,
                    block.quote,
                    n,
                    block.taker_base,
                    block.taker_quote,
                    f,
                    f + n - 1,
                ]
            keep: Mask = cover
            n = block.trades[keep]
            f = block.first_id[keep]
            return opens[keep], [
                block.open[keep],
                block.high[keep],
                block.low[keep],
                block.close[keep],
                block.volume[keep],
                block.quote[keep],
                n,
                block.taker_base[keep],
                block.taker_quote[keep],
                f,
                f + n - 1,
            ]
        last_ids = block.first_id + block.trades - 1
        if cover is True:
            shape = (groups, k)
            o = block.open.reshape(shape)[:, 0]
            c = block.close.reshape(shape)[:, -1]
            h = block.high.reshape(shape).max(axis=1)
            lw = block.low.reshape(shape).min(axis=1)
            volume, quote, trades, taker_base, taker_quote = (
                getattr(block, name).reshape(shape).sum(axis=1)
                for name in ("volume", "quote", "trades", "taker_base", "taker_quote")
            )
            f = block.first_id.reshape(shape)[:, 0]
            last = last_ids.reshape(shape)[:, -1]
            return opens, [o, h, lw, c, volume, quote, trades, taker_base, taker_quote, f, last]
        m2 = cover.reshape(groups, k)
        exists = m2.any(axis=1)
        first_idx = np.argmax(m2, axis=1)
        last_idx = k - 1 - np.argmax(m2[:, ::-1], axis=1)
        rows = np.arange(groups)
        shape = (groups, k)
        o = block.open.reshape(shape)[rows, first_idx]
        c = block.close.reshape(shape)[rows, last_idx]
        h = np.where(m2, block.high.reshape(shape), 0).max(axis=1)
        lw = np.where(m2, block.low.reshape(shape), np.iinfo(np.int64).max).min(axis=1)
        sums = [
            np.where(m2, getattr(block, name).reshape(shape), 0).sum(axis=1)
            for name in ("volume", "quote", "trades", "taker_base", "taker_quote")
        ]
        f = block.first_id.reshape(shape)[rows, first_idx]
        last = last_ids.reshape(shape)[rows, last_idx]
        return opens[exists], [x[exists] for x in (o, h, lw, c, *sums, f, last)]

    def day_rows(self, spec: SymbolSpec, interval: str, day: int, avail: Availability) -> DayRows:
        """The REST JSON rows of ``_day_columns`` (cached: a backfill pages through a day
        in several requests, and every row is formatted once)."""

        def make() -> DayRows:
            found = self._day_arrays(spec, interval, day, avail)
            if found is None:
                return _NO_ROWS
            opens, values = found
            body = format_rows(spec, interval, opens, values[:9], csv=False)
            ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == _ROW_END) + 2
            return DayRows(opens, body, ends)

        return self._rows.get_or_make((spec.symbol, interval, day, avail), make)

    # -- candles -------------------------------------------------------------------------------

    def final_bar(
        self, spec: SymbolSpec, interval: str, open_ms: int, avail: Availability
    ) -> Bar | None:
        """The closed candle opening at ``open_ms`` (None if it has no existing 1m candle)."""
        lo = open_ms // MINUTE_MS
        hi = next_open(interval, open_ms) // MINUTE_MS
        return self.minutes_bar(spec, lo, hi, avail)

    def minute_bar(self, spec: SymbolSpec, minute: int) -> tuple[Bar, bool]:
        """Final 1m bar of ``minute`` (ignoring availability) and its path order flag."""

        def make() -> tuple[Bar, bool]:
            day, i = divmod(minute, MINUTES_PER_DAY)
            block = self.day_block(spec, day)
            return block.bar(i), bool(block.path_high_first[i])

        return self._minutes.get_or_make((spec.symbol, minute), make)

    def partial_minute(self, spec: SymbolSpec, minute: int, elapsed_ms: int) -> Bar:
        """State of minute ``minute`` after ``elapsed_ms`` (0..59999) of it."""
        final, high_first = self.minute_bar(spec, minute)
        return partial_bar(final, high_first, elapsed_ms)

    def current_bar(
        self,
        spec: SymbolSpec,
        interval: str,
        now_ms: int,
        avail: Availability,
        forming: FormingCandle | None = None,
    ) -> tuple[int, Bar] | None:
        """The still-open candle at ``now_ms``: (open time, partial values), or None.

        ``forming`` carries the closed-minutes prefix between calls (WebSocket streams), so a
        call costs one minute's merge instead of a re-aggregation of the whole candle.
        """
        open_ms = align_open(interval, now_ms)
        now_minute = now_ms // MINUTE_MS
        acc = forming if forming is not None else FormingCandle()
        prefix = acc.advance(self, spec, open_ms, now_minute, avail)
        part: Bar | None = None
        if avail.contains(now_minute):
            part = self.partial_minute(spec, now_minute, now_ms - now_minute * MINUTE_MS)
        bar = merge_bars(prefix, part)
        return None if bar is None else (open_ms, bar)

    def closing_bar(
        self,
        spec: SymbolSpec,
        interval: str,
        open_ms: int,
        avail: Availability,
        forming: FormingCandle | None = None,
    ) -> Bar | None:
        """``final_bar``, finishing a stream's forming candle when it is the same one."""
        if forming is not None and forming.open_ms == open_ms:
            return forming.advance(
                self, spec, open_ms, next_open(interval, open_ms) // MINUTE_MS, avail
            )
        return self.final_bar(spec, interval, open_ms, avail)

    def closed_klines(
        self,
        spec: SymbolSpec,
        interval: str,
        first_open: int,
        last_open: int,
        avail: Availability,
        now_ms: int | None = None,
    ) -> KlineColumns:
        """Existing final candles with ``first_open <= open <= last_open`` (and, when ``now_ms``
        is given, ``close_time < now_ms``)."""
        out = KlineColumns.empty(interval)
        if last_open < first_open:
            return out
        if now_ms is not None:
            last_open = min(last_open, align_open(interval, now_ms) - 1)
        lo_open = ceil_open(
            interval, max(first_open, align_open(interval, avail.first_minute * MINUTE_MS))
        )
        if avail.end_minute is not None:
            last_open = min(last_open, avail.end_minute * MINUTE_MS - 1)
        if last_open < lo_open:
            return out
        if is_fixed(interval) and interval_ms(interval) <= DAY_MS:
            for day in range(lo_open // DAY_MS, last_open // DAY_MS + 1):
                cols = self._day_columns(spec, interval, day, avail)
                if not cols.open_time:
                    continue
                i = bisect.bisect_left(cols.open_time, lo_open)
                j = bisect.bisect_right(cols.open_time, last_open)
                if i == 0 and j == len(cols):
                    out.extend(cols)
                else:
                    out.extend(cols.slice(i, j))
            return out
        t = lo_open
        while t <= last_open:
            nxt = next_open(interval, t)
            bar: Bar | None = None
            for day in range(t // DAY_MS, nxt // DAY_MS):
                bar = merge_bars(bar, self.day_summary(spec, day, avail))
            if bar is not None:
                out.append(t, bar)
            t = nxt
        return out

    def klines(
        self,
        spec: SymbolSpec,
        interval: str,
        first_open: int,
        last_open: int,
        avail: Availability,
        now_ms: int,
    ) -> KlineColumns:
        """What the exchange holds for ``first_open <= open <= last_open`` at ``now_ms``:
        closed candles plus the still-open one (partial) if it lies in the range."""
        out = self.closed_klines(spec, interval, first_open, last_open, avail, now_ms)
        current_open = align_open(interval, now_ms)
        if first_open <= current_open <= last_open:
            current = self.current_bar(spec, interval, now_ms, avail)
            if current is not None:
                out.append(current[0], current[1])
        return out

    def select(
        self,
        spec: SymbolSpec,
        interval: str,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        avail: Availability,
        now_ms: int,
    ) -> KlineColumns:
        """``GET /fapi/v1/klines`` row selection (see binance-api.md §1.1):
        by open time, both ends inclusive; with a start the first ``limit`` rows from it,
        otherwise the last ``limit`` rows up to the end (or now)."""
        hi = (
            align_open(interval, now_ms)
            if end_ms is None
            else min(end_ms, align_open(interval, now_ms))
        )
        floor_open = align_open(interval, avail.first_minute * MINUTE_MS)
        if avail.end_minute is not None:
            hi = min(hi, avail.end_minute * MINUTE_MS - 1)
        step = _window_ms(interval, limit)
        if start_ms is not None:
            lo = max(start_ms, floor_open)
            out = KlineColumns.empty(interval)
            while lo <= hi and len(out) < limit:
                top = min(hi, lo + step - 1)
                out.extend(self.klines(spec, interval, lo, top, avail, now_ms))
                lo = top + 1
            return out.slice(0, limit)
        chunks: list[KlineColumns] = []
        count = 0
        top = hi
        while top >= floor_open and count < limit:
            lo = max(floor_open, top - step + 1)
            chunk = self.klines(spec, interval, lo, top, avail, now_ms)
            chunks.append(chunk)
            count += len(chunk)
            top = lo - 1
        out = KlineColumns.empty(interval)
        for chunk in reversed(chunks):
            out.extend(chunk)
        return out.slice(max(0, len(out) - limit), len(out))

    def select_json(
        self,
        spec: SymbolSpec,
        interval: str,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        avail: Availability,
        now_ms: int,
    ) -> bytes:
        """``rest_rows_json(spec, select(...))`` as bytes, built from cached formatted days.

        Same rows, same bytes: closed candles come from :meth:`day_rows` (formatted once per
        day, sliced per page); the still-open candle is formatted per request.
        """
        if not (is_fixed(interval) and interval_ms(interval) <= DAY_MS):
            cols = self.select(spec, interval, start_ms, end_ms, limit, avail, now_ms)
            return rest_rows_json(spec, cols).encode("ascii")
        current_open = align_open(interval, now_ms)
        hi = current_open if end_ms is None else min(end_ms, current_open)
        floor_open = align_open(interval, avail.first_minute * MINUTE_MS)
        if avail.end_minute is not None:
            hi = min(hi, avail.end_minute * MINUTE_MS - 1)
        lo = floor_open if start_ms is None else max(start_ms, floor_open)
        if hi < lo:
            return b"[]"
        closed_hi = min(hi, current_open - 1)

        def current_row() -> bytes:
            """The still-open candle's row when it is in range (else empty)."""
            if not lo <= current_open <= hi:
                return b""
            bar = self.current_bar(spec, interval, now_ms, avail)
            if bar is None:
                return b""
            cols = KlineColumns.empty(interval)
            cols.append(bar[0], bar[1])
            return _formatted_rows(spec, cols, csv=False)

        parts: list[bytes | memoryview] = []
        count = 0
        if start_ms is not None:
            day = lo // DAY_MS
            while count < limit and closed_hi >= lo and day <= closed_hi // DAY_MS:
                rows = self.day_rows(spec, interval, day, avail)
                day += 1
                if not len(rows):
                    continue
                i = int(np.searchsorted(rows.opens, lo, side="left"))
                j = int(np.searchsorted(rows.opens, closed_hi, side="right"))
                j = min(j, i + limit - count)
                if j > i:
                    parts.append(rows.span(i, j))
                    count += j - i
            if count < limit:
                current = current_row()
                if current:
                    parts.append(current)
        else:
            tail: list[bytes | memoryview] = []
            current = current_row()
            if current:
                tail.append(current)
                count = 1
            day = closed_hi // DAY_MS
            while count < limit and closed_hi >= lo and day >= lo // DAY_MS:
                rows = self.day_rows(spec, interval, day, avail)
                day -= 1
                if not len(rows):
                    continue
                i = int(np.searchsorted(rows.opens, lo, side="left"))
                j = int(np.searchsorted(rows.opens, closed_hi, side="right"))
                i = max(i, j - (limit - count))
                if j > i:
                    tail.append(rows.span(i, j))
                    count += j - i
            parts = tail[::-1]
        if not parts:
            return b"[]"
        body = b"".join(parts)
        return b"[" + body[:-1] + b"]"

    def closed_csv(
        self, spec: SymbolSpec, interval: str, first_open: int, last_open: int, avail: Availability
    ) -> bytes:
        """``csv_bytes(spec, closed_klines(...))`` (archive files), without per-row Python."""
        if not (is_fixed(interval) and interval_ms(interval) <= DAY_MS):
            return csv_bytes(spec, self.closed_klines(spec, interval, first_open, last_open, avail))
        opens: list[I64] = []
        values: list[list[I64]] = []
        for day in range(first_open // DAY_MS, last_open // DAY_MS + 1):
            found = self._day_arrays(spec, interval, day, avail)
            if found is None:
                continue
            day_opens, day_values = found
            i = int(np.searchsorted(day_opens, first_open, side="left"))
            j = int(np.searchsorted(day_opens, last_open, side="right"))
            if j > i:
                opens.append(day_opens[i:j])
                values.append([v[i:j] for v in day_values[:9]])
        if not opens:
            return b""
        columns = [np.concatenate(col) for col in zip(*values, strict=True)]
        return format_rows(spec, interval, np.concatenate(opens), columns, csv=True)


class FormingCandle:
    """Running aggregate of the closed minutes of one candle, advanced minute by minute.

    Mutable on purpose: one lives in each WebSocket stream. Short advances merge cached 1m bars
    one by one; long ones (a fresh subscription mid-month) use the vectorised aggregation.
    """

    __slots__ = ("open_ms", "minute", "bar", "avail")

    _BULK_MINUTES = 90

    def __init__(self) -> None:
        self.open_ms = -1
        self.minute = 0
        self.bar: Bar | None = None
        self.avail: Availability | None = None

    def advance(
        self, market: Market, spec: SymbolSpec, open_ms: int, upto_minute: int, avail: Availability
    ) -> Bar | None:
        """The aggregate of existing final minutes in ``[open_ms, upto_minute)``."""
        if self.open_ms != open_ms or self.avail is not avail or upto_minute < self.minute:
            self.open_ms, self.minute, self.bar, self.avail = (
                open_ms,
                open_ms // MINUTE_MS,
                None,
                avail,
            )
        if upto_minute - self.minute > self._BULK_MINUTES:
            self.bar = merge_bars(
                self.bar, market.minutes_bar(spec, self.minute, upto_minute, avail)
            )
            self.minute = upto_minute
        while self.minute < upto_minute:
            if avail.contains(self.minute):
                self.bar = merge_bars(self.bar, market.minute_bar(spec, self.minute)[0])
            self.minute += 1
        return self.bar


def _window_ms(interval: str, limit: int) -> int:
    if interval == "1M":
        return 31 * DAY_MS * max(limit, 1)
    return max(interval_ms(interval) * max(limit, 1), DAY_MS)


def partial_bar(final: Bar, high_first: bool, elapsed_ms: int) -> Bar:
    """A 1m candle ``elapsed_ms`` into its minute, converging to ``final`` at 60000 ms.

    Trades and volumes accrue linearly; price walks O → X → Y → C with X/Y the high and low in
    the order ``high_first`` says, so the running high/low only widen and reach the final ones.
    """
    e = min(max(elapsed_ms, 0), MINUTE_MS - 1)
    n = final.trades * e // MINUTE_MS
    if n == 0:
        o = final.open
        return Bar(o, o, o, o, 0, 0, 0, 0, 0, final.first_id, final.first_id - 1)
    x, y = (final.high, final.low) if high_first else (final.low, final.high)
    vertices = (final.open, x, y, final.close)
    seg_len = MINUTE_MS // 3
    seg, r = divmod(e, seg_len)
    a, b = vertices[seg], vertices[seg + 1]
    price = a + (b - a) * r // seg_len
    visited = (*vertices[: seg + 1], price)
    return Bar(
        final.open,
        max(visited),
        min(visited),
        price,
        final.volume * e // MINUTE_MS,
        final.quote * e // MINUTE_MS,
        n,
        final.taker_base * e // MINUTE_MS,
        final.taker_quote * e // MINUTE_MS,
        final.first_id,
        final.first_id + n - 1,
    )


# ---------------------------------------------------------------------------------------------
# Wire formatting (decimal strings with the symbol's precision)
# ---------------------------------------------------------------------------------------------


def decimal_formatter(decimals: int) -> Callable[[int], str]:
    """Integer units → fixed-point string, e.g. 5721269 with 2 → ``"57212.69"``."""
    if decimals == 0:
        return str
    div = 10**decimals
    pattern = "%d.%0" + str(decimals) + "d"

    def fmt(value: int) -> str:
        whole, frac = divmod(value, div)
        text: str = pattern % (whole, frac)
        return text

    return fmt


@dataclass(frozen=True, slots=True)
class Formatters:
    price: Callable[[int], str]
    qty: Callable[[int], str]
    quote: Callable[[int], str]

    @classmethod
    def for_symbol(cls, spec: SymbolSpec) -> Formatters:
        return cls(
            decimal_formatter(spec.price_precision),
            decimal_formatter(spec.quantity_precision),
            decimal_formatter(spec.quote_precision),
        )


_U8 = npt.NDArray[np.uint8]
_U32 = npt.NDArray[np.uint32]
_IDX = npt.NDArray[np.intp]


def _digit_table() -> _U32:
    """Four ASCII digits of 0..9999 as one uint32 word, in five variants of 10,000 entries.

    Variant ``k`` keeps at least the last ``k`` digits and every significant one; the other
    leading zeros become 0 bytes (removed when rows are packed). Variant 4 is the full
    zero-padded chunk, 1 is "the integer part's last chunk" (``0`` → ``"0"``), 0 is a higher
    chunk with nothing above it (``0`` → nothing).
    """
    r = np.arange(10_000, dtype=np.int64)
    chars = np.stack([r // 1000 % 10, r // 100 % 10, r // 10 % 10, r % 10], axis=1) + 48
    significant = np.zeros(10_000, dtype=np.int64)
    for k in range(1, 5):
        significant[r >= 10 ** (k - 1)] = k
    position = np.arange(4)[None, :]  # 0 = most significant byte of the chunk
    variants = []
    for keep in range(5):
        shown = position >= 4 - np.maximum(significant, keep)[:, None]
        variants.append(np.where(shown, chars, 0).astype(np.uint8))
    return np.ascontiguousarray(np.concatenate(variants)).view(np.uint32).ravel()


_DIGITS = _digit_table()
_CHUNK = 10_000
_FULL = 4 * _CHUNK


def _words(text: str) -> list[int]:
    """``text`` as uint32 words (native order), zero-padded at the front."""
    raw = text.encode("ascii")
    raw = b"\0" * (-len(raw) % 4) + raw
    return [int(w) for w in np.frombuffer(raw, dtype=np.uint32)]


class _RowFormat:
    """Fixed-point rows as ASCII, vectorised over the rows of a batch.

    A row is literal text and numbers; a number is its integer part in 4-digit chunks (leading
    zeros become 0 bytes), then ``.`` and its ``decimals`` fraction digits. Every piece is one
    uint32 word, so a batch is one index matrix, one gather from ``_DIGITS`` + literal words,
    and one pass that drops the 0 bytes: under 1 µs of CPU per 12-column row, instead of a Python
    format call per value.
    """

    def __init__(self, decimals: Sequence[int], quoted: Sequence[bool], csv: bool) -> None:
        self.decimals = tuple(decimals)
        # The text around the numbers: before field 0, between fields, after the last.
        gaps: list[str] = []
        text = "" if csv else "["
        for q in quoted:
            gaps.append(text + ('"' if q else ""))
            text = ('"' if q else "") + ","
        gaps.append(text + ("0\n" if csv else '"0"],'))
        literals = sorted({w for g in [*gaps, "."] for w in _words(g)})
        self.table: _U32 = np.concatenate([_DIGITS, np.array(literals, dtype=np.uint32)])
        slot = {w: len(_DIGITS) + i for i, w in enumerate(literals)}
        self.gap_slots = [[slot[w] for w in _words(g)] for g in gaps]
        self.point_slot = slot[_words(".")[0]]
        self._plans: dict[tuple[int, ...], tuple[int, _IDX, _IDX, list[int]]] = {}

    def _plan(self, whole_chunks: tuple[int, ...]) -> tuple[int, _IDX, _IDX, list[int]]:
        """Word layout of a row: width, literal columns and slots, first column per field."""
        plan = self._plans.get(whole_chunks)
        if plan is None:
            lit_cols: list[int] = []
            lit_slots: list[int] = []
            starts: list[int] = []
            col = 0

            def literal(slots: list[int]) -> None:
                nonlocal col
                for s in slots:
                    lit_cols.append(col)
                    lit_slots.append(s)
                    col += 1

            for f, k in enumerate(whole_chunks):
                literal(self.gap_slots[f])
                starts.append(col)
                col += k
                d = self.decimals[f]
                if d:
                    literal([self.point_slot])
                    col += -(-d // 4)
            literal(self.gap_slots[-1])
            plan = (
                col,
                np.array(lit_cols, dtype=np.intp),
                np.array(lit_slots, dtype=np.intp),
                starts,
            )
            self._plans[whole_chunks] = plan
        return plan

    def format(self, columns: Sequence[I64]) -> bytes:
        """Rows of non-negative integer columns (one per field), each row terminated."""
        n = len(columns[0])
        if n == 0:
            return b""
        wholes: list[I64] = []
        fracs: list[I64 | None] = []
        chunks: list[int] = []
        for values, d in zip(columns, self.decimals, strict=True):
            if d:
                whole = values // (10**d)
                fracs.append(values - whole * (10**d))
            else:
                whole = values
                fracs.append(None)
            wholes.append(whole)
            chunks.append(max(1, -(-len(str(int(whole.max()))) // 4)))
        width, lit_cols, lit_slots, starts = self._plan(tuple(chunks))
        # Word-major while building (contiguous stores), row-major when gathered.
        idx = np.empty((width, n), dtype=np.int32)
        idx[lit_cols] = lit_slots[:, None]
        for f, d in enumerate(self.decimals):
            col = starts[f] + chunks[f] - 1  # least significant whole chunk
            rest = wholes[f]
            for j in range(chunks[f]):
                if j == chunks[f] - 1:
                    # the top chunk: nothing above it, strip its leading zeros
                    np.add(rest, _CHUNK if j == 0 else 0, out=idx[col], casting="unsafe")
                    break
                above = rest // _CHUNK
                low = rest - above * _CHUNK
                np.add(
                    low,
                    np.where(above == 0, _CHUNK if j == 0 else 0, _FULL),
                    out=idx[col],
                    casting="unsafe",
                )
                rest = above
                col -= 1
            frac = fracs[f]
            if frac is None:
                continue
            words = -(-d // 4)
            col = starts[f] + chunks[f] + words  # last fraction word (after the point)
            for j in range(words):
                if j == words - 1:
                    np.add(frac, (d - 4 * j) * _CHUNK, out=idx[col], casting="unsafe")
                    break
                above = frac // _CHUNK
                np.add(frac - above * _CHUNK, _FULL, out=idx[col], casting="unsafe")
                frac = above
                col -= 1
        packed: bytes = self.table.take(idx.T).tobytes().translate(None, b"\0")
        return packed


_ROW_FORMATS: dict[tuple[int, int, bool], _RowFormat] = {}
# Rows per batch: keeps the index matrix and the byte pass inside the CPU caches.
_FORMAT_BATCH = 4096


def _row_format(spec: SymbolSpec, csv: bool) -> _RowFormat:
    key = (spec.price_precision, spec.quantity_precision, csv)
    found = _ROW_FORMATS.get(key)
    if found is None:
        pp, qp, up = spec.price_precision, spec.quantity_precision, spec.quote_precision
        decimals = (0, pp, pp, pp, pp, qp, 0, up, 0, qp, up)
        quoted = [False] + [not csv] * 5 + [False, not csv, False, not csv, not csv]
        found = _ROW_FORMATS.setdefault(key, _RowFormat(decimals, quoted, csv))
    return found


def format_rows(
    spec: SymbolSpec, interval: str, opens: I64, values: Sequence[I64], csv: bool
) -> bytes:
    """Rows as ASCII: CSV lines (``\n``-terminated) or JSON arrays (``,``-terminated).

    ``values``: open, high, low, close, volume, quote, trades, taker_base, taker_quote in
    integer units (see :class:`Bar`), one array per column, aligned with ``opens``.
    """
    n = len(opens)
    if n == 0:
        return b""
    if is_fixed(interval):
        closes = opens + (interval_ms(interval) - 1)
    else:
        closes = np.array([close_time(interval, int(t)) for t in opens], dtype=np.int64)
    o, h, lw, c, v, q, t, tb, tq = values
    fields = (opens, o, h, lw, c, v, closes, q, t, tb, tq)
    fmt = _row_format(spec, csv)
    if n <= _FORMAT_BATCH:
        return fmt.format(fields)
    return b"".join(
        fmt.format([x[i : i + _FORMAT_BATCH] for x in fields]) for i in range(0, n, _FORMAT_BATCH)
    )


def _formatted_rows(spec: SymbolSpec, cols: KlineColumns, csv: bool) -> bytes:
    """All rows of ``cols`` as ASCII (see :func:`format_rows`)."""
    if not len(cols):
        return b""
    values = [
        np.array(x, dtype=np.int64)
        for x in (
            cols.open,
            cols.high,
            cols.low,
            cols.close,
            cols.volume,
            cols.quote,
            cols.trades,
            cols.taker_base,
            cols.taker_quote,
        )
    ]
    opens = np.array(cols.open_time, dtype=np.int64)
    return format_rows(spec, cols.interval, opens, values, csv)


def rest_rows_json(spec: SymbolSpec, cols: KlineColumns) -> str:
    """The JSON body of ``/fapi/v1/klines``: 12-element rows, times/trades as integers,
    prices/volumes as strings, the ignore column ``"0"`` as on the real exchange."""
    body = _formatted_rows(spec, cols, csv=False)
    return "[" + body[:-1].decode("ascii") + "]"


def csv_bytes(spec: SymbolSpec, cols: KlineColumns) -> bytes:
    """Archive CSV data lines (same decimal strings as REST, unquoted), newline-terminated."""
    return _formatted_rows(spec, cols, csv=True)


def csv_lines(spec: SymbolSpec, cols: KlineColumns) -> list[str]:
    return csv_bytes(spec, cols).decode("ascii").splitlines()


def rest_row(spec: SymbolSpec, interval: str, open_ms: int, bar: Bar) -> list[object]:
    """One row as Python values (for /sim/truth consumers and tests)."""
    fm = Formatters.for_symbol(spec)
    return [
        open_ms,
        fm.price(bar.open),
        fm.price(bar.high),
        fm.price(bar.low),
        fm.price(bar.close),
        fm.qty(bar.volume),
        close_time(interval, open_ms),
        fm.quote(bar.quote),
        bar.trades,
        fm.qty(bar.taker_base),
        fm.quote(bar.taker_quote),
        "0",
    ]
