"""Backfiller end to end: simulator → backfiller (subprocess) → real Kafka → the real sink
(subprocess) → real PostgreSQL, compared row by row with the simulator's truth; then a kill -9
in the middle of a run and a restart that neither skips nor re-publishes acknowledged work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from qryptify.kafka import make_producer
from qryptify.kline import EmptyRange, Kline
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair, align_open, count_opens
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import SIM_NOW, BackfillEnv, read_topic, summary_values
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

#: 8 pairs, mixed intervals; QUIETUSDT has zero-trade candles, DELISTUSDT settled 2024-06-01.
PAIRS = (
    "BTCUSDT/1m",
    "QUIETUSDT/3m",
    "ETHUSDT/5m",
    "BNBUSDT/15m",
    "XRPUSDT/1h",
    "DELISTUSDT/1h",
    "LTCUSDT/1d",
    "LINKUSDT/1w",
)
START = "2024-04-01"


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    return backfill_env(PAIRS, start_date=START)


def expected_candles() -> int:
    start = parse_time_ms(START)
    total = 0
    for text in PAIRS:
        pair = Pair(*text.split("/"))
        end = parse_time_ms("2024-06-01") if pair.symbol == "DELISTUSDT" else SIM_NOW
        total += count_opens(pair.interval, start, align_open(pair.interval, end))
    return total


def test_backfill_kill9_and_resume_matches_the_exchange(env: BackfillEnv) -> None:
    sink = env.start("services.sink")
    first = env.start("services.backfiller")
    expected = expected_candles()
    # kill -9 in the middle of the run
    wait_until(
        lambda: env.topic_size() >= 0.35 * expected or first.proc.poll() is not None,
        180,
        "the first backfill run to publish a third of the candles",
    )
    assert first.proc.poll() is None, f"finished before the kill:\n{first.text()[-2000:]}"
    first.kill9()

    before = read_topic(env.kafka)
    published_before = {
        (e.symbol, e.interval, e.open_time) for _, _, e in before if isinstance(e, Kline)
    }
    ends_before: dict[int, int] = {}
    for partition, offset, _ in before:
        ends_before[partition] = max(ends_before.get(partition, -1), offset)
    committed = SourceOffsetStore(env.kafka, make_producer(env.kafka)).load("backfiller")
    assert committed, "no source offset was committed before the kill"

    second = env.start("services.backfiller")
    assert second.wait(300) == 0, second.text()[-3000:]
    wait_until(env.sink_caught_up, 120, "the sink to write everything")

    reports = env.check()
    assert [(str(r.pair), len(r.missing), len(r.extra), len(r.wrong)) for r in reports] == [
        (p, 0, 0, 0) for p in PAIRS
    ]
    assert sum(r.truth_rows for r in reports) == expected

    # What the restart did again: only work after the committed offsets, nothing older.
    after = read_topic(env.kafka)
    rerun = [e for p, o, e in after if o > ends_before.get(p, -1)]
    republished = [
        e for e in rerun
        if isinstance(e, Kline) and (e.symbol, e.interval, e.open_time) in published_before
    ]  # fmt: skip
    # A pair with a committed offset resumes after it. A pair the kill caught before its first
    # offset commit starts again from the beginning: at-least-once, the intended behaviour (the
    # sink's upsert makes the repeat a no-op), so its re-published candles are allowed.
    for e in republished:
        position = committed.get(Pair(e.symbol, e.interval))
        assert position is None or e.open_time > position, (
            f"{e.symbol}/{e.interval} {e.open_time} re-published although the committed "
            f"offset was {position}"
        )
    unresumed = {(e.symbol, e.interval) for e in republished} - {
        (p.symbol, p.interval) for p in committed
    }
    values = summary_values(second.text())
    by_source = Counter(e.source for e in republished)
    rest_pages = sum(
        -(-n // 499)
        for n in Counter((e.symbol, e.interval) for e in republished if e.source == "rest").values()
    )
    print(
        f"kill -9 after {len(published_before)} of {expected} candles; restart: "
        f"requests={values['requests']} klines_requests={values['klines_requests']} "
        f"archive_downloaded={values['archive_downloaded']} "
        f"archive_cached={values['archive_cached']}; re-published candles={len(republished)} "
        f"{dict(by_source)} (≈{rest_pages} REST pages fetched again); pairs with no offset "
        f"at the kill, re-published from their start: {sorted(unresumed)}"
    )
    assert int(values["requests"]) < 100  # the restart fetched little again
    # every source was used: archive files for old months, REST for the tail
    sources = {e.source for _, _, e in after if isinstance(e, Kline)}
    assert sources == {"archive", "rest"}
    assert not [e for _, _, e in after if isinstance(e, EmptyRange)]  # nothing fabricated
    assert sink.proc.poll() is None
