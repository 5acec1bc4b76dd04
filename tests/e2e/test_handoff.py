"""The backfill → live handoff end to end, on the simulator's controllable exchange clock:
simulator (clock frozen, moved only by the test) → backfiller and producer (subprocesses) →
real Kafka → the real sink → real PostgreSQL, compared row by row with the simulator's truth.

The clock stands still unless the test moves it, so "by when" is said in exchange time: with
the clock at a candle's close plus the arrival budget (the producer's watchdog grace and REST
retry plus the sink's latency: what ``qryptify status`` allows before calling a missing
candle a gap), that candle and every older one must be in the database. The backfiller runs
once (``exit_when_done``): nothing is left to a recheck, so a candle neither service owns would
never arrive and the wait for it fails. Waits are hang guards (QRYPTIFY_TEST_TIMEOUT_FACTOR),
never assertions on speed.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable

import pytest

from qryptify.handoff import LIVE_START, PLAN
from qryptify.health_report import arrival_budget_ms
from qryptify.kafka import make_producer
from qryptify.kline import Kline
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import MINUTE_MS, Pair
from sim.check import compare_db_with_truth, format_report
from sim.server import SimulatorThread
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import BackfillEnv, read_topic
from tests.support.processes import Service, wait_until

pytestmark = pytest.mark.e2e

PAIRS = ("BTCUSDT/1m", "ETHUSDT/1m")
#: 12:34:00, the open of the candle after 12:33; the clock starts one second before 12:33 closes.
EDGE = parse_time_ms("2024-07-10T12:34:00Z")
GRACE_MS, RETRY_MS, SINK_MS = 2000, 2000, 100
BUDGET_MS = arrival_budget_ms(GRACE_MS, RETRY_MS, SINK_MS)


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    return backfill_env(
        PAIRS,
        start_date="2024-07-09",
        start_ms=EDGE - 1000,
        ws={"watchdog_grace_ms": GRACE_MS, "watchdog_retry_ms": RETRY_MS},
        extra={"rest": {"time_sync_every_s": 0.5}, "sink": {"max_latency_ms": SINK_MS}},
    )


def exchange(env: BackfillEnv) -> SimulatorThread:
    """The in-process simulator: its clock and faults are the test's to move."""
    assert isinstance(env.sim, SimulatorThread)
    return env.sim


def marks(env: BackfillEnv, service: str) -> dict[Pair, int]:
    return SourceOffsetStore(env.kafka, make_producer(env.kafka)).load(service)


def stored_through(env: BackfillEnv, end_ms: int) -> bool:
    """Every candle of every pair opening before ``end_ms`` is in the database, as the truth."""
    pairs = [Pair(*p.split("/")) for p in PAIRS]
    return compare_db_with_truth(
        env.dsn, env.sim.url, pairs, parse_time_ms(env.start_date), end_ms
    ).ok


def require_stored_through(env: BackfillEnv, end_ms: int, what: str, *services: Service) -> None:
    """Hang guard: wait until the candles before ``end_ms`` are stored; fail with the diff."""
    try:
        wait_until(lambda: stored_through(env, end_ms), 120, what)
    except AssertionError:
        pairs = [Pair(*p.split("/")) for p in PAIRS]
        start = parse_time_ms(env.start_date)
        report = compare_db_with_truth(env.dsn, env.sim.url, pairs, start, end_ms)
        logs = "\n".join(f"--- {s.name}\n{s.text()[-3000:]}" for s in services)
        raise AssertionError(f"{what}:\n{format_report(report, details=5)}\n{logs}") from None


def start_producer(env: BackfillEnv) -> Service:
    producer = env.start("services.producer")
    wait_until(lambda: "streaming 2 pairs" in producer.text(), 60, "the producer to stream")
    return producer


def start_long_pass(env: BackfillEnv) -> tuple[Service, Service]:
    """Sink and a backfiller whose first pass is long (a month of 1m candles by REST, every
    response slowed), returned once the pass is planned (its mark is on the offsets topic)."""
    env.start_date = "2024-06-10"
    env.archive = False
    exchange(env).set_faults(slow_ms=300)
    sink = env.start("services.sink")
    backfiller = env.start("services.backfiller")
    btc = Pair("BTCUSDT", "1m")
    wait_until(lambda: btc in marks(env, PLAN), 120, "the backfiller to plan its pass")
    return sink, backfiller


def next_close_within_budget(env: BackfillEnv, producer: Service) -> None:
    """Move the clock past the next close by the arrival budget: that candle must be stored
    with the clock standing there (the stream skips a jump, so the watchdog fetches it)."""
    now = env.sim.now_ms()
    next_close = now - now % MINUTE_MS + MINUTE_MS  # the open candle closes just before this
    exchange(env).advance(next_close + BUDGET_MS - now)
    require_stored_through(
        env, next_close, "the next live candle stored within the arrival budget", producer
    )


