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
from collections.abc import Sequence

import numpy as np

from sim.bars import (
    MINUTES_PER_DAY,
    Availability,
    Bar,
    KlineColumns,
    SymbolSpec,
    merge_bars,
)
from sim.cache import _NO_ROWS, _ROW_END, DayBlock, DayRows, LruCache
from sim.grid import (
    DAY_MS,
    MINUTE_MS,
    align_open,
    ceil_open,
    interval_ms,
    is_fixed,
    next_open,
)
from sim.noise import (
    _OCTAVES,
    _SALT_PATH,
    _SALT_PRICE,
    _SALT_SIZE,
    _SALT_TAKER,
    _SALT_TRADES,
    _SALT_VWAP,
    _SALT_WICK_HI,
    _SALT_WICK_LO,
    F64,
    I64,
    Mask,
    _hash,
    _mix_scalar,
    _salt,
    _uniform,
)
from sim.wire import (
    _formatted_rows,
    csv_bytes,
    format_rows,
    rest_rows_json,
)

# 1970-01-01 was a Thursday; Binance weeks open on Monday (pairs.py uses the same anchor).
_WEEK_ANCHOR_DAY = 4


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
        sel: slice | I64
        if mask is None:
            first, last, sel = i, j - 1, slice(i, j)
        else:
            sel = np.flatnonzero(mask) + i
            if sel.size == 0:
                return None
            first, last = int(sel[0]), int(sel[-1])
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
