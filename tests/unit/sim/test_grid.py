"""The simulator's own kline grid against Binance's documented examples
(``shared/reference/binance-api.md``), and against the product's grid as a second, independent
implementation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify import pairs
from sim import grid


@pytest.mark.parametrize(
    ("interval", "open_ms", "close_ms", "source"),
    [
        # /fapi/v1/klines official example: a 1w candle, Mon 2017-07-03 .. Sun 2017-07-09.
        ("1w", 1_499_040_000_000, 1_499_644_799_999, "klines doc example"),
        # kline stream official example.
        ("1m", 1_638_747_660_000, 1_638_747_719_999, "WS doc example"),
        # Real data.binance.vision UM CSV rows (BTCUSDT 5m) and a mark-price 5m REST row.
        ("5m", 1_743_465_300_000, 1_743_465_599_999, "archive CSV row"),
        ("5m", 1_759_276_500_000, 1_759_276_799_999, "archive CSV row"),
        ("5m", 1_616_338_800_000, 1_616_339_099_999, "REST fixture row"),
        ("5m", 1_616_341_200_000, 1_616_341_499_999, "REST fixture row"),
        # CM daily 1h archive rows.
        ("1h", 1_698_364_800_000, 1_698_368_399_999, "archive CSV row"),
        ("1h", 1_698_368_400_000, 1_698_371_999_999, "archive CSV row"),
        # 1M is a calendar month: January is 2678400000 ms (31 days).
        ("1M", 1_704_067_200_000, 1_704_067_200_000 + 2_678_400_000 - 1, "January 2024"),
    ],
)
def test_documented_candles(interval: str, open_ms: int, close_ms: int, source: str) -> None:
    assert grid.align_open(interval, open_ms) == open_ms, source
    assert grid.align_open(interval, close_ms) == open_ms, source
    assert grid.close_time(interval, open_ms) == close_ms, source
    assert grid.next_open(interval, open_ms) == close_ms + 1, source


def test_unaligned_start_and_end_select_by_open_time() -> None:
    # Spot 15m evidence: startTime 1526170656448 gave a first open of 1526171400000, endTime
    # 1526257056448 a last open of 1526256900000 whose close is 1526257799999.
    assert grid.ceil_open("15m", 1_526_170_656_448) == 1_526_171_400_000
    assert grid.align_open("15m", 1_526_257_056_448) == 1_526_256_900_000
    assert grid.close_time("15m", 1_526_256_900_000) == 1_526_257_799_999


def test_500_minutes_from_a_start_end_where_documented() -> None:
    # python-binance#701: 1m from 1604102400000 with limit 500 ended at 1604132340000.
    t = 1_604_102_400_000
    for _ in range(499):
        t = grid.next_open("1m", t)
    assert t == 1_604_132_340_000


def test_weeks_open_on_monday() -> None:
    # 2024-01-01 was a Monday; 2024-01-07 23:59:59.999 a Sunday in the same week.
    monday = 1_704_067_200_000
    assert grid.align_open("1w", monday + 7 * grid.DAY_MS - 1) == monday
    assert grid.align_open("1w", monday - 1) == monday - 7 * grid.DAY_MS
    # The epoch (a Thursday) lies in the week that opened Monday 1969-12-29.
    assert grid.align_open("1w", 0) == -3 * grid.DAY_MS


@pytest.mark.parametrize(
    ("year", "month", "days"),
    [(2023, 2, 28), (2024, 2, 29), (2000, 2, 29), (2100, 2, 28), (2024, 4, 30), (2024, 12, 31)],
)
def test_month_lengths_follow_the_gregorian_calendar(year: int, month: int, days: int) -> None:
    start = grid.days_from_civil(year, month, 1) * grid.DAY_MS
    assert grid.close_time("1M", start) - start + 1 == days * grid.DAY_MS
    assert grid.civil_from_days(start // grid.DAY_MS) == (year, month, 1)


def test_december_rolls_into_january() -> None:
    dec = grid.days_from_civil(2024, 12, 1) * grid.DAY_MS
    assert grid.next_open("1M", dec) == 1_735_689_600_000  # 2025-01-01T00:00:00Z


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="not a kline interval"):
        grid.check_interval("1mo")
    with pytest.raises(ValueError, match="not a symbol name"):
        grid.check_symbol("btcusdt")
    with pytest.raises(ValueError, match="no fixed length"):
        grid.interval_ms("1M")
    assert grid.check_symbol("BTCUSDT_250926") == "BTCUSDT_250926"


@given(
    interval=st.sampled_from(grid.INTERVALS),
    ts=st.integers(min_value=0, max_value=4_102_444_800_000),  # 1970 .. 2100
)
def test_agrees_with_the_products_grid(interval: str, ts: int) -> None:
    # Two implementations written apart: an error in either shows as a disagreement.
    assert grid.INTERVALS == pairs.INTERVALS
    opened = grid.align_open(interval, ts)
    assert opened == pairs.align_open(interval, ts)
    assert grid.next_open(interval, opened) == pairs.next_open(interval, opened)
    assert grid.ceil_open(interval, ts) == pairs.ceil_open(interval, ts)
