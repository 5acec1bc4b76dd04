"""Exchange-confirmed empty ranges (maintenance) and the gap finder, end to end.

Run 1 records the maintenance hour as one empty range per pair (published on the topic,
written by the real sink into ``empty_ranges``) and fabricates nothing. Run 2 starts again:
the gap finder sees the hour missing in ``candlesticks`` but excluded by ``empty_ranges``,
so nothing is refetched. Run 3, after candles were deleted and the empty ranges forgotten,
shows the gap finder at work: it refetches exactly the holes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from qryptify import db
from qryptify.kline import EmptyRange
from qryptify.pairs import HOUR_MS, MINUTE_MS
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import BackfillEnv, RecordingTransport, read_topic
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

GAP_START = parse_time_ms("2024-07-03T06:00:00Z")
GAP_END = GAP_START + HOUR_MS
PAIRS = ("BTCUSDT/1m", "BTCUSDT/1h", "ETHUSDT/1m")


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    return backfill_env(
        PAIRS,
        start_date="2024-07-01",
        faults={"empty_ranges": [{"symbol": "BTCUSDT", "start": GAP_START, "end": GAP_END}]},
    )


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def empty_rows(dsn: str) -> list[tuple[str, str, int, int]]:
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, interval, (extract(epoch FROM start_ts) * 1000)::bigint,"
            " (extract(epoch FROM end_ts) * 1000)::bigint FROM empty_ranges ORDER BY 1, 2, 3"
        ).fetchall()
    return [(str(a), str(b), int(c), int(d)) for a, b, c, d in rows]


def klines_requests_touching(transport: RecordingTransport, start: int, end: int) -> list[str]:
    return [
        f"{s.params['symbol']}/{s.params['interval']} {s.params['startTime']}"
        for s in transport.sent
        if s.path == "/fapi/v1/klines"
        and int(s.params["startTime"]) < end
        and int(s.params["endTime"]) >= start
    ]


def run(env: BackfillEnv) -> RecordingTransport:
    transport = RecordingTransport()
    assert env.backfiller(transport).run() == 0
    wait_until(env.sink_caught_up, 120, "the sink to write everything")
    return transport


def test_empty_range_recorded_once_and_not_refetched(env: BackfillEnv) -> None:
    env.start("services.sink")
    first = run(env)
    assert klines_requests_touching(first, GAP_START, GAP_END)  # asked the exchange once
    expected = [
        ("BTCUSDT", "1h", GAP_START, GAP_END),
        ("BTCUSDT", "1m", GAP_START, GAP_END),
    ]
    assert empty_rows(env.dsn) == expected
    reports = env.check()
    assert [(len(r.missing), len(r.extra), len(r.wrong)) for r in reports] == [(0, 0, 0)] * 3
    with db.connect(env.dsn) as conn:
        fabricated = conn.execute(
            "SELECT count(*) FROM candlesticks WHERE symbol = 'BTCUSDT' AND ts >= %s AND ts < %s",
            (dt(GAP_START), dt(GAP_END)),
        ).fetchone()
    assert fabricated == (0,)

    # Run 2: the gap finder sees the hole in candlesticks, and empty_ranges says why.
    second = run(env)
    assert klines_requests_touching(second, GAP_START, GAP_END) == []
    empties = [e for _, _, e in read_topic(env.kafka) if isinstance(e, EmptyRange)]
    assert len(empties) == 2
    assert empty_rows(env.dsn) == expected

    # Run 3: a lost write (rows deleted) and forgotten empty ranges: the gap finder refetches
    # exactly the holes and the exchange confirms the empty hour again.
    lost_start = parse_time_ms("2024-07-02T10:00:00Z")
    with db.connect(env.dsn) as conn:
        conn.execute(
            "DELETE FROM candlesticks WHERE symbol = 'ETHUSDT' AND ts >= %s AND ts < %s",
            (dt(lost_start), dt(lost_start + 30 * MINUTE_MS)),
        )
        conn.execute("DELETE FROM empty_ranges")
        conn.commit()
    third = run(env)
    assert klines_requests_touching(third, lost_start, lost_start + 30 * MINUTE_MS) == [
        f"ETHUSDT/1m {lost_start}"
    ]
    # Each empty answer is confirmed by a second request before it becomes an empty range.
    assert sorted(klines_requests_touching(third, GAP_START, GAP_END)) == [
        f"BTCUSDT/1h {GAP_START}",
        f"BTCUSDT/1h {GAP_START}",
        f"BTCUSDT/1m {GAP_START}",
        f"BTCUSDT/1m {GAP_START}",
    ]
    assert empty_rows(env.dsn) == expected
    reports = env.check()
    assert [(len(r.missing), len(r.extra), len(r.wrong)) for r in reports] == [(0, 0, 0)] * 3
