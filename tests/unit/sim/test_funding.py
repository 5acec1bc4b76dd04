"""The simulator's funding schedule (pure): the grid, an interval change mid-history, REST
selection, values that depend only on (symbol, time), the 5-minute request window."""

from __future__ import annotations

import pytest

from sim.funding import FundingBook, WindowLimit, parse_funding_changes
from sim.market import Availability
from sim.symbols import DEFAULT_SYMBOLS, parse_time_ms

H = 3_600_000
SPECS = {s.symbol: s for s in DEFAULT_SYMBOLS}
CHANGE = parse_time_ms("2024-06-15T04:00:00Z")
DAY = parse_time_ms("2024-06-15")


def book() -> FundingBook:
    return FundingBook(DEFAULT_SYMBOLS, [("ETHUSDT", CHANGE, 4)])


def test_default_schedule_is_8h_on_the_utc_grid() -> None:
    rows = book().between(SPECS["BTCUSDT"], DAY, DAY + 48 * H)
    assert [(f.time - DAY) // H for f in rows] == [0, 8, 16, 24, 32, 40]
    assert {f.interval_hours for f in rows} == {8}


def test_an_interval_change_moves_the_grid_and_the_settled_period() -> None:
    rows = book().between(SPECS["ETHUSDT"], DAY - 8 * H, DAY + 16 * H)
    assert [(f.time - DAY) // H for f in rows] == [-8, 0, 4, 8, 12]
    # The funding at 04:00 settles the 4 h since 00:00; before it, 8 h periods.
    assert [f.interval_hours for f in rows] == [8, 8, 4, 4, 4]
    # Only ETHUSDT changed.
    btc = book().between(SPECS["BTCUSDT"], DAY, DAY + 16 * H)
    assert [(f.time - DAY) // H for f in btc] == [0, 8]


def test_values_depend_only_on_symbol_and_time() -> None:
    a = book().between(SPECS["BTCUSDT"], DAY, DAY + 24 * H)
    b = FundingBook(DEFAULT_SYMBOLS).between(SPECS["BTCUSDT"], DAY, DAY + 24 * H)
    assert a == b
    assert len({f.rate for f in a}) == 3
    for f in a:
        assert f.rate.rsplit(".", 1)[1].isdigit() and len(f.rate.rsplit(".", 1)[1]) == 8
        assert abs(float(f.mark_price) / SPECS["BTCUSDT"].base_price - 1) <= 0.05


def test_rest_selection_from_start_and_latest() -> None:
    spec = SPECS["ETHUSDT"]
    now = DAY + 24 * H + 1
    first = book().select(spec, DAY, None, 3, now)
    assert [(f.time - DAY) // H for f in first] == [0, 4, 8]
    latest = book().select(spec, None, None, 2, now)
    assert [(f.time - DAY) // H for f in latest] == [20, 24]
    # Nothing after now, nothing after the end.
    assert book().select(spec, DAY, DAY + 5 * H, 100, now)[-1].time == DAY + 4 * H
    assert book().select(spec, now, None, 100, now) == []


def test_a_delisted_symbol_has_no_funding_after_delisting() -> None:
    spec = SPECS["DELISTUSDT"]
    assert spec.delist_ms is not None
    rows = book().between(spec, spec.delist_ms - 24 * H, spec.delist_ms + 24 * H)
    assert rows and all(f.time < spec.delist_ms for f in rows)


def test_bad_changes_are_refused() -> None:
    with pytest.raises(ValueError, match="divide 24"):
        FundingBook(DEFAULT_SYMBOLS, [("ETHUSDT", CHANGE, 5)])
    with pytest.raises(ValueError, match="not \\[symbol"):
        parse_funding_changes('[["ETHUSDT", 4]]')
    assert parse_funding_changes('[["ETHUSDT", "2024-06-15T04:00:00Z", 4]]') == (
        ("ETHUSDT", CHANGE, 4),
    )


def test_window_limit_answers_retry_after_past_500_in_5_minutes() -> None:
    limit = WindowLimit(requests=3, window_s=300)
    assert [limit.retry_after("ip", float(t)) for t in range(3)] == [0, 0, 0]
    assert limit.retry_after("ip", 10.0) == 291
    assert limit.retry_after("other", 10.0) == 0
    assert limit.retry_after("ip", 300.5) == 0


# -- price klines ------------------------------------------------------------------------------
def test_price_kinds_are_monotonic_transforms_so_intervals_aggregate_exactly() -> None:
    from sim.market import Market
    from sim.price_klines import rows

    market = Market(DEFAULT_SYMBOLS)
    spec = SPECS["BTCUSDT"]
    avail = Availability.build(spec.onboard_ms, spec.delist_ms, [])
    hour = market.closed_klines(spec, "1h", DAY, DAY, avail)
    minutes = market.closed_klines(spec, "1m", DAY, DAY + H - 60_000, avail)
    for kind in ("mark", "index", "premium"):
        (h,) = rows(kind, spec, hour)
        ms = rows(kind, spec, minutes)
        assert len(ms) == 60
        assert h[1] == ms[0][1] and h[4] == ms[-1][4]  # open of the first, close of the last
        assert float(str(h[2])) == max(float(str(m[2])) for m in ms)
        assert float(str(h[3])) == min(float(str(m[3])) for m in ms)
        assert h[8] == 3600 and ms[0][8] == 60  # one sample per second
        assert h[5] == h[7] == "0"
    mark, index = rows("mark", spec, hour)[0], rows("index", spec, hour)[0]
    assert float(str(mark[4])) > float(str(index[4]))
