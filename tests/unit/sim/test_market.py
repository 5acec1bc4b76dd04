"""The deterministic market: purity, candle rules, exact aggregation, availability, partials."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qryptify.pairs import DAY_MS, INTERVALS, MINUTE_MS, align_open, close_time, next_open
from sim.bars import Availability, Bar, KlineColumns, SymbolSpec, merge_bars
from sim.market import Market, partial_bar
from sim.symbols import DEFAULT_SYMBOLS
from sim.wire import csv_lines, decimal_formatter, rest_rows_json

BTC = next(s for s in DEFAULT_SYMBOLS if s.symbol == "BTCUSDT")
QUIET = next(s for s in DEFAULT_SYMBOLS if s.symbol == "QUIETUSDT")
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z (a Monday)
NOW = T0 + 400 * DAY_MS


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(DEFAULT_SYMBOLS)


def avail(spec: SymbolSpec, *ranges: tuple[int, int]) -> Availability:
    return Availability.build(spec.onboard_ms, spec.delist_ms, ranges)


def one_minute_bars(
    market: Market, spec: SymbolSpec, lo: int, hi: int, av: Availability
) -> list[tuple[int, Bar]]:
    cols = market.closed_klines(spec, "1m", lo, hi - 1, av)
    return [(cols.open_time[i], cols.bar(i)) for i in range(len(cols))]


def test_same_inputs_give_same_candles_in_a_fresh_market(market: Market) -> None:
    a = market.closed_klines(BTC, "5m", T0, T0 + DAY_MS, avail(BTC))
    b = Market(DEFAULT_SYMBOLS).closed_klines(BTC, "5m", T0, T0 + DAY_MS, avail(BTC))
    assert a == b
    assert len(a) == 289  # both ends inclusive


def test_one_minute_candles_obey_the_candle_rules(market: Market) -> None:
    block = market.day_block(BTC, T0 // DAY_MS)
    assert np.all(block.low <= np.minimum(block.open, block.close))
    assert np.all(block.high >= np.maximum(block.open, block.close))
    assert np.all(block.low >= 1)
    assert np.all(block.taker_base <= block.volume)
    assert np.all(block.taker_quote <= block.quote)
    assert np.all(block.trades >= 0)
    # Trade ids are contiguous across minutes: f(m+1) == L(m) + 1.
    last = block.first_id + block.trades - 1
    assert np.all(block.first_id[1:] == last[:-1] + 1)
    # Closes chain into the next opens (zero-trade minutes excepted: they are flat).
    busy = block.trades[:-1] > 0
    assert np.all(block.close[:-1][busy] == block.open[1:][busy])


def test_trade_ids_continue_across_days(market: Market) -> None:
    d = T0 // DAY_MS
    a, b = market.day_block(BTC, d), market.day_block(BTC, d + 1)
    assert int(b.first_id[0]) == int(a.first_id[-1] + a.trades[-1])


def test_quiet_symbol_has_flat_zero_trade_minutes(market: Market) -> None:
    block = market.day_block(QUIET, T0 // DAY_MS)
    idle = block.trades == 0
    assert idle.any(), "QUIETUSDT should have minutes without trades"
    assert np.all(block.volume[idle] == 0)
    assert np.all(block.quote[idle] == 0)
    assert np.all(block.high[idle] == block.open[idle])
    assert np.all(block.low[idle] == block.open[idle])
    assert np.all(block.close[idle] == block.open[idle])
    assert np.all(block.volume[~idle] >= block.trades[~idle])


def _aggregate(bars: list[tuple[int, Bar]]) -> Bar | None:
    acc: Bar | None = None
    for _, bar in bars:
        acc = merge_bars(acc, bar)
    return acc


@settings(max_examples=40, deadline=None)
@given(
    interval=st.sampled_from([i for i in INTERVALS if i not in ("1m",)]),
    offset_min=st.integers(min_value=0, max_value=60 * 24 * 90),
)
def test_higher_intervals_aggregate_the_1m_series_exactly(interval: str, offset_min: int) -> None:
    market = Market(DEFAULT_SYMBOLS)
    av = avail(BTC)
    open_ms = align_open(interval, T0 + offset_min * MINUTE_MS)
    end = next_open(interval, open_ms)
    cols = market.closed_klines(BTC, interval, open_ms, open_ms, av)
    assert cols.open_time == [open_ms]
    expected = _aggregate(one_minute_bars(market, BTC, open_ms, end, av))
    assert cols.bar(0) == expected
    assert market.final_bar(BTC, interval, open_ms, av) == expected


def test_week_opens_on_monday_and_month_on_the_first(market: Market) -> None:
    weeks = market.closed_klines(BTC, "1w", T0, T0 + 30 * DAY_MS, avail(BTC))
    assert weeks.open_time[0] == T0  # 2024-01-01 was a Monday
    assert all((t - T0) % (7 * DAY_MS) == 0 for t in weeks.open_time)
    months = market.closed_klines(BTC, "1M", T0, T0 + 70 * DAY_MS, avail(BTC))
    assert months.open_time == [T0, T0 + 31 * DAY_MS, T0 + 60 * DAY_MS]  # leap February
    assert [months.close_time(i) for i in range(3)] == [
        close_time("1M", t) for t in months.open_time
    ]


def test_maintenance_removes_candles_everywhere_and_higher_candles_aggregate_the_rest(
    market: Market,
) -> None:
    gap = (T0 + 2 * 3_600_000, T0 + 3 * 3_600_000)  # 02:00–03:00 UTC
    av = avail(BTC, gap)
    ones = market.closed_klines(BTC, "1m", T0, T0 + DAY_MS - 1, av)
    assert len(ones) == 1440 - 60
    assert not any(gap[0] <= t < gap[1] for t in ones.open_time)
    hours = market.closed_klines(BTC, "1h", T0, T0 + DAY_MS - 1, av)
    assert len(hours) == 23 and gap[0] not in hours.open_time
    # A 4h candle partly inside the gap aggregates only the existing minutes.
    four = market.closed_klines(BTC, "4h", T0, T0, av)
    expected = _aggregate(one_minute_bars(market, BTC, T0, T0 + 4 * 3_600_000, av))
    assert four.bar(0) == expected
    full = market.closed_klines(BTC, "4h", T0, T0, avail(BTC))
    assert four.bar(0).volume < full.bar(0).volume
    # The day candle, from cached-free masked summary, also excludes the hour.
    day = market.closed_klines(BTC, "1d", T0, T0, av)
    assert day.bar(0) == _aggregate(one_minute_bars(market, BTC, T0, T0 + DAY_MS, av))


def test_a_higher_candle_with_every_minute_missing_does_not_exist(market: Market) -> None:
    av = avail(BTC, (T0, T0 + DAY_MS))
    assert len(market.closed_klines(BTC, "1d", T0, T0 + 2 * DAY_MS, av)) == 2  # day 0 gone
    assert market.closed_klines(BTC, "1d", T0, T0 + 2 * DAY_MS, av).open_time[0] == T0 + DAY_MS
    assert market.final_bar(BTC, "1d", T0, av) is None


def test_nothing_before_onboarding_nor_after_delisting(market: Market) -> None:
    delisted = next(s for s in DEFAULT_SYMBOLS if s.delist_ms is not None)
    assert delisted.delist_ms is not None
    av = avail(delisted)
    after = market.closed_klines(delisted, "1m", delisted.delist_ms - 5 * MINUTE_MS, NOW, av)
    assert after.open_time[-1] == delisted.delist_ms - MINUTE_MS
    before = market.closed_klines(BTC, "1h", BTC.onboard_ms - DAY_MS, BTC.onboard_ms, avail(BTC))
    assert before.open_time == [BTC.onboard_ms]
    # The 1M candle containing the listing exists and opens on the 1st.
    month = market.closed_klines(BTC, "1M", 0, BTC.onboard_ms, avail(BTC))
    assert month.open_time == [align_open("1M", BTC.onboard_ms)]
    assert (
        month.bar(0).open == market.closed_klines(BTC, "1m", 0, BTC.onboard_ms, avail(BTC)).open[0]
    )


@settings(max_examples=30, deadline=None)
@given(elapsed=st.lists(st.integers(min_value=0, max_value=59_999), min_size=2, max_size=8))
def test_partial_minute_only_widens_and_accrues(elapsed: list[int]) -> None:
    final = Bar(100, 130, 90, 120, 5000, 600000, 50, 2000, 240000, 1000, 1049)
    for high_first in (True, False):
        prev: Bar | None = None
        for e in sorted(elapsed):
            bar = partial_bar(final, high_first, e)
            assert bar.low <= min(bar.open, bar.close) and bar.high >= max(bar.open, bar.close)
            assert final.low <= bar.low and bar.high <= final.high
            assert bar.last_id - bar.first_id + 1 == bar.trades
            if prev is not None:
                assert bar.trades >= prev.trades and bar.volume >= prev.volume
                assert bar.high >= prev.high and bar.low <= prev.low
            prev = bar
        assert partial_bar(final, high_first, 59_999).high == final.high
        assert partial_bar(final, high_first, 59_999).low == final.low


def test_current_candle_converges_to_the_final_one(market: Market) -> None:
    av = avail(BTC)
    open_ms = T0 + 3_600_000
    final = market.final_bar(BTC, "1h", open_ms, av)
    assert final is not None
    late = market.current_bar(BTC, "1h", open_ms + 3_600_000 - 1, av)
    assert late is not None and late[0] == open_ms
    bar = late[1]
    assert (bar.open, bar.high, bar.low) == (final.open, final.high, final.low)
    assert bar.volume <= final.volume and bar.trades <= final.trades
    early = market.current_bar(BTC, "1h", open_ms + 10 * MINUTE_MS + 30_000, av)
    assert early is not None and early[1].trades < bar.trades


def test_select_follows_rest_semantics(market: Market) -> None:
    av = avail(BTC)
    now = T0 + 10 * DAY_MS + 123_456
    # start: the first `limit` rows from it, by open time; an unaligned start rounds up.
    rows = market.select(BTC, "1h", T0 + 1, None, 5, av, now)
    assert rows.open_time == [T0 + h * 3_600_000 for h in range(1, 6)]
    # both bounds inclusive on open time.
    rows = market.select(BTC, "1h", T0, T0 + 2 * 3_600_000, 500, av, now)
    assert rows.open_time == [T0, T0 + 3_600_000, T0 + 7_200_000]
    # neither: the last `limit` rows, ending with the still-open candle.
    rows = market.select(BTC, "1m", None, None, 3, av, now)
    current = align_open("1m", now)
    assert rows.open_time == [current - 2 * MINUTE_MS, current - MINUTE_MS, current]
    # end only: the last `limit` rows at or before it.
    rows = market.select(BTC, "1d", None, T0 + 5 * DAY_MS, 2, av, now)
    assert rows.open_time == [T0 + 4 * DAY_MS, T0 + 5 * DAY_MS]
    # nothing after now.
    assert len(market.select(BTC, "1m", now + DAY_MS, None, 10, av, now)) == 0
    # a page skips a maintenance hole and still fills `limit` rows.
    holed = avail(BTC, (T0 + MINUTE_MS, T0 + 11 * MINUTE_MS))
    rows = market.select(BTC, "1m", T0, None, 5, holed, now)
    assert rows.open_time == [T0] + [T0 + m * MINUTE_MS for m in range(11, 15)]


def test_partial_last_row_differs_from_final(market: Market) -> None:
    av = avail(BTC)
    now = T0 + 30 * MINUTE_MS + 15_000
    rows = market.select(BTC, "1h", None, None, 1, av, now)
    final = market.final_bar(BTC, "1h", T0, av)
    assert rows.open_time == [T0]
    assert final is not None and rows.bar(0).volume < final.volume


def test_rest_json_layout_and_types(market: Market) -> None:
    cols = market.closed_klines(BTC, "5m", T0, T0 + 10 * MINUTE_MS, avail(BTC))
    rows = json.loads(rest_rows_json(BTC, cols))
    assert len(rows) == 3
    for row, t in zip(rows, cols.open_time, strict=True):
        assert len(row) == 12
        assert [type(v) for v in row] == [
            int,
            str,
            str,
            str,
            str,
            str,
            int,
            str,
            int,
            str,
            str,
            str,
        ]
        assert row[0] == t and row[6] == t + 5 * MINUTE_MS - 1 and row[11] == "0"
        assert all(len(row[i].split(".")[1]) == 2 for i in (1, 2, 3, 4))
        assert len(row[5].split(".")[1]) == 3 and len(row[7].split(".")[1]) == 5
    lines = csv_lines(BTC, cols)
    assert [line.split(",") for line in lines] == [[str(v) for v in row] for row in rows]


def test_decimal_formatter_keeps_trailing_zeros() -> None:
    assert decimal_formatter(2)(5721269) == "57212.69"
    assert decimal_formatter(2)(5721200) == "57212.00"
    assert decimal_formatter(3)(5) == "0.005"
    assert decimal_formatter(0)(17) == "17"
    assert decimal_formatter(5)(0) == "0.00000"


def test_availability_masks() -> None:
    av = Availability.build(
        T0 + 90 * MINUTE_MS, None, [(T0 + 100 * MINUTE_MS, T0 + 110 * MINUTE_MS + 1)]
    )
    m0 = T0 // MINUTE_MS
    assert av.first_minute == m0 + 90
    assert not av.contains(m0 + 89) and av.contains(m0 + 90)
    assert not av.contains(m0 + 100) and not av.contains(m0 + 110) and av.contains(m0 + 111)
    mask = av.span_mask(m0, m0 + 1440)
    assert not isinstance(mask, bool)
    assert int(mask.sum()) == 1440 - 90 - 11
    assert av.span_mask(m0 + 200, m0 + 300) is True
    assert av.span_mask(m0, m0 + 90) is False


def test_columns_slice_and_extend() -> None:
    cols = KlineColumns.empty("1m")
    cols.append(T0, Bar(1, 2, 1, 2, 3, 4, 5, 1, 2, 10, 14))
    cols.append(T0 + MINUTE_MS, Bar(2, 3, 2, 3, 3, 4, 5, 1, 2, 15, 19))
    assert len(cols.slice(1, 2)) == 1 and cols.slice(1, 2).open_time == [T0 + MINUTE_MS]
    other = KlineColumns.empty("1m")
    other.extend(cols)
    assert other == cols


def test_symbol_spec_rejects_overflowing_markets() -> None:
    with pytest.raises(ValueError, match="too large"):
        SymbolSpec("HUGEUSDT", "HUGE", "USDT", T0, 8, 8, 1e6, 1e6, 10)
    with pytest.raises(ValueError, match="delist"):
        SymbolSpec("XUSDT", "X", "USDT", T0, 2, 2, 1.0, 1.0, 1, delist_ms=T0 - 1)


def test_forming_candle_matches_the_vectorised_aggregate(market: Market) -> None:
    from sim.market import FormingCandle

    av = avail(BTC, (T0 + 10 * MINUTE_MS, T0 + 20 * MINUTE_MS))
    forming = FormingCandle()
    open_ms = T0  # a 1d candle, advanced in small and large steps (bulk path too)
    for minute in (3, 4, 11, 25, 200, 201, 1439):
        got = forming.advance(market, BTC, open_ms, open_ms // MINUTE_MS + minute, av)
        assert got == market.minutes_bar(
            BTC, open_ms // MINUTE_MS, open_ms // MINUTE_MS + minute, av
        )
    assert market.closing_bar(BTC, "1d", open_ms, av, forming) == market.final_bar(
        BTC, "1d", open_ms, av
    )
    # A different candle or availability resets it.
    assert market.closing_bar(BTC, "1d", open_ms + DAY_MS, av, forming) == market.final_bar(
        BTC, "1d", open_ms + DAY_MS, av
    )
    now = T0 + 5 * 3_600_000 + 12_345
    assert market.current_bar(BTC, "4h", now, av, FormingCandle()) == market.current_bar(
        BTC, "4h", now, av
    )
