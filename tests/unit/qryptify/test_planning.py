"""Pure planning: pair ranges, weight-optimal pages, archive vs REST."""

from __future__ import annotations

from qryptify.binance.archive import ArchiveFile
from qryptify.pairs import DAY_MS, HOUR_MS, MINUTE_MS, Pair, count_opens
from qryptify.planning import (
    ArchiveUnit,
    Page,
    RestUnit,
    fallback_units,
    pair_range,
    plan_archive,
    plan_pages,
    plan_units,
    ranges_to_units,
)
from sim.symbols import parse_time_ms

BTC1M = Pair("BTCUSDT", "1m")
JAN = parse_time_ms("2024-01-01")
FEB = parse_time_ms("2024-02-01")
MAR = parse_time_ms("2024-03-01")


def test_pair_range_starts_at_start_date_or_the_listing_candle() -> None:
    now = JAN + 10 * MINUTE_MS + 30_000
    r = pair_range(BTC1M, JAN, now)
    assert (r.start_ms, r.end_ms) == (JAN, JAN + 10 * MINUTE_MS)  # the open candle is excluded
    assert r.expected == 10
    # listed later than start_date: start at the candle holding the listing moment
    onboard = JAN + 3 * DAY_MS + 8 * HOUR_MS
    r = pair_range(Pair("BTCUSDT", "1d"), JAN, FEB, onboard_ms=onboard)
    assert r.start_ms == JAN + 3 * DAY_MS
    # start_date later than the listing: the first candle opening at/after it
    r = pair_range(Pair("BTCUSDT", "1w"), JAN + 1, FEB, onboard_ms=0)
    assert r.start_ms == parse_time_ms("2024-01-08")  # Monday after Mon 2024-01-01


def test_pair_range_of_a_settled_contract_ends_with_its_last_candle() -> None:
    settles = FEB + 5 * HOUR_MS + 30 * MINUTE_MS
    r = pair_range(Pair("OLDUSDT", "1h"), JAN, MAR, settles_at_ms=settles)
    assert r.end_ms == FEB + 6 * HOUR_MS  # the 05:00 candle is the last one


def test_pair_range_exactly_on_a_boundary() -> None:
    r = pair_range(BTC1M, JAN, JAN + 5 * MINUTE_MS)
    assert r.end_ms == JAN + 5 * MINUTE_MS  # the 00:05 candle just opened: not closed


def test_plan_pages_cover_the_range_with_full_pages() -> None:
    pages = plan_pages("1m", JAN, JAN + 1000 * MINUTE_MS, 499)
    assert pages == [
        Page(JAN, JAN + 498 * MINUTE_MS, 499),
        Page(JAN + 499 * MINUTE_MS, JAN + 997 * MINUTE_MS, 499),
        Page(JAN + 998 * MINUTE_MS, JAN + 999 * MINUTE_MS, 2),
    ]
    assert sum(p.slots for p in pages) == 1000
    assert plan_pages("1m", JAN, JAN, 499) == []


def test_plan_pages_for_calendar_months() -> None:
    pages = plan_pages("1M", JAN, parse_time_ms("2025-01-01"), 5)
    assert [p.slots for p in pages] == [5, 5, 2]
    assert pages[0].start_ms == JAN and pages[-1].last_ms == parse_time_ms("2024-12-01")


def test_plan_pages_unaligned_start() -> None:
    pages = plan_pages("1h", JAN + 1, JAN + 3 * HOUR_MS, 499)
    assert pages == [Page(JAN + HOUR_MS, JAN + 2 * HOUR_MS, 2)]


def test_archive_plan_monthly_then_daily_then_rest() -> None:
    now = MAR + 5 * DAY_MS + 12 * HOUR_MS  # 2024-03-06 12:00
    spans = plan_archive(BTC1M, JAN, now - now % MINUTE_MS, now, min_candles=249)
    files = [f for _, _, f in spans if f is not None]
    assert [str(f) for f in files] == [
        "BTCUSDT-1m-2024-01.zip",
        "BTCUSDT-1m-2024-02.zip",
        "BTCUSDT-1m-2024-03-01.zip",
        "BTCUSDT-1m-2024-03-02.zip",
        "BTCUSDT-1m-2024-03-03.zip",
        "BTCUSDT-1m-2024-03-04.zip",
        "BTCUSDT-1m-2024-03-05.zip",  # ended 36 h ago: published (~08:30 next day)
    ]
    a, b, tail = spans[-1]
    assert tail is None and a == MAR + 5 * DAY_MS and b == now  # today by REST
    # contiguous and in order
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


