"""Pure gap finding: grid minus stored minus empty ranges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qryptify.gaps import (
    confirmed_empty,
    day_shortfalls,
    find_gaps,
    holes_from_jumps,
    missing_runs,
    subtract,
)
from qryptify.pairs import MINUTE_MS, next_open
from sim.symbols import parse_time_ms
from tests.conftest import make_kline

T = parse_time_ms("2024-01-01")
M = MINUTE_MS


def grid(*minutes: int) -> list[int]:
    return [T + m * M for m in minutes]


def test_no_gaps_when_everything_is_stored() -> None:
    assert find_gaps(grid(*range(10)), "1m", T, T + 10 * M) == []


def test_holes_at_start_middle_and_end() -> None:
    stored = grid(2, 3, 6, 7)
    assert find_gaps(stored, "1m", T, T + 10 * M) == [
        (T, T + 2 * M),
        (T + 4 * M, T + 6 * M),
        (T + 8 * M, T + 10 * M),
    ]


def test_everything_missing() -> None:
    assert find_gaps([], "1h", T, T + 5 * 3_600_000) == [(T, T + 5 * 3_600_000)]


def test_stored_outside_the_range_is_ignored() -> None:
    stored = [T - M, *grid(0, 1), T + 50 * M]
    assert find_gaps(stored, "1m", T, T + 3 * M) == [(T + 2 * M, T + 3 * M)]


def test_empty_ranges_are_not_holes() -> None:
    stored = grid(0, 1, 9)
    empty = [(T + 2 * M, T + 5 * M)]
    assert find_gaps(stored, "1m", T, T + 10 * M, empty) == [(T + 5 * M, T + 9 * M)]
    # an empty range covering the hole entirely
    assert find_gaps(stored, "1m", T, T + 10 * M, [(T + 2 * M, T + 9 * M)]) == []


def test_subtract_splits_and_aligns() -> None:
    holes = [(T, T + 10 * M)]
    covered = [(T + 3 * M + 1, T + 5 * M)]  # unaligned start: the 00:03 candle is not covered
    # open times inside [00:03:00.001, 00:05) on the grid: 00:04 only
    assert subtract(holes, covered, "1m") == [(T, T + 4 * M), (T + 5 * M, T + 10 * M)]


def test_calendar_month_gaps() -> None:
    stored = [parse_time_ms("2024-01-01"), parse_time_ms("2024-04-01")]
    assert find_gaps(stored, "1M", parse_time_ms("2024-01-01"), parse_time_ms("2024-05-01")) == [
        (parse_time_ms("2024-02-01"), parse_time_ms("2024-04-01"))
    ]


def test_holes_from_sql_jumps_equal_holes_from_every_stored_row() -> None:
    stored = grid(3, 4, 5, 8, 9, 10, 11, 15, 16)
    jumps = [(T + 5 * M, T + 8 * M), (T + 11 * M, T + 15 * M)]  # what lead() reports
    empty = [(T + 12 * M, T + 13 * M)]
    expected = find_gaps(stored, "1m", T, T + 20 * M, empty)
    assert expected == [
        (T, T + 3 * M),
        (T + 6 * M, T + 8 * M),
        (T + 13 * M, T + 15 * M),
        (T + 17 * M, T + 20 * M),
    ]
    assert holes_from_jumps("1m", T, T + 20 * M, stored[0], stored[-1], jumps, empty) == expected
    assert holes_from_jumps("1m", T, T + 2 * M, None, None, []) == [(T, T + 2 * M)]


def test_missing_runs_and_confirmed_empty_from_a_rest_answer() -> None:
    assert missing_runs("1m", T, T + 5 * M, grid(0, 4)) == [(T + M, T + 4 * M)]
    answer = [make_kline(open_time=t) for t in grid(0, 1, 3)]
    assert confirmed_empty("1m", T, T + 5 * M, answer) == [
        (T + 2 * M, T + 3 * M),
        (T + 4 * M, T + 5 * M),
    ]
    assert confirmed_empty("1m", T, T + 3 * M, []) == [(T, T + 3 * M)]


def test_day_shortfalls_per_utc_day() -> None:
    day = 86_400_000
    opens = [T + i * M for i in range(1440)] + [T + day + i * M for i in range(1440) if i % 100]
    assert day_shortfalls("1m", T, T + 2 * day, opens) == [(T + day, 1440, 1425)]
    # a partial first day expects only its part
    assert day_shortfalls("1m", T + 720 * M, T + day, opens) == []
    assert day_shortfalls("1h", T, T + day, []) == [(T, 24, 0)]


@given(
    interval=st.sampled_from(["1m", "1h", "1w", "1M"]),
    first=st.integers(min_value=0, max_value=400),
    n=st.integers(min_value=0, max_value=300),
    start=st.integers(min_value=-5, max_value=800),
    length=st.integers(min_value=0, max_value=800),
    shift=st.integers(min_value=0, max_value=2),
)
def test_fast_paths_give_the_per_candle_answers(
    interval: str, first: int, n: int, start: int, length: int, shift: int
) -> None:
    base = T  # 2024-01-01: a month start
    opens = [base]
    for _ in range(first + n):
        opens.append(next_open(interval, opens[-1]))
    opens = [t + shift for t in opens[first:]]  # shift > 0: off the grid
    step = 3_600_000 if interval != "1m" else 60_000
    start_ms, end_ms = base + start * step, base + (start + length) * step
    assert missing_runs(interval, start_ms, end_ms, opens) == find_gaps(
        opens, interval, start_ms, end_ms
    )
    # a list in order takes the bisection count; the reversed iterator the per-row loop
    shortfalls = day_shortfalls(interval, start_ms, end_ms, opens)
    assert shortfalls == day_shortfalls(interval, start_ms, end_ms, iter(opens[::-1]))
