"""The sink's pure batch logic: flush policy, split into rows / DLQ / offsets, de-duplication,
and the transaction splitting that keeps TimescaleDB's decompression limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify.avro import SOE_MAGIC, KlineCodec
from qryptify.errors import InvalidKline
from qryptify.kline import EmptyRange, Kline
from qryptify.retry import backoff
from qryptify.sinkbatch import (
    FlushPolicy,
    PendingBatch,
    Record,
    check_kline,
    offsets_to_commit,
    split_batch,
    write_within_limit,
)
from tests.conftest import T0, make_kline

CODEC = KlineCodec()
TOPIC = "klines"


def rec(offset: int, value: bytes | None, partition: int = 0, key: bytes | None = None) -> Record:
    return Record(TOPIC, partition, offset, key, value)


def krec(offset: int, k: Kline | EmptyRange, partition: int = 0) -> Record:
    return rec(offset, CODEC.encode(k), partition, k.key.encode())


def test_flush_policy_by_size_and_by_age() -> None:
    policy = FlushPolicy(batch_size=3, max_latency_ms=200)
    assert not policy.should_flush(0, None, 10_000)
    assert not policy.should_flush(2, 1_000, 1_199)
    assert policy.should_flush(2, 1_000, 1_200)  # the oldest record waited max_latency_ms
    assert policy.should_flush(3, 1_000, 1_000)  # full
    assert policy.wait_ms(0, None, 5) == 200
    assert policy.wait_ms(1, 1_000, 1_150) == 50
    assert policy.wait_ms(1, 1_000, 9_999) == 0
    assert policy.room(1) == 2 and policy.room(7) == 1
    with pytest.raises(ValueError):
        FlushPolicy(0, 10)


def test_pending_batch_tracks_the_oldest_record_and_drops_partitions() -> None:
    batch = PendingBatch()
    batch.add([], 5)
    assert batch.first_at_ms is None
    batch.add([rec(0, b"a", 0), rec(0, b"b", 1)], 100)
    batch.add([rec(1, b"c", 0)], 150)
    assert len(batch) == 3
    assert batch.first_at_ms == 100
    assert batch.drop_partitions([(TOPIC, 0)]) == 2
    assert [r.value() for r in batch.records] == [b"b"]
    assert batch.drop_partitions([(TOPIC, 1)]) == 1
    assert batch.first_at_ms is None


def test_split_dedupes_by_key_with_the_later_offset_winning() -> None:
    old = make_kline(close="1.5", open="1", high="2", low="1")
    new = make_kline(close="1.75", open="1", high="2", low="1")
    other = make_kline("ETHUSDT", open_time=T0)
    split = split_batch([krec(5, old), krec(9, other, 1), krec(7, new)], CODEC.decode)
    assert sorted(split.klines, key=lambda k: k.symbol) == [new, other]
    assert split.offsets == {(TOPIC, 0): 8, (TOPIC, 1): 10}
    assert split.records == 3 and split.dlq == []


def test_split_sends_bad_records_to_the_dlq_with_their_origin() -> None:
    good = make_kline()
    bad_ohlc = make_kline(open_time=T0 + 60_000, high="1", low="0.5")
    unknown = SOE_MAGIC + bytes(8) + CODEC.encode(good)[10:]
    records = [
        rec(0, b"\x01garbage", key=b"BTCUSDT|1m"),
        rec(1, unknown),
        krec(2, bad_ohlc),
        rec(3, CODEC.encode(good), key=b"ETHUSDT|1m"),  # key of another pair
        rec(4, None),
        krec(5, good),
    ]
    split = split_batch(records, CODEC.decode)
    assert split.klines == [good]
    assert [(e.offset, e.error_class) for e in split.dlq] == [
        (0, "UndecodableRecord"),
        (1, "UndecodableRecord"),
        (2, "InvalidKline"),
        (3, "KeyMismatch"),
        (4, "UndecodableRecord"),
    ]
    assert "unknown framing" in split.dlq[0].reason
    assert "fingerprint" in split.dlq[1].reason
    assert "OHLC" in split.dlq[2].reason
    # The DLQ records are covered by the commit: the partition keeps flowing.
    assert split.offsets == {(TOPIC, 0): 6}
    headers = dict(split.dlq[0].headers())
    assert headers == {
        "qryptify.reason": split.dlq[0].reason.encode(),
        "qryptify.topic": b"klines",
        "qryptify.partition": b"0",
        "qryptify.offset": b"0",
        "qryptify.error_class": b"UndecodableRecord",
    }
    assert split.dlq[0].key == b"BTCUSDT|1m" and split.dlq[0].value == b"\x01garbage"


def test_empty_ranges_keep_the_widest_per_start() -> None:
    a = EmptyRange("BTCUSDT", "1m", T0, T0 + 600_000, T0)
    b = EmptyRange("BTCUSDT", "1m", T0, T0 + 900_000, T0 + 5)
    c = EmptyRange("BTCUSDT", "1m", T0 + 10**7, T0 + 2 * 10**7, T0)
    split = split_batch([krec(0, a), krec(1, b), krec(2, a), krec(3, c)], CODEC.decode)
    assert sorted(split.empty_ranges, key=lambda r: r.start_time) == [b, c]


def test_newest_candle_per_pair_for_latency_metrics() -> None:
    ks = [make_kline(open_time=T0 + i * 60_000) for i in range(3)]
    split = split_batch([krec(i, k) for i, k in enumerate(ks)], CODEC.decode)
    assert split.newest == [ks[-1]]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"open_time": 5, "close_time": 60_004}, "outside"),
        ({"high": "1e400", "close": "1e399"}, "out of range"),
        ({"volume": "1e-400"}, "out of range"),
        ({"volume": "1_000"}, "not a decimal"),
        ({"volume": " 1"}, "not a decimal"),
        ({"low": "42000.00", "open": "42000.0", "high": "41999.99"}, "OHLC"),
        ({"volume": "-1"}, "negative"),
        ({"interval": "2m", "close_time": T0 + 119_999}, "interval"),
        ({"symbol": "btcusdt"}, "symbol"),
    ],
)
def test_check_kline_rejects_what_the_table_cannot_hold(
    overrides: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidKline, match=needle):
        check_kline(make_kline(**overrides))


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000)), max_size=50))
def test_offsets_to_commit_is_last_plus_one_per_partition(pairs: list[tuple[int, int]]) -> None:
    records = [rec(o, b"", p) for p, o in pairs]
    expected: dict[tuple[str, int], int] = {}
    for p, o in pairs:
        expected[(TOPIC, p)] = max(expected.get((TOPIC, p), 0), o + 1)
    assert offsets_to_commit(records) == expected


decimals = st.decimals(
    min_value=-5, max_value=5, allow_nan=False, allow_infinity=False, places=3
).map(lambda d: str(d))


@given(st.lists(decimals, min_size=8, max_size=8), st.integers(-3, 3), st.booleans())
def test_check_kline_accepts_exactly_what_validate_kline_accepts(
    values: list[str], trades: int, first_pair: bool
) -> None:
    from qryptify.kline import validate_kline

    names = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base",
             "taker_buy_quote")  # fmt: skip
    fields: dict[str, Any] = dict(zip(names, values, strict=True))
    k = make_kline("BTCUSDT" if first_pair else "ETHUSDT", trades=trades, **fields)
    try:
        validate_kline(k)
    except InvalidKline:
        with pytest.raises(InvalidKline):
            check_kline(k)
    else:
        assert check_kline(k) is k


class LimitExceeded(Exception):
    pass


def test_write_within_limit_halves_transactions_that_exceed_it() -> None:
    klines = [make_kline(open_time=T0 + i * 60_000) for i in range(10)]
    ranges = [EmptyRange("BTCUSDT", "1m", T0, T0 + 1, T0)]
    calls: list[tuple[int, int]] = []

    def write(ks: Sequence[Kline], rs: Sequence[EmptyRange]) -> int:
        if len(ks) > 3:
            raise LimitExceeded
        calls.append((len(ks), len(rs)))
        return len(ks)

    written = write_within_limit(write, klines, ranges, lambda e: isinstance(e, LimitExceeded))
    assert sum(written) == 10
    assert sum(r for _, r in calls) == 1  # the empty ranges are written exactly once
    assert all(n <= 3 for n, _ in calls)


def test_write_within_limit_reraises_other_errors_and_single_rows() -> None:
    def fails(ks: Sequence[Kline], rs: Sequence[EmptyRange]) -> int:
        raise LimitExceeded

    with pytest.raises(LimitExceeded):
        write_within_limit(fails, [make_kline()], [], lambda e: True)
    with pytest.raises(LimitExceeded):
        write_within_limit(fails, [make_kline(), make_kline("ETHUSDT")], [], lambda e: False)


def test_backoff_grows_to_the_cap() -> None:
    delays = iter(backoff(0.5, 10))
    assert [next(delays) for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