def test_archive_plan_skips_unpublished_files() -> None:
    now = MAR + 20 * HOUR_MS  # Feb's monthly not yet out (2-day delay); Feb 29 daily out
    spans = plan_archive(BTC1M, FEB + 27 * DAY_MS, MAR, now, min_candles=249)
    assert [str(f) for _, _, f in spans if f] == [
        "BTCUSDT-1m-2024-02-28.zip",
        "BTCUSDT-1m-2024-02-29.zip",
    ]
    now = MAR + 5 * HOUR_MS  # Feb 29 daily not out yet (10 h delay)
    spans = plan_archive(BTC1M, FEB + 28 * DAY_MS, MAR, now, min_candles=249)
    assert spans == [(FEB + 28 * DAY_MS, MAR, None)]


def test_archive_not_worth_it_for_few_candles_per_file() -> None:
    spans = plan_archive(Pair("BTCUSDT", "4h"), JAN, MAR, MAR + 10 * DAY_MS, min_candles=249)
    assert spans == [(JAN, MAR, None)]  # 186 candles a month: REST pages are cheaper
    spans = plan_archive(Pair("BTCUSDT", "1h"), JAN, MAR, MAR + 10 * DAY_MS, min_candles=249)
    assert [f.kind for _, _, f in spans if f] == ["monthly", "monthly"]


def test_plan_units_without_archive_is_pages_only() -> None:
    units = plan_units(BTC1M, JAN, JAN + 600 * MINUTE_MS, MAR, limit=499, archive=False)
    assert all(isinstance(u, RestUnit) for u in units) and len(units) == 2


def test_plan_units_with_archive() -> None:
    end = FEB + 30 * MINUTE_MS
    units = plan_units(BTC1M, JAN + 10 * DAY_MS, end, MAR, limit=499, archive=True)
    assert isinstance(units[0], ArchiveUnit)
    assert units[0].file == ArchiveFile.monthly("BTCUSDT", "1m", JAN)
    assert units[0].start_ms == JAN + 10 * DAY_MS and units[0].end_ms == FEB
    assert isinstance(units[1], RestUnit) and units[1].page == Page(FEB, FEB + 29 * MINUTE_MS, 30)


def test_fallback_of_a_monthly_file_is_dailies_then_rest() -> None:
    unit = ArchiveUnit(ArchiveFile.monthly("BTCUSDT", "1m", JAN), JAN, FEB)
    units = fallback_units(BTC1M, unit, MAR, limit=499)
    assert len(units) == 31 and all(isinstance(u, ArchiveUnit) for u in units)
    daily = units[0]
    assert isinstance(daily, ArchiveUnit)
    pages = fallback_units(BTC1M, daily, MAR, limit=499)
    assert all(isinstance(u, RestUnit) for u in pages)
    assert sum(u.page.slots for u in pages if isinstance(u, RestUnit)) == 1440


def test_ranges_to_units() -> None:
    units = ranges_to_units("1m", [(JAN, JAN + 2 * MINUTE_MS), (FEB, FEB + MINUTE_MS)], 499)
    assert [u.page for u in units] == [
        Page(JAN, JAN + MINUTE_MS, 2),
        Page(FEB, FEB, 1),
    ]
    assert count_opens("1m", JAN, FEB) == 44640


def test_page_events_confirm_empty_only_what_a_full_answer_left_out() -> None:
    from qryptify.kline import EmptyRange
    from qryptify.planning import Page, page_events
    from tests.conftest import T0, make_kline

    pair = Pair("BTCUSDT", "1m")
    page = Page(T0, T0 + 4 * MINUTE_MS, 5)
    answer = [make_kline(open_time=T0), make_kline(open_time=T0 + 3 * MINUTE_MS),
              make_kline(open_time=T0 + 4 * MINUTE_MS)]  # fmt: skip
    now = T0 + 5 * MINUTE_MS  # every slot of the page has closed
    closed, empty = page_events(pair, page, [*answer, make_kline(open_time=T0 + 5 * MINUTE_MS)],
                                now, limit=5)  # fmt: skip
    assert closed == answer  # the candle still open at `now` is dropped
    assert empty == [EmptyRange("BTCUSDT", "1m", T0 + MINUTE_MS, T0 + 3 * MINUTE_MS, now)]
    # a page larger than the limit proves nothing
    assert page_events(pair, page, answer, now, limit=4)[1] == []


def test_pair_range_from_a_start_instant_inside_a_candle() -> None:
    # backfill.start_date 2022-01-01T13:37:00+02:00 = 11:37 UTC: the first candle opening at
    # or after it, per interval.
    start = parse_time_ms("2022-01-01T11:37:00Z")
    now = parse_time_ms("2022-01-03T00:00:00Z")
    assert pair_range(Pair("BTCUSDT", "4h"), start, now).start_ms == parse_time_ms(
        "2022-01-01T12:00:00Z"
    )
    assert pair_range(Pair("ETHUSDT", "1h"), start, now).start_ms == parse_time_ms(
        "2022-01-01T12:00:00Z"
    )
    assert pair_range(Pair("BNBUSDT", "15m"), start, now).start_ms == parse_time_ms(
        "2022-01-01T11:45:00Z"
    )
    assert pair_range(Pair("BNBUSDT", "1m"), start, now).start_ms == start  # on the grid
