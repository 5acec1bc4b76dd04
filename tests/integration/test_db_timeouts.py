"""Nothing waits forever on PostgreSQL: every connection carries a statement and a lock timeout
and TCP keepalives, and the sink's consumer thread keeps polling (and says "database not
answering") while a write hangs."""

from __future__ import annotations

import threading

import psycopg

from qryptify import db
from qryptify.config import Config
from qryptify.dlq import DlqWriter
from qryptify.kafka import make_consumer, make_producer
from qryptify.sink.batch import FlushPolicy
from qryptify.sink.loop import LoopSettings, SinkLoop
from tests.integration.sink_helpers import (
    LoopThread,
    caught_up,
    expected_rows,
    produce,
    series,
    table_rows,
)
from tests.support.processes import wait_until


def test_every_connection_has_timeouts_and_keepalives(db_dsn: str) -> None:
    with db.connect(db_dsn) as conn:
        statement = conn.execute("SHOW statement_timeout").fetchone()
        lock = conn.execute("SHOW lock_timeout").fetchone()
        params = conn.info.get_parameters()
    assert statement == ("2min",)
    assert lock == ("30s",)
    assert params.get("keepalives") == "1"
    assert params.get("keepalives_idle") == "30"


def test_the_dsns_own_options_are_kept(db_dsn: str) -> None:
    with db.connect(db_dsn + "?options=-c%20application_name%3Dmine", lock_timeout_ms=1500) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("mine",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("1500ms",)


def test_a_lock_held_elsewhere_ends_in_a_lock_timeout_not_a_hang(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE candlesticks IN ACCESS EXCLUSIVE MODE")
        with db.connect(db_dsn, lock_timeout_ms=300) as conn:
            try:
                conn.execute("SELECT count(*) FROM candlesticks")
            except psycopg.errors.LockNotAvailable as exc:
                assert db.record_sqlstate(exc) is None  # availability: pause and retry
            else:
                raise AssertionError("the locked read returned")


def test_a_hung_write_pauses_keeps_polling_and_reports_database_not_answering(
    app_config: Config,
) -> None:
    dsn = app_config.db.dsn.get_secret_value()
    klines = series([("BTCUSDT", "1m")], 12)
    loop = SinkLoop(
        make_consumer(app_config.kafka, app_config.sink.group_id),
        lambda: db.connect(dsn),  # default lock_timeout (30 s): the write hangs meanwhile
        LoopSettings(
            topic=app_config.kafka.topic,
            policy=FlushPolicy(100, 100),
            retry_initial_s=0.2,
            retry_max_s=1.0,
            write_stall_s=0.5,
        ),
        threading.Event(),
        dlq=DlqWriter(make_producer(app_config.kafka), app_config.kafka.dlq_topic),
    )
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE candlesticks IN ACCESS EXCLUSIVE MODE")
        runner = LoopThread(loop).start()
        produce(app_config.kafka, klines)
        wait_until(
            lambda: "database not answering" in loop.health.get()[1],
            30,
            "the stall to be reported",
        )
        assert not loop.health.get()[0]
        assert loop._paused
        holder.rollback()  # release the lock: the write completes
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "the batch to commit")
    wait_until(lambda: loop.health.get() == (True, "consuming"), 10, "health to recover")
    assert runner.stop() == 0
    assert table_rows(dsn) == expected_rows(klines)
