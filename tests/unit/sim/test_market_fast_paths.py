"""The simulator's fast paths give the same bytes as the plain ones.

* ``format_rows`` (vectorised, word tables) against ``decimal_formatter`` (one Python format
  per value), over every precision the symbol spec allows and awkward values (0, powers of
  ten and their neighbours, the int64 range the market can produce).
* ``Market.select_json`` (cached formatted days, sliced) against
  ``rest_rows_json(select(...))`` (row selection window by window), including holes, the
  still-open candle, listing and delisting bounds.
* ``Market.closed_csv`` against ``csv_bytes(closed_klines(...))``.
* The caches stay bounded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qryptify.pairs import DAY_MS, INTERVALS, MINUTE_MS, align_open
from sim.bars import Availability, SymbolSpec
from sim.cache import LruCache
from sim.market import Market
from sim.symbols import DEFAULT_SYMBOLS
from sim.wire import csv_bytes, decimal_formatter, format_rows, rest_row, rest_rows_json

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NOW = T0 + 60 * DAY_MS + 7 * 3_600_000 + 34_567  # mid-minute: the open candle is partial
BTC = next(s for s in DEFAULT_SYMBOLS if s.symbol == "BTCUSDT")
DELIST = next(s for s in DEFAULT_SYMBOLS if s.delist_ms is not None)

_EDGE = sorted(
    {0, 1, 9, 10, 11, 99, 100, 9999, 10_000, 10_001, 99_999_999, 100_000_000}
    | {10**k + d for k in range(19) for d in (-1, 0, 1) if 0 <= 10**k + d < 2**63}
    | {2**62, 2**63 - 1}
)


def _spec(pp: int, qp: int) -> SymbolSpec:
    return SymbolSpec(f"P{pp}Q{qp}USDT", f"P{pp}Q{qp}", "USDT", T0, pp, qp, 1e-3, 1e-3, 1)


def _reference(spec: SymbolSpec, interval: str, opens: list[int], cols: list[list[int]]) -> str:
    rows = []
    for i, t in enumerate(opens):
        o, h, lw, c, v, q, n, tb, tq = (col[i] for col in cols)
        price = decimal_formatter(spec.price_precision)
        qty = decimal_formatter(spec.quantity_precision)
        quote = decimal_formatter(spec.quote_precision)
        rows.append(
            [t, price(o), price(h), price(lw), price(c), qty(v), t + 59_999, quote(q), n]
            + [qty(tb), quote(tq), "0"]
        )
    return json.dumps(rows, separators=(",", ":"))


@pytest.mark.parametrize("pp", range(9))
@pytest.mark.parametrize("qp", range(9))
def test_format_rows_matches_python_formatting(pp: int, qp: int) -> None:
    spec = _spec(pp, qp)
    rng = np.random.default_rng(pp * 10 + qp)
    n = len(_EDGE)
    opens = [T0 + i * MINUTE_MS for i in range(n)]
    cols = [[int(v) for v in rng.permutation(_EDGE)] for _ in range(9)]
    arrays = [np.array(c, dtype=np.int64) for c in cols]
    body = format_rows(spec, "1m", np.array(opens, dtype=np.int64), arrays, csv=False)
    assert "[" + body[:-1].decode() + "]" == _reference(spec, "1m", opens, cols)
    lines = format_rows(spec, "1m", np.array(opens, dtype=np.int64), arrays, csv=True)
    expected = json.loads(_reference(spec, "1m", opens, cols))
    assert lines.decode().splitlines() == [",".join(str(v) for v in row) for row in expected]


def test_format_rows_batches_large_inputs() -> None:
    market = Market([BTC])
    av = Availability.build(BTC.onboard_ms, None)
    cols = market.closed_klines(BTC, "1m", T0, T0 + 3 * DAY_MS - 1, av)
    assert len(cols) > 4096  # more than one formatting batch
    text = rest_rows_json(BTC, cols)
    assert json.loads(text)[1234] == rest_row(BTC, "1m", cols.open_time[1234], cols.bar(1234))


def _both(market: Market, spec: SymbolSpec, *args: object) -> tuple[bytes, bytes]:
    fast = market.select_json(spec, *args)  # type: ignore[arg-type]
    plain = rest_rows_json(spec, market.select(spec, *args)).encode()  # type: ignore[arg-type]
    return fast, plain


@pytest.mark.parametrize("interval", INTERVALS)
def test_select_json_matches_select(interval: str) -> None:
    market = Market(DEFAULT_SYMBOLS)
    holes = [(NOW - 3 * DAY_MS + 17, NOW - 2 * DAY_MS + 5 * MINUTE_MS), (T0 + 100, T0 + 200_000)]
    for spec in (BTC, DELIST):
        av = Availability.build(spec.onboard_ms, spec.delist_ms, holes)
        now = NOW if spec is BTC else spec.delist_ms or NOW
        cases: list[tuple[int | None, int | None, int]] = [
            (None, None, 1),
            (None, None, 499),
            (None, None, 1500),
            (None, now - DAY_MS, 3),
            (now - 2 * DAY_MS, None, 1500),
            (now - 3 * DAY_MS - 1, now - DAY_MS, 1000),
            (now - 30 * MINUTE_MS, None, 1500),
            (now + DAY_MS, None, 10),
            (spec.onboard_ms - 10 * DAY_MS, None, 499),
            (spec.onboard_ms - 10 * DAY_MS, spec.onboard_ms + 3 * DAY_MS, 1500),
            (T0, T0, 1),
            (align_open(interval, now), None, 5),
        ]
        for start, end, limit in cases:
            if interval not in ("1m", "3m", "5m", "15m"):
                limit = min(limit, 40)  # long intervals: a few pages' worth of days suffices
            fast, plain = _both(market, spec, interval, start, end, limit, av, now)
            assert fast == plain, (spec.symbol, interval, start, end, limit)


@settings(max_examples=60, deadline=None)
@given(
    interval=st.sampled_from(["1m", "3m", "5m", "15m", "1h", "4h", "1d"]),
    start=st.one_of(st.none(), st.integers(NOW - 5 * DAY_MS, NOW + MINUTE_MS)),
    span=st.one_of(st.none(), st.integers(0, 3 * DAY_MS)),
    limit=st.integers(1, 1500),
    hole=st.tuples(st.integers(0, 4 * DAY_MS), st.integers(0, DAY_MS)),
)
def test_select_json_matches_select_anywhere(
    interval: str, start: int | None, span: int | None, limit: int, hole: tuple[int, int]
) -> None:
    market = _SHARED
    a = NOW - 5 * DAY_MS + hole[0]
    av = Availability.build(BTC.onboard_ms, None, [(a, a + hole[1])])
    end = None if span is None else (start if start is not None else NOW - 2 * DAY_MS) + span
    fast, plain = _both(market, BTC, interval, start, end, limit, av, NOW)
    assert fast == plain


_SHARED = Market([BTC])


@pytest.mark.parametrize("interval", ["1m", "1h", "1d", "1w", "1M"])
def test_closed_csv_matches_closed_klines(interval: str) -> None:
    market = Market(DEFAULT_SYMBOLS)
    av = Availability.build(BTC.onboard_ms, None, [(T0 + 5 * DAY_MS, T0 + 6 * DAY_MS + 1)])
    first, last = T0 - DAY_MS, T0 + 40 * DAY_MS - 1
    plain = csv_bytes(BTC, market.closed_klines(BTC, interval, first, last, av))
    assert market.closed_csv(BTC, interval, first, last, av) == plain


def test_row_cache_is_bounded_in_bytes() -> None:
    market = Market([BTC], rows_cache_bytes=1 << 20)
    av = Availability.build(BTC.onboard_ms, None)
    for day in range(T0 // DAY_MS, T0 // DAY_MS + 20):
        market.day_rows(BTC, "1m", day, av)
    assert 0 < market._rows.weight <= 1 << 20
    assert len(market._rows) < 20


def test_lru_cache_bounds_by_count_and_weight() -> None:
    cache: LruCache[int, bytes] = LruCache(3, len, 10)
    for i in range(5):
        cache.get_or_make(i, lambda i=i: bytes(4))  # type: ignore[misc]
    assert len(cache) == 2 and cache.weight == 8  # 3 × 4 bytes would exceed 10
    big = cache.get_or_make(99, lambda: bytes(50))  # alone over the budget: kept, others go
    assert len(big) == 50 and len(cache) == 1 and cache.weight == 50
    assert cache.get_or_make(99, lambda: b"x") is big  # a hit does not rebuild
