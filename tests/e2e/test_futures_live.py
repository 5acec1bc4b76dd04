"""All four futures kinds, archive + REST + live, end to end: backfill from the June archive
and the July REST tail to "now", then the producer (subprocess) on an accelerated simulator:
``<symbol>@markPrice@1s`` on the routed path (a funding settles → REST), the watchdog for
mark/index/premium klines (no kline stream of these kinds exists on USDⓈ-M), a funding-interval
change and WebSocket drops during the live window; the sink writes it all. 0 missing / 0 extra
/ 0 wrong per kind against the truth up to shortly before the stop, and the window after the
backfill is non-empty for every series. Waits are hang guards only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qryptify import db
from qryptify.futures.price import EMPTY_TABLES
from qryptify.pairs import HOUR_MS
from sim.server import SimulatorThread
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import BackfillEnv
from tests.e2e.futures_support import (
    backfiller,
    compare_funding,
    compare_prices,
    futures_env,
    group_caught_up,
)
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

START = "2024-06-01"  # the June archive files, then REST
SIM_START = parse_time_ms("2024-07-10T12:34:30Z")
TO_1H = SIM_START + 2 * HOUR_MS  # ETHUSDT: 8 h → 1 h during the live window
# BNBUSDT's maintenance hour during the live window (after the drops): no candle of any kind.
MAINTENANCE = (parse_time_ms("2024-07-10T17:00:00Z"), parse_time_ms("2024-07-10T18:00:00Z"))
PAIRS = ("BTCUSDT/15m", "ETHUSDT/1h", "BNBUSDT/30m")
KINDS = ("mark", "index", "premium")
SPEED = 600.0  # 10 sim minutes per wall second


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    return backfill_env(
        PAIRS,
        start_date=START,
        start_ms=SIM_START,
        speed=SPEED,
        funding_changes=(("ETHUSDT", TO_1H, 1),),
        faults={"empty_ranges": [{"symbol": "BNBUSDT", "start": MAINTENANCE[0],
                                  "end": MAINTENANCE[1]}]},
        ws={
            "watchdog_grace_ms": 120_000,  # 2 sim minutes: 0.2 s wall
            "watchdog_retry_ms": 120_000,
            "stale_after_s": 5,
            "rotate_after_s": 1800,  # 30 sim minutes (3 s wall): the connections rotate often
        },
        extra={"rest": {"time_sync_every_s": 0.5}},
    )  # fmt: skip


def test_live_futures_through_a_funding_change_and_ws_drops(env: BackfillEnv) -> None:
    sim = env.sim
    assert isinstance(sim, SimulatorThread)
    topic = futures_env(env, prices=True)
    env.start("services.sink")
    backfill = backfiller(env)
    assert backfill.run() == 0
    backfilled_to = sim.now_ms()
    passes = backfill.futures
    assert passes is not None and passes.funding is not None and passes.prices is not None
    assert passes.funding.archive_months == 3  # June, for each symbol
    # June's monthly file and the daily files of July 1..9, for each kind and pair.
    assert passes.prices.archive_files == 3 * 3 * (1 + 9)
    assert passes.prices.rest_pages >= 9  # and the July 10 tail from REST

    producer = env.start("services.producer")
    wait_until(lambda: sim.now_ms() >= backfilled_to + 2 * HOUR_MS, 120, "2 sim hours live")
    sim.set_faults(ws_drop_every_s=2.5)  # every connection, the markPrice one included
    wait_until(lambda: sim.now_ms() >= backfilled_to + 4 * HOUR_MS, 120, "2 sim hours of drops")
    sim.set_faults(ws_drop_every_s=0.0)  # the drops end; the maintenance hour stays
    wait_until(lambda: sim.now_ms() >= backfilled_to + 7 * HOUR_MS, 120, "3 more sim hours")
    stopped_at = sim.now_ms()
    assert producer.stop() == 0
    sim.set_speed(1e-6)
    wait_until(env.sink_caught_up, 120, "the sink to write the klines")
    group = f"{env.sink_group}.futures"
    wait_until(lambda: group_caught_up(env.kafka, topic, group), 120, "the futures path")

    log = producer.text()
    assert "futures: markPrice stream reconnected" in log, log[-3000:]
    # Rotated ahead of the cut (replacement first) outside the drop window too.
    assert "futures: markPrice connection rotated (3)" in log, log[-3000:]
    assert sim.stats()["ws_drops"] >= 1

    start = parse_time_ms(START)
    # Open times before `end` closed at least an hour (of sim time: 6 wall seconds) before the
    # stop, the largest interval here being 1h: the producer's last fetches may lag the stop.
    end = stopped_at - 2 * HOUR_MS
    funding = {s: compare_funding(env.dsn, sim.url, s, start, end) for s in
               ("BTCUSDT", "ETHUSDT", "BNBUSDT")}  # fmt: skip
    for r in funding.values():
        print(r.symbol, r.truth, r.counts, r.missing[:3], r.extra[:3], r.wrong[:3])
    assert {s: r.counts for s, r in funding.items()} == {s: (0, 0, 0) for s in funding}
    prices = [compare_prices(env.dsn, sim.url, k, p, start, end) for k in KINDS for p in PAIRS]
    for p in prices:
        print(p.kind, p.pair, p.truth, p.counts, p.missing[:3], p.extra[:3], p.wrong[:2])
    assert [(p.kind, p.pair, p.counts) for p in prices] == [
        (k, p, (0, 0, 0)) for k in KINDS for p in PAIRS
    ]

    # The live window is not empty: every series has rows after the backfill ended, and
    # ETHUSDT settled hourly after its change, found through the stream.
    with db.connect(env.dsn) as conn:
        live_funding = dict(
            conn.execute(
                "SELECT symbol, count(*) FROM funding_rates WHERE funding_time > "
                "to_timestamp(%s / 1000.0) AND funding_time < to_timestamp(%s / 1000.0) "
                "GROUP BY symbol",
                (backfilled_to, end),
            ).fetchall()
        )
        live_candles = {
            table: conn.execute(
                f"SELECT count(DISTINCT symbol) FROM {table} "  # noqa: S608 - fixed names
                "WHERE ts > to_timestamp(%s / 1000.0)",
                (backfilled_to,),
            ).fetchone()
            for table in ("mark_price_klines", "index_price_klines", "premium_index_klines")
        }
        # What the live REST paging confirmed empty: BNBUSDT's maintenance hour, slot by slot
        # as the watchdog found them, and nothing else (dropped streams, candles fetched right
        # after they close are not a confirmation).
        empty = {
            kind: conn.execute(
                f"SELECT symbol, interval, (extract(epoch FROM start_ts) * 1000)::bigint,"  # noqa: S608 - fixed names
                f" (extract(epoch FROM end_ts) * 1000)::bigint FROM {table} ORDER BY 3"
            ).fetchall()
            for kind, table in EMPTY_TABLES.items()
        }
        inside = [
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE symbol = 'BNBUSDT'"  # noqa: S608 - fixed names
                " AND ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)",
                MAINTENANCE,
            ).fetchone()
            for table in ("mark_price_klines", "index_price_klines", "premium_index_klines")
        ]
    assert live_funding.get("ETHUSDT", 0) >= 3
    assert live_candles == {t: (3,) for t in live_candles}
    print("confirmed empty:", empty)
    for kind, rows in empty.items():
        assert {(r[0], r[1]) for r in rows} == {("BNBUSDT", "30m")}, kind
        assert merged([(int(r[2]), int(r[3])) for r in rows]) == [MAINTENANCE], kind
    assert inside == [(0,)] * 3
    assert "recorded as empty range" in log


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent or overlapping ranges joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
