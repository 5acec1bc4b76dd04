"""Poison records: empty ranges are validated like klines, and a data error the database raises
for one record is isolated (bisect) instead of stalling the batch.

These are the verdicts the native core must reproduce: keep them in one place."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import pytest

from qryptify import db
from qryptify.avro import KlineCodec
from qryptify.errors import InvalidEmptyRange
from qryptify.kline import EmptyRange
from qryptify.sink.batch import (
    MAX_EMPTY_SPAN_MS,
    MAX_OPEN_MS,
    MIN_OPEN_MS,
    Record,
    Rejected,
    check_empty_range,
    split_batch,
    write_bisecting,
)
from qryptify.sink.rows import CandleBatch
from tests.conftest import T0, make_kline

CODEC = KlineCodec()
KEY = b"BTCUSDT|1m"


def rng(start: int = T0, end: int = T0 + 60_000, confirmed: int = T0 + 120_000) -> EmptyRange:
    return EmptyRange("BTCUSDT", "1m", start, end, confirmed)


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (rng(2**62, 2**62 + 60_000, 2**62 + 60_000), "start_time"),
        (rng(MIN_OPEN_MS - 60_000), "start_time"),
        (rng(T0, MAX_OPEN_MS + 1), "end_time"),
        (rng(T0, T0 + MAX_EMPTY_SPAN_MS + 1, T0 + MAX_EMPTY_SPAN_MS + 1), "spans"),
        (rng(confirmed=-1), "confirmed_at"),
        (rng(confirmed=2**62), "confirmed_at"),
        (EmptyRange("btc usdt", "1m", T0, T0 + 60_000, T0), "symbol"),
        (EmptyRange("BTCUSDT", "7m", T0, T0 + 60_000, T0), "interval"),
    ],
)
def test_impossible_empty_ranges_are_refused_naming_the_field(event: EmptyRange, why: str) -> None:
    with pytest.raises(InvalidEmptyRange, match=why):
        check_empty_range(event)


@pytest.mark.parametrize(
    "event",
    [
        rng(),
        rng(MIN_OPEN_MS, MIN_OPEN_MS + 1, MIN_OPEN_MS),
        rng(MAX_OPEN_MS - 1, MAX_OPEN_MS, MAX_OPEN_MS - 1),
        rng(T0, T0 + MAX_EMPTY_SPAN_MS, T0 + MAX_EMPTY_SPAN_MS),
    ],
)
def test_empty_ranges_at_the_bounds_are_accepted(event: EmptyRange) -> None:
    assert check_empty_range(event) is event


def test_a_far_future_empty_range_goes_to_the_dlq_not_the_database() -> None:
    poison = rng(2**62, 2**62 + 60_000, 2**62 + 60_000)
    records = [
        Record("klines", 0, 0, KEY, CODEC.encode(make_kline())),
        Record("klines", 0, 1, KEY, CODEC.encode(poison)),
        Record("klines", 0, 2, KEY, CODEC.encode(rng())),
    ]
    split = split_batch(records, CODEC)
    assert split.empty_ranges == [rng()]
    assert [(e.offset, e.error_class) for e in split.dlq] == [(1, "InvalidEmptyRange")]
    assert split.offsets == {("klines", 0): 3}


def test_an_empty_range_under_another_pairs_key_goes_to_the_dlq() -> None:
    records = [Record("klines", 0, 0, b"ETHUSDT|1m", CODEC.encode(rng()))]
    split = split_batch(records, CODEC)
    assert split.empty_ranges == []
    assert [e.error_class for e in split.dlq] == ["KeyMismatch"]


@pytest.mark.parametrize(
    ("error", "record"),
    [
        (psycopg.errors.DatetimeFieldOverflow, True),  # 22008
        (psycopg.errors.NumericValueOutOfRange, True),  # 22003
        (psycopg.errors.CheckViolation, True),  # 23514
        (psycopg.errors.NotNullViolation, True),  # 23502
        (psycopg.errors.UniqueViolation, False),  # 23505: the expected PK conflict
        (psycopg.errors.AdminShutdown, False),  # 57P01
        (psycopg.errors.QueryCanceled, False),  # 57014 (statement_timeout)
        (psycopg.errors.LockNotAvailable, False),  # 55P03 (lock_timeout)
        (psycopg.errors.SerializationFailure, False),  # 40001
        (psycopg.errors.DeadlockDetected, False),  # 40P01
        (psycopg.errors.TooManyConnections, False),  # 53300
        (psycopg.OperationalError, False),  # connection lost: no SQLSTATE
    ],
)
def test_database_errors_are_classified_by_sqlstate(
    error: type[psycopg.Error], record: bool
) -> None:
    exc = error("boom")
    assert (db.record_sqlstate(exc) is not None) is record
    if record:
        assert db.record_sqlstate(exc) == error.sqlstate


class DataError(Exception):
    sqlstate = "22003"


def test_bisecting_writes_everything_but_the_one_record_the_database_refuses() -> None:
    klines = [make_kline(open_time=T0 + i * 60_000) for i in range(9)]
    poison_time = T0 + 5 * 60_000
    batch = CandleBatch.from_klines(klines)
    ranges = [rng(T0 + 100 * 60_000, T0 + 101 * 60_000, T0 + 200 * 60_000)]
    stored: list[int] = []
    stored_ranges: list[EmptyRange] = []

    def write(part: CandleBatch, rs: Sequence[EmptyRange]) -> int:
        if any(row[2] == poison_time for row in part.rows):
            raise DataError("numeric field overflow")
        stored.extend(row[2] for row in part.rows)
        stored_ranges.extend(rs)
        return len(part)

    results, rejected = write_bisecting(
        write, batch, ranges, lambda e: False, lambda e: getattr(e, "sqlstate", None)
    )
    assert sorted(stored) == [k.open_time for k in klines if k.open_time != poison_time]
    assert stored_ranges == ranges
    assert sum(results) == 8
    assert [(r.row[2] if r.row else None, r.sqlstate) for r in rejected] == [(poison_time, "22003")]
    assert "numeric field overflow" in rejected[0].reason


def test_a_refused_empty_range_is_rejected_alone() -> None:
    good, bad = rng(), rng(T0 + 60_000 * 10, T0 + 60_000 * 11, T0 + 60_000 * 12)

    def write(part: CandleBatch, rs: Sequence[EmptyRange]) -> int:
        if bad in rs:
            raise DataError("timestamp out of range")
        return len(part) + len(rs)

    batch = CandleBatch.from_klines([make_kline()])
    results, rejected = write_bisecting(
        write, batch, [good, bad], lambda e: False, lambda e: getattr(e, "sqlstate", None)
    )
    assert rejected == [Rejected(None, bad, "22003", "timestamp out of range")]
    assert sum(results) == 2  # the candle and the good range


def test_a_rejected_row_is_dead_lettered_with_its_original_record_and_sqlstate() -> None:
    k = make_kline()
    value = CODEC.encode(k)
    split = split_batch([Record("klines", 2, 41, KEY, value)], CODEC)
    entry = split.rejected_entry(Rejected(split.batch.rows[0], None, "23514", "check violation"))
    assert (entry.topic, entry.partition, entry.offset) == ("klines", 2, 41)
    assert (entry.key, entry.value) == (KEY, value)
    assert ("qryptify.sqlstate", b"23514") in entry.headers()
    assert entry.error_class == "DatabaseRejected"


def test_an_oversized_dlq_entry_goes_truncated_with_its_size_origin_and_digest() -> None:
    import hashlib

    from qryptify.sink.batch import DLQ_KEEP_VALUE_BYTES, DLQ_MAX_RECORD_BYTES, DlqEntry

    value = b"\xff" * 1_000_000
    entry = DlqEntry("klines", 4, 99, b"K" * 5000, value, "undecodable record", "UndecodableRecord")
    key, short, headers = entry.bounded()
    assert short == value[:DLQ_KEEP_VALUE_BYTES]
    assert key is not None and len(key) + len(short) <= DLQ_MAX_RECORD_BYTES
    found = dict(headers)
    assert found["qryptify.original_size"] == b"1000000"
    assert found["qryptify.original_key_size"] == b"5000"
    assert found["qryptify.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert (found["qryptify.topic"], found["qryptify.partition"], found["qryptify.offset"]) == (
        b"klines",
        b"4",
        b"99",
    )
    small = DlqEntry("klines", 0, 1, b"k", b"v", "r", "UndecodableRecord")
    assert small.bounded() == (b"k", b"v", small.headers())
