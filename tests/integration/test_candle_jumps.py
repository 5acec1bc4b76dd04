"""``db.candle_jumps``, the one candle-jump query (backfiller gap finder and ``qryptify status``),
on the real PostgreSQL: fixed intervals by their step, 1M by calendar month in UTC."""

from __future__ import annotations

from qryptify import db
from qryptify.gaps import holes_from_jumps, jumps
from qryptify.kline import EmptyRange
from tests.conftest import T0, make_kline

M = 60_000
JAN, FEB, MAR, APR, MAY = (
    1_704_067_200_000,  # 2024-01-01
    1_706_745_600_000,
    1_709_251_200_000,
    1_711_929_600_000,
    1_714_521_600_000,
)


def test_minute_jumps_are_the_stored_neighbours_more_than_one_step_apart(db_dsn: str) -> None:
    stored = [T0 + i * M for i in (0, 1, 4, 5, 9)]
    other = [T0 + i * M for i in range(10)]  # another pair, complete: must not interfere
    with db.connect(db_dsn) as conn:
        db.write_batch(conn, [make_kline("BTCUSDT", "1m", t) for t in stored])
        db.write_batch(conn, [make_kline("ETHUSDT", "1m", t) for t in other])
        found = db.candle_jumps(conn, "BTCUSDT", "1m", T0, T0 + 10 * M)
        assert found == [(T0 + M, T0 + 4 * M), (T0 + 5 * M, T0 + 9 * M)]
        assert found == jumps("1m", stored)  # the in-memory twin agrees
        # The window bounds the scan: a jump leaving it is not seen.
        assert db.candle_jumps(conn, "BTCUSDT", "1m", T0, T0 + 5 * M) == [(T0 + M, T0 + 4 * M)]
        assert db.candle_jumps(conn, "ETHUSDT", "1m", T0, T0 + 10 * M) == []
    holes = holes_from_jumps("1m", T0, T0 + 12 * M, stored[0], stored[-1], found)
    assert holes == [(T0 + 2 * M, T0 + 4 * M), (T0 + 6 * M, T0 + 9 * M), (T0 + 10 * M, T0 + 12 * M)]


def test_month_jumps_follow_the_calendar(db_dsn: str) -> None:
    # January (31 days) → February (29 in 2024) are neighbours; March is missing.
    with db.connect(db_dsn) as conn:
        db.write_batch(conn, [make_kline("BNBUSDT", "1M", t) for t in (JAN, FEB, APR)])
        assert db.candle_jumps(conn, "BNBUSDT", "1M", JAN, MAY) == [(FEB, APR)]


def test_the_gap_finder_reads_holes_minus_empty_ranges_and_the_sink_pointer(db_dsn: str) -> None:
    # Stored 0,1,4,5,9 of [0, 12); the exchange confirmed [6, 8) empty.
    stored = [T0 + i * M for i in (0, 1, 4, 5, 9)]
    with db.connect(db_dsn) as conn:
        assert db.sync_pointer(conn, "SOLUSDT", "1m") is None  # nothing written yet
        assert db.stored_holes(conn, "SOLUSDT", "1m", T0, T0 + 12 * M) == [(T0, T0 + 12 * M)]
        db.write_batch(
            conn,
            [make_kline("SOLUSDT", "1m", t) for t in stored],
            [EmptyRange("SOLUSDT", "1m", T0 + 6 * M, T0 + 8 * M, T0 + 20 * M)],
        )
        holes = db.stored_holes(conn, "SOLUSDT", "1m", T0, T0 + 12 * M)
        assert holes == [
            (T0 + 2 * M, T0 + 4 * M),
            (T0 + 8 * M, T0 + 9 * M),
            (T0 + 10 * M, T0 + 12 * M),
        ]
        assert db.stored_holes(conn, "SOLUSDT", "1m", T0 + 4 * M, T0 + 4 * M) == []
        assert db.sync_pointer(conn, "SOLUSDT", "1m") == T0 + 9 * M
