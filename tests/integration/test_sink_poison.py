"""Invariant 6 against the real database: a schema-valid record that PostgreSQL would refuse
never stalls the sink. Impossible empty ranges are dead-lettered before the write; a record the
database still refuses on its own (a data error, SQLSTATE classes 22/23) is bisected out of the
batch, dead-lettered with its SQLSTATE, and the rest of the batch is written."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qryptify import db
from qryptify.avro import KlineCodec
from qryptify.config import Config
from qryptify.kafka import headers_dict
from qryptify.kline import EmptyRange, Event, Kline
from qryptify.pairs import INTERVALS, close_time
from tests.conftest import T0, make_kline
from tests.integration.sink_helpers import (
    LoopThread,
    caught_up,
    expected_rows,
    make_loop,
    produce,
    produce_raw,
    read_topic,
    series,
    table_rows,
    wait_until,
)


def test_a_far_future_empty_range_is_dead_lettered_and_the_partition_keeps_flowing(
    app_config: Config,
) -> None:
    before = series([("BTCUSDT", "1m")], 10)
    after = series([("BTCUSDT", "1m")], 10, start=T0 + 10 * 60_000)
    poison = EmptyRange("BTCUSDT", "1m", 2**62, 2**62 + 60_000, 2**62 + 60_000)
    produce(app_config.kafka, [*before, poison, *after])

    runner = LoopThread(make_loop(app_config, threading.Event(), batch_size=7)).start()
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "sink to pass it")
    assert runner.stop() == 0

    assert table_rows(app_config.db.dsn.get_secret_value()) == expected_rows(before + after)
    (dead,) = read_topic(app_config.kafka, app_config.kafka.dlq_topic, 1)
    headers = headers_dict(dead)
    assert headers["qryptify.error_class"] == b"InvalidEmptyRange"
    assert int(headers["qryptify.offset"]) == 10
    assert b"start_time" in headers["qryptify.reason"]


def test_a_record_the_database_refuses_is_bisected_out_with_its_sqlstate(
    app_config: Config,
) -> None:
    dsn = app_config.db.dsn.get_secret_value()
    # A rule only the database knows: the sink's checks pass the record, PostgreSQL refuses it
    # with 23514 (check_violation), a data error of that one record.
    with db.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "ALTER TABLE candlesticks ADD CONSTRAINT no_777 CHECK (number_of_trades <> 777)"
        )
    klines = series([("BTCUSDT", "1m"), ("ETHUSDT", "1m")], 15)
    refused = replace(klines[7], trades=777)
    klines[7] = refused
    produce(app_config.kafka, klines)

    runner = LoopThread(make_loop(app_config, threading.Event(), batch_size=30)).start()
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "sink to pass it")
    assert runner.stop() == 0

    assert table_rows(dsn) == expected_rows([k for k in klines if k is not refused])
    (dead,) = read_topic(app_config.kafka, app_config.kafka.dlq_topic, 1)
    headers = headers_dict(dead)
    assert headers["qryptify.sqlstate"] == b"23514"
    assert headers["qryptify.error_class"] == b"DatabaseRejected"
    assert dead.value() == KlineCodec().encode(refused)
    assert dead.key() == b"BTCUSDT|1m"
    assert int(headers["qryptify.offset"]) == 7


# -- schema-valid but absurd records (hypothesis) ---------------------------------------------

LONG = st.integers(-(2**63), 2**63 - 1)
TIMES = st.one_of(
    LONG,
    st.sampled_from([-(2**63), 2**63 - 1, 0, -1, 2**62, 1_262_304_000_000 - 1, 7_258_118_400_000]),
    st.integers(T0, T0 + 10**9),
)
DECIMALS = st.one_of(
    st.sampled_from(
        ["NaN", "Infinity", "-0", "1e400", "1e-400", "9" * 400, "0." + "0" * 350 + "1", "1_000",
         " 1", "1\t2", "1\n", "", "0", "-1", "1e308", "1.7976931348623157e308"]
    ),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.text(max_size=8),
)  # fmt: skip
SYMBOLS = st.one_of(
    st.sampled_from(["BTCUSDT", "ETHUSDT", "btcusdt", "BTC\tUSDT", "B" * 21, "", "X\\N"]),
    st.text(max_size=6),
)


@st.composite
def absurd_klines(draw: Any) -> Kline:
    base = make_kline(
        draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])),
        draw(st.sampled_from(INTERVALS)),
        draw(st.integers(T0 // 60_000, (T0 + 10**10) // 60_000)) * 60_000,
    )
    fields: dict[str, Any] = {}
    for name in draw(st.sets(st.sampled_from(list(Kline.__slots__)), max_size=4)):
        if name in ("open_time", "close_time", "ingested_at", "trades"):
            fields[name] = draw(TIMES)
        elif name == "symbol":
            fields[name] = draw(SYMBOLS)
        elif name == "interval":
            fields[name] = draw(st.one_of(st.sampled_from(INTERVALS), st.text(max_size=3)))
        elif name == "source":
            continue
        else:
            fields[name] = draw(DECIMALS)
    k = replace(base, **fields)
    if draw(st.booleans()) and "open_time" in fields and "close_time" not in fields:
        # Keep close consistent, so the record reaches the later checks (an absurd interval
        # or time has no close: it stays absurd).
        with contextlib.suppress(Exception):
            k = replace(k, close_time=close_time(k.interval, k.open_time))
    return k


@st.composite
def absurd_ranges(draw: Any) -> EmptyRange:
    start = draw(TIMES)
    end = draw(st.one_of(TIMES, st.integers(1, 10**13).map(lambda d: min(start + d, 2**63 - 1))))
    if end <= start:
        end = start + 1 if start < 2**63 - 1 else start
        start = end - 1
    return EmptyRange(
        draw(SYMBOLS), draw(st.sampled_from([*INTERVALS, "7m"])), start, end, draw(TIMES)
    )


#: (key, event): usually the event's own key, sometimes another pair's (a mismatch).
RECORDS = st.lists(
    st.tuples(st.one_of(absurd_klines(), absurd_ranges()), st.booleans()),
    min_size=1,
    max_size=25,
)


MARKERS = itertools.count()


@pytest.fixture
def running_sink(app_config: Config) -> Iterator[LoopThread]:
    runner = LoopThread(make_loop(app_config, threading.Event(), batch_size=10)).start()
    yield runner
    assert runner.stop() == 0


def _encodable(codec: KlineCodec, event: Event) -> bytes | None:
    try:
        return codec.encode(event)
    except Exception:  # noqa: BLE001 - not schema-valid (e.g. a lone surrogate): not this test's
        return None


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=RECORDS)
def test_absurd_records_are_each_stored_or_dead_lettered_and_the_partition_flows(
    app_config: Config, running_sink: LoopThread, records: list[tuple[Event, bool]]
) -> None:
    codec = KlineCodec()
    dsn = app_config.db.dsn.get_secret_value()
    kafka = app_config.kafka
    items: list[tuple[bytes, bytes, Event]] = []
    for event, mismatch in records:
        value = _encodable(codec, event)
        if value is None:
            continue
        key = b"ETHUSDT|1m" if mismatch and event.key != "ETHUSDT|1m" else event.key.encode()
        items.append((key, value, event))
    # A marker per example: once it is stored, every record before it in its partition was
    # handled (the partition kept flowing).
    marker = make_kline("MARKUSDT", "1m", T0 + next(MARKERS) * 60_000)
    items.append((marker.key.encode(), codec.encode(marker), marker))
    dlq_before = running_sink.loop.totals["dlq"]
    produce_raw(kafka, [(k, v) for k, v, _ in items])
    wait_until(caught_up(kafka, app_config.sink.group_id), 60, "the sink to pass them")

    assert running_sink.error is None and running_sink.thread.is_alive()
    with db.connect(dsn) as conn:
        stored = {
            (r[0], r[1], int(r[2]))
            for r in conn.execute(
                "SELECT symbol, interval, (extract(epoch FROM ts) * 1000)::bigint FROM candlesticks"
            )
        }
        ranges = {
            (r[0], r[1], int(r[2]))
            for r in conn.execute(
                "SELECT symbol, interval, (extract(epoch FROM start_ts) * 1000)::bigint"
                " FROM empty_ranges"
            )
        }
    assert (marker.symbol, marker.interval, marker.open_time) in stored
    total_dead = running_sink.loop.totals["dlq"]
    dead_values = {m.value() for m in read_topic(kafka, kafka.dlq_topic, total_dead, 10)}
    assert total_dead - dlq_before <= len(items)
    for key, value, event in items:
        if isinstance(event, Kline):
            kept = (event.symbol, event.interval, event.open_time) in stored
        else:
            kept = (event.symbol, event.interval, event.start_time) in ranges
        assert kept or value in dead_values, f"neither stored nor dead-lettered: {key!r} {event}"


def test_an_oversized_undecodable_record_is_dead_lettered_truncated_without_a_crash(
    app_config: Config,
) -> None:
    import hashlib

    from qryptify.kafka import make_producer

    kafka = app_config.kafka
    before = series([("BTCUSDT", "1m")], 5)
    after = series([("BTCUSDT", "1m")], 5, start=T0 + 5 * 60_000)
    produce(kafka, before)
    huge = b"\x00not avro" + b"\xee" * 1_030_000  # under the broker's 1 MiB, over the DLQ's
    producer = make_producer(kafka, **{"message.max.bytes": 2_000_000})
    producer.produce(kafka.topic, key=b"BTCUSDT|1m", value=huge)
    assert producer.flush(30) == 0
    produce(kafka, after)

    runner = LoopThread(make_loop(app_config, threading.Event(), batch_size=4)).start()
    wait_until(caught_up(kafka, app_config.sink.group_id), 60, "sink to pass it")
    assert runner.stop() == 0

    assert table_rows(app_config.db.dsn.get_secret_value()) == expected_rows(before + after)
    (dead,) = read_topic(kafka, kafka.dlq_topic, 1)
    headers = headers_dict(dead)
    assert huge.startswith(dead.value()) and len(dead.value()) < len(huge)
    assert int(headers["qryptify.original_size"]) == len(huge)
    assert headers["qryptify.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert int(headers["qryptify.offset"]) == 5
    assert headers["qryptify.topic"] == kafka.topic.encode()