def test_producer_started_after_a_close_takes_over_from_a_pass_planned_before_it(
    env: BackfillEnv,
) -> None:
    """The backfiller plans its pass at 12:33:59 (through 12:32) and ends; 12:33 closes; the
    producer starts at 12:34:01. Before the handoff 12:33 belonged to neither (the producer
    started from "now", 12:33) and waited for a recheck."""
    sink = env.start("services.sink")
    backfiller = env.start("services.backfiller")
    assert backfiller.wait(180) == 0, backfiller.text()[-3000:]
    btc = Pair("BTCUSDT", "1m")
    assert marks(env, PLAN)[btc] == EDGE - 2 * MINUTE_MS  # 12:32
    exchange(env).advance(2000)  # 12:34:01: 12:33 closed after the pass was planned
    producer = start_producer(env)
    require_stored_through(
        env, EDGE, "12:33 stored with the clock still at 12:34:01", producer, backfiller, sink
    )
    assert marks(env, LIVE_START)[btc] == EDGE - 2 * MINUTE_MS  # it owns 12:33 on
    next_close_within_budget(env, producer)
    assert producer.stop() == 0 and sink.stop() == 0


def test_backfiller_started_after_a_close_reaches_a_producer_started_before_it(
    env: BackfillEnv,
) -> None:
    """The reverse order: the producer starts at 12:33:59 (it owns 12:33 on), 12:33 closes, the
    backfiller plans at 12:34:01 (through 12:33): 12:33 is published by both, nothing lost."""
    sink = env.start("services.sink")
    producer = start_producer(env)
    btc = Pair("BTCUSDT", "1m")
    assert marks(env, LIVE_START)[btc] == EDGE - 2 * MINUTE_MS  # 12:32: 12:33 is its own
    exchange(env).advance(2000)
    backfiller = env.start("services.backfiller")
    assert backfiller.wait(180) == 0, backfiller.text()[-3000:]
    require_stored_through(
        env, EDGE, "12:33 stored with the clock still at 12:34:01", producer, backfiller, sink
    )
    next_close_within_budget(env, producer)
    assert producer.stop() == 0 and sink.stop() == 0


def test_candles_closing_during_a_long_first_pass_do_not_wait_for_its_end(
    env: BackfillEnv,
) -> None:
    """A long first pass (a month of 1m candles by REST, every response slowed), frozen in the
    middle (SIGSTOP) once it has planned; three candles close; the producer starts. They are
    stored while the pass is still unfinished, and after it ends every candle is in the topic
    exactly once: the producer took over from the plan, not from the backfiller's position."""
    sink, backfiller = start_long_pass(env)
    backfiller.proc.send_signal(signal.SIGSTOP)
    try:
        assert "caught up" not in backfiller.text(), "the pass ended before it could be paused"
        exchange(env).set_faults(slow_ms=0)
        exchange(env).advance(3 * MINUTE_MS)  # 12:36:59: 12:33, 12:34 and 12:35 closed
        producer = start_producer(env)
        pairs = [Pair(*p.split("/")) for p in PAIRS]

        def seam_stored() -> bool:
            report = compare_db_with_truth(
                env.dsn, env.sim.url, pairs, EDGE - MINUTE_MS, EDGE + 2 * MINUTE_MS + 1
            )
            return report.ok and all(p.truth_rows == 3 for p in report.pairs)

        wait_until(seam_stored, 120, "the candles closed during the pass, with the pass paused")
    finally:
        backfiller.proc.send_signal(signal.SIGCONT)
    assert backfiller.wait(300) == 0, backfiller.text()[-3000:]
    require_stored_through(
        env, EDGE + 3 * MINUTE_MS, "the whole history and the seam", producer, backfiller, sink
    )
    next_close_within_budget(env, producer)
    assert producer.stop() == 0 and sink.stop() == 0
    published = Counter(
        (e.symbol, e.open_time) for _, _, e in read_topic(env.kafka) if isinstance(e, Kline)
    )
    twice = {key: n for key, n in published.items() if n > 1}
    assert not twice, f"published more than once: {sorted(twice)[:10]}"
    assert len(published) == 2 * (EDGE + 3 * MINUTE_MS - parse_time_ms("2024-06-10")) // MINUTE_MS


def test_services_restarted_during_a_long_first_pass_leave_no_candle_behind(
    env: BackfillEnv,
) -> None:
    """The backfiller is killed (-9) in the middle of a long first pass; candles close; the
    producer starts, is killed (-9) and restarted; then the backfiller restarts and plans a
    new pass. Every closed candle is stored with the clock at its close plus the budget."""
    sink, first = start_long_pass(env)
    btc = Pair("BTCUSDT", "1m")
    first.kill9()
    assert "caught up" not in first.text(), "the pass ended before it could be killed"
    exchange(env).set_faults(slow_ms=0)
    exchange(env).advance(3 * MINUTE_MS)  # 12:36:59: 12:33, 12:34 and 12:35 closed
    producer = start_producer(env)
    assert marks(env, LIVE_START)[btc] == EDGE - 2 * MINUTE_MS  # took over from the plan
    producer.kill9()
    producer = start_producer(env)
    backfiller = env.start("services.backfiller")
    assert backfiller.wait(300) == 0, backfiller.text()[-3000:]
    require_stored_through(
        env, EDGE + 3 * MINUTE_MS, "every candle after both restarts", producer, backfiller, sink
    )
    next_close_within_budget(env, producer)
    assert producer.stop() == 0 and sink.stop() == 0
