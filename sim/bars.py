"""What the market is made of: a listed contract (:class:`SymbolSpec`), which of its 1m candles
exist (:class:`Availability`), and candles in integer units (:class:`Bar`, columns of them in
:class:`KlineColumns`)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from sim.grid import (
    MINUTE_MS,
    close_time,
)
from sim.noise import _MASK64, Mask

MINUTES_PER_DAY = 1440


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
