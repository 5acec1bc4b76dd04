"""The sink loop against the real broker and the real database."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY

from qryptify import db
from qryptify.config import Config
from qryptify.kline import EmptyRange
from tests.conftest import T0
from tests.integration.sink_helpers import (
    LoopThread,
    caught_up,
    committed_nonempty,
    expected_rows,
    make_loop,
    nonempty_watermarks,
    produce,
    series,
    sync_state,
    table_rows,
)
from tests.support.processes import wait_until

PAIRS = [("BTCUSDT", "1m"), ("ETHUSDT", "1m"), ("SOLUSDT", "5m"), ("XRPUSDT", "1h")]


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_sink_writes_every_candle_once_and_commits_after_the_rows(app_config: Config) -> None:
    written_before = _metric("qryptify_sink_rows_written_total")
    batches_before = _metric("qryptify_sink_batch_records_count")
    first = series(PAIRS, 300)
    produce(app_config.kafka, first)
    loop = make_loop(app_config, threading.Event(), batch_size=250)
    runner = LoopThread(loop).start()
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "sink to catch up")
    dsn = app_config.db.dsn.get_secret_value()
    assert table_rows(dsn) == expected_rows(first)
    # Corrections: a later differing value for a key replaces the earlier one.
    fixes = series(PAIRS, 10, tag=".75")
    produce(app_config.kafka, fixes)
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "corrections")
    topic = app_config.kafka.topic
    lags = [REGISTRY.get_sample_value("qryptify_sink_consumer_lag", {"topic": topic,
             "partition": str(p)}) for p in nonempty_watermarks(app_config.kafka)]  # fmt: skip
    assert lags and all(lag == 0.0 for lag in lags), lags  # set per partition, caught up
    assert runner.stop() == 0
    assert table_rows(dsn) == expected_rows(first + fixes)
    newest = {
        (s, i): max(k.open_time for k in first if (k.symbol, k.interval) == (s, i))
        for s, i in PAIRS
    }
    assert sync_state(dsn) == newest
    marks = nonempty_watermarks(app_config.kafka)
    assert committed_nonempty(app_config.kafka, app_config.sink.group_id) == marks
    assert loop.totals["written"] == 1200 + 40
    assert loop.totals["unchanged"] == 0
    # The same figures on /metrics.
    assert _metric("qryptify_sink_rows_written_total") - written_before == 1240
    assert _metric("qryptify_sink_batch_records_count") - batches_before == loop.batches
    assert _metric("qryptify_sink_commit_seconds_count", {"stage": "db"}) >= loop.batches
    assert _metric("qryptify_sink_close_to_commit_seconds_count") > 0


def test_duplicates_in_one_batch_and_empty_ranges(app_config: Config) -> None:
    original = series(PAIRS[:1], 5)
    fixed = series(PAIRS[:1], 5, tag=".5")
    ranges = [
        EmptyRange("BTCUSDT", "1m", T0 + 10 * 60_000, T0 + 20 * 60_000, T0 + 99),
        EmptyRange("BTCUSDT", "1m", T0 + 10 * 60_000, T0 + 30 * 60_000, T0 + 99),
    ]
    produce(app_config.kafka, [*original, *ranges, *fixed])
    runner = LoopThread(make_loop(app_config, threading.Event(), batch_size=1000)).start()
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "sink to catch up")
    assert runner.stop() == 0
    dsn = app_config.db.dsn.get_secret_value()
    assert table_rows(dsn) == expected_rows(original + fixed)
    with db.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT symbol, (extract(epoch FROM end_ts) * 1000)::bigint FROM empty_ranges"
        ).fetchall()
    assert stored == [("BTCUSDT", T0 + 30 * 60_000)]


def test_revoked_partitions_are_flushed_and_committed_before_handover(app_config: Config) -> None:
    many = [(f"S{i:02d}USDT", "1m") for i in range(12)]
    first = series(many, 100)
    produce(app_config.kafka, first)
    dsn = app_config.db.dsn.get_secret_value()
    # A huge batch and deadline, no idle flush: nothing is written unless the revocation forces it.
    a = make_loop(
        app_config, threading.Event(), batch_size=100_000, max_latency_ms=600_000, when_idle=False
    )
    runner_a = LoopThread(a).start()
    wait_until(lambda: len(a.pending) == len(first), 60, "A to hold every record")
    assert table_rows(dsn) == []
    b = make_loop(app_config, threading.Event(), batch_size=50, max_latency_ms=50)
    runner_b = LoopThread(b).start()
    wait_until(lambda: bool(b.assigned), 60, "B to get partitions")
    # A flushed and committed everything it held when it gave partitions up.
    assert a.batches >= 1
    wait_until(lambda: len(table_rows(dsn)) == len(first), 30, "A's flush on revoke")
    assert table_rows(dsn) == expected_rows(first)
    assert committed_nonempty(app_config.kafka, app_config.sink.group_id) == nonempty_watermarks(
        app_config.kafka
    )
    second = series(many, 20, start=first[-1].open_time + 60_000)
    produce(app_config.kafka, second)
    # B starts at A's committed offsets: it reads none of `first` again, only its new share.
    wait_until(lambda: b.totals["records"] > 0 and not b.pending, 30, "B to write its share")
    assert b.totals["unchanged"] == 0
    assert runner_b.stop() == 0
    assert runner_a.stop() == 0  # A writes what it still holds on stop
    assert table_rows(dsn) == expected_rows(first + second)
    marks = nonempty_watermarks(app_config.kafka)
    assert committed_nonempty(app_config.kafka, app_config.sink.group_id) == marks


LIMIT_TRIGGER = """
CREATE FUNCTION qryptify_test_limit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n int := coalesce(nullif(current_setting('qryptify.test_rows', true), ''), '0')::int + 1;
BEGIN
    PERFORM set_config('qryptify.test_rows', n::text, true);
    IF n > 250 THEN
        RAISE EXCEPTION 'tuple decompression limit exceeded by operation' USING ERRCODE = '53400';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER qryptify_test_limit BEFORE INSERT ON candlesticks
    FOR EACH ROW EXECUTE FUNCTION qryptify_test_limit();
"""


def test_a_per_transaction_limit_splits_the_batch_instead_of_blocking(app_config: Config) -> None:
    """TimescaleDB refuses DML that decompresses too many tuples in one transaction (SQLSTATE
    53400, see test_sink_timescale.py); a trigger raises the same error past 250 rows here."""
    dsn = app_config.db.dsn.get_secret_value()
    with db.connect(dsn) as conn:
        conn.execute(LIMIT_TRIGGER)
        conn.commit()
    events = series(PAIRS[:2], 500)
    produce(app_config.kafka, events)
    loop = make_loop(app_config, threading.Event(), batch_size=1000, max_latency_ms=2000)
    runner = LoopThread(loop).start()
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "sink to catch up")
    assert runner.stop() == 0
    assert table_rows(dsn) == expected_rows(events)
    assert loop.totals["written"] == 1000
    assert not loop._paused
