"""The sink's pure batch logic: flush policy, split into rows / DLQ / offsets, de-duplication,
and the transaction splitting that keeps TimescaleDB's decompression limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify.avro import SOE_MAGIC, KlineCodec
from qryptify.errors import InvalidKline
from qryptify.kline import EmptyRange, Kline
from qryptify.retry import backoff
from qryptify.sink.batch import (
    FlushPolicy,
    Record,
    StagedBatch,
    check_kline,
    offsets_to_commit,
    split_batch,
    write_bisecting,
)
from qryptify.sink.rows import CandleBatch, CandleRow, ts_text
from tests.conftest import T0, make_kline

CODEC = KlineCodec()
TOPIC = "klines"


def rows_of(*klines: Kline) -> list[CandleRow]:
    """The rows the general path builds from Kline objects (what the fast path must equal)."""
    return sorted(CandleBatch.from_klines(klines).rows)


def rec(offset: int, value: bytes | None, partition: int = 0, key: bytes | None = None) -> Record:
    return Record(TOPIC, partition, offset, key, value)


def krec(offset: int, k: Kline | EmptyRange, partition: int = 0) -> Record:
    return rec(offset, CODEC.encode(k), partition, k.key.encode())


def test_flush_policy_by_size_by_age_and_when_idle() -> None:
    policy = FlushPolicy(batch_size=3, max_latency_ms=200)
    assert not policy.should_flush(0, None, 10_000)
    assert not policy.should_flush(0, None, 10_000, idle=True)
    assert not policy.should_flush(2, 1_000, 1_199)
    assert policy.should_flush(2, 1_000, 1_000, idle=True)  # nothing queued, writer free
    assert policy.should_flush(2, 1_000, 1_200)  # the oldest record waited max_latency_ms
    assert policy.should_flush(3, 1_000, 1_000)  # full
    assert policy.wait_ms(0, None, 5) == 200
    assert policy.wait_ms(1, 1_000, 1_150) == 50
    assert policy.wait_ms(1, 1_000, 9_999) == 0
    assert policy.room(1) == 2 and policy.room(7) == 1
    with pytest.raises(ValueError):
        FlushPolicy(0, 10)


def test_flush_policy_asks_for_at_most_one_poll_chunk_per_call() -> None:
    policy = FlushPolicy(batch_size=20_000, max_latency_ms=200, poll_chunk=500)
    assert policy.room(0) == 500
    assert policy.room(19_800) == 200  # what the batch still has room for
    assert policy.room(25_000) == 1
    with pytest.raises(ValueError, match="poll_chunk"):
        FlushPolicy(10, 10, poll_chunk=0)


def test_staged_batch_tracks_the_oldest_record_and_drops_partitions() -> None:
    a, b, c = (make_kline(open_time=T0 + i * 60_000) for i in range(3))
    batch = StagedBatch(CODEC)
    batch.add([], 5)
    assert batch.first_at_ms is None and len(batch) == 0
    batch.add([krec(0, a, 0), krec(7, b, 1)], 100)
    batch.add([krec(1, c, 0), rec(2, b"junk", 0)], 150)
    assert len(batch) == 4 and batch.first_at_ms == 100
    assert batch.held([(TOPIC, 0)]) == 3
    assert batch.drop_partitions([(TOPIC, 0)]) == 3
    split = batch.split()
    assert split.batch.rows == rows_of(b) and split.dlq == []
    assert split.offsets == {(TOPIC, 1): 8} and split.first_offsets == {(TOPIC, 1): 7}
    assert batch.drop_partitions([(TOPIC, 1)]) == 1
    assert batch.first_at_ms is None and len(batch) == 0


def test_split_without_revoked_partitions() -> None:
    a, b = make_kline(), make_kline("ETHUSDT")
    split = split_batch([krec(3, a, 0), krec(5, b, 1), rec(6, b"junk", 1)], CODEC)
    kept = split.without({(TOPIC, 1)})
    assert kept.batch.rows == rows_of(a) and kept.dlq == []
    assert kept.offsets == {(TOPIC, 0): 4} and kept.first_offsets == {(TOPIC, 0): 3}
    assert list(kept.batch.spans) == [("BTCUSDT", "1m")]


def test_split_dedupes_by_key_with_the_later_offset_winning() -> None:
    old = make_kline(close="1.5", open="1", high="2", low="1")
    new = make_kline(close="1.75", open="1", high="2", low="1")
    other = make_kline("ETHUSDT", open_time=T0)
    split = split_batch([krec(5, old), krec(9, other, 1), krec(7, new)], CODEC)
    assert sorted(split.batch.rows) == rows_of(new, other)
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
    split = split_batch(records, CODEC)
    assert split.batch.rows == rows_of(good)
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
    split = split_batch([krec(0, a), krec(1, b), krec(2, a), krec(3, c)], CODEC)
    assert sorted(split.empty_ranges, key=lambda r: r.start_time) == [b, c]


def test_newest_candle_per_pair_for_latency_metrics() -> None:
    ks = [make_kline(open_time=T0 + i * 60_000) for i in range(3)]
    split = split_batch([krec(i, k) for i, k in enumerate(ks)], CODEC)
    assert split.newest == [(ks[-1].close_time, ks[-1].ingested_at)]


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


def test_write_bisecting_halves_transactions_that_exceed_it() -> None:
    batch = CandleBatch.from_klines(make_kline(open_time=T0 + i * 60_000) for i in range(10))
    ranges = [EmptyRange("BTCUSDT", "1m", T0, T0 + 1, T0)]
    calls: list[tuple[int, int]] = []
    seen: list[CandleRow] = []

    def write(b: CandleBatch, rs: Sequence[EmptyRange]) -> int:
        if len(b) > 3:
            raise LimitExceeded
        calls.append((len(b), len(rs)))
        seen.extend(b.rows)
        assert b.spans == CandleBatch.of(b.rows).spans
        return len(b)

    written, rejected = write_bisecting(
        write, batch, ranges, lambda e: isinstance(e, LimitExceeded), lambda e: None
    )
    assert rejected == []
    assert sum(written) == 10
    assert sorted(seen) == sorted(batch.rows)
    assert sum(r for _, r in calls) == 1  # the empty ranges are written exactly once
    assert all(n <= 3 for n, _ in calls)


def test_write_bisecting_reraises_other_errors_and_single_rows() -> None:
    def fails(b: CandleBatch, rs: Sequence[EmptyRange]) -> int:
        raise LimitExceeded

    one = CandleBatch.from_klines([make_kline()])
    two = CandleBatch.from_klines([make_kline(), make_kline("ETHUSDT")])
    with pytest.raises(LimitExceeded):
        write_bisecting(fails, one, [], lambda e: True, lambda e: None)
    with pytest.raises(LimitExceeded):
        write_bisecting(fails, two, [], lambda e: False, lambda e: None)


def test_backoff_grows_to_the_cap() -> None:
    delays = iter(backoff(0.5, 10))
    assert [next(delays) for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_ts_text_is_what_postgresql_reads_as_that_instant() -> None:
    from datetime import UTC, datetime

    for ms in (0, T0, T0 + 59_999, 1_709_251_199_999, 7_258_118_399_999, 951_782_400_000):
        expected = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        assert ts_text(ms) == f"{expected[:-3]}+00".encode()


_prices = st.sampled_from(
    ["1", "1.0", "1.00", "0.99999999999999999", "1.00000000000000001", "2", "1e0", "-1",
     "0", "0.0", "-0.0", "10.5", "10.50", "1" * 31, "1." + "0" * 31, "3.14", "nan", " 1"]
)  # fmt: skip


@given(
    st.lists(_prices, min_size=8, max_size=8),
    st.integers(-2, 5),
    st.sampled_from(["1m", "1h", "1M", "1w"]),
    st.sampled_from([0, -1, 1]),
    st.sampled_from([b"BTCUSDT|", b"ETHUSDT|", None]),
)
def test_fast_path_rows_and_verdicts_equal_the_exact_path(
    values: list[str], trades: int, interval: str, close_shift: int, key_symbol: bytes | None
) -> None:
    names = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base",
             "taker_buy_quote")  # fmt: skip
    k = make_kline("BTCUSDT", interval, T0, trades=trades, **dict(zip(names, values, strict=True)))
    k = dataclasses.replace(k, close_time=k.close_time + close_shift)
    key = None if key_symbol is None else key_symbol + interval.encode()
    records = [rec(0, CODEC.encode(k), key=key), krec(1, make_kline("ETHUSDT", interval, T0))]
    fast, exact = split_batch(records, CODEC), split_batch(records, CODEC, fast=False)
    assert sorted(fast.batch.rows) == sorted(exact.batch.rows)
    assert [(e.offset, e.error_class, e.reason) for e in fast.dlq] == [
        (e.offset, e.error_class, e.reason) for e in exact.dlq
    ]
    assert fast.batch.spans == exact.batch.spans and fast.newest == exact.newest


_texts = st.text(max_size=70) | _prices | st.from_regex(r"[0-9]{1,20}\.[0-9]{1,12}", fullmatch=True)
_longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_any_kline = st.builds(
    Kline,
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "btc", "X" * 70, "ÄUSDT"]),
    interval=st.sampled_from(["1m", "1M", "1w", "2m"]),
    open_time=st.sampled_from([T0, T0 + 60_000, 5, 2**62]) | _longs,
    close_time=st.sampled_from([T0 + 59_999, T0 + 119_999]) | _longs,
    open=_texts,
    high=_texts,
    low=_texts,
    close=_texts,
    volume=_texts,
    quote_volume=_texts,
    trades=st.integers(-5, 2**22) | _longs,
    taker_buy_base=_texts,
    taker_buy_quote=_texts,
    source=st.sampled_from(["rest", "ws", "archive"]),
    ingested_at=st.sampled_from([T0 + 61_000, 0, -1]) | _longs,
)


def _verdicts(split: Any) -> tuple[list[CandleRow], list[tuple[int, str, str]], object]:
    return (
        sorted(split.batch.rows),
        [(e.offset, e.error_class, e.reason) for e in split.dlq],
        (split.batch.spans, sorted(split.newest), split.offsets),
    )


@given(st.lists(_any_kline, min_size=1, max_size=4), st.data())
def test_fast_path_equals_the_exact_path_on_arbitrary_and_damaged_records(
    ks: list[Kline], data: st.DataObject
) -> None:
    # A good record of each pair first, so the fast path knows the pair (it learns pairs from
    # records the exact path accepted), then the arbitrary ones, some of them damaged.
    primers = [krec(i, make_kline(s, i_)) for i, (s, i_) in enumerate([("BTCUSDT", "1m"),
               ("ETHUSDT", "1M"), ("BTCUSDT", "1w")])]  # fmt: skip
    records = list(primers)
    for i, k in enumerate(ks, start=len(primers)):
        value = CODEC.encode(k)
        if data.draw(st.booleans()):
            cut = data.draw(st.integers(min_value=10, max_value=len(value)))
            value = value[:cut] + data.draw(st.binary(max_size=8))
        key = data.draw(st.sampled_from([k.key.encode(), b"BTCUSDT|1m", None]))
        records.append(rec(i, value, key=key))
    assert _verdicts(split_batch(records, CODEC)) == _verdicts(
        split_batch(records, CODEC, fast=False)
    )


def test_records_below_the_committed_position_are_not_staged_again() -> None:
    # After a rebalance a partition may be read again from an older committed offset while
    # this loop already committed further: those records are written, and older than what is.
    floors = {0: 10}
    staged = StagedBatch(CODEC, floors=floors)
    old, new = make_kline(close="1.5", open="1", high="2", low="1"), make_kline()
    other = make_kline("ETHUSDT")
    staged.add([krec(8, old, 0), krec(9, old, 0), krec(10, new, 0), krec(3, other, 1)], 0)
    split = staged.split()
    assert len(staged) == 2
    assert sorted(split.batch.rows) == rows_of(new, other)  # partition 1 has no floor
    assert split.offsets == {(TOPIC, 0): 11, (TOPIC, 1): 4}
    assert split.first_offsets == {(TOPIC, 0): 10, (TOPIC, 1): 3}


def test_an_empty_range_drops_the_earlier_candles_it_covers_and_keeps_later_ones() -> None:
    ks = [make_kline(open_time=T0 + i * 60_000) for i in range(5)]
    other = make_kline("ETHUSDT", open_time=T0 + 60_000)
    gone = EmptyRange("BTCUSDT", "1m", T0 + 60_000, T0 + 3 * 60_000, T0)
    refilled = make_kline(open_time=T0 + 2 * 60_000, close="42001.5")
    split = split_batch(
        [*(krec(i, k) for i, k in enumerate(ks)), krec(0, other, 1), krec(10, gone),
         krec(11, refilled)],
        CODEC,
    )  # fmt: skip
    # T0+1m is gone (published before the range); T0+2m came after it; ETHUSDT is untouched
    assert sorted(split.batch.rows) == rows_of(ks[0], refilled, ks[3], ks[4], other)
    assert split.empty_ranges == [gone]


def test_split_without_a_revoked_partition_drops_its_empty_ranges_too() -> None:
    a = EmptyRange("BTCUSDT", "1m", T0, T0 + 60_000, T0)
    b = EmptyRange("ETHUSDT", "1m", T0, T0 + 60_000, T0)
    split = split_batch([krec(0, a, 0), krec(0, b, 1)], CODEC)
    assert split.without({(TOPIC, 1)}).empty_ranges == [a]
