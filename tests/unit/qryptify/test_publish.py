"""Delivery tracking: the acknowledged prefix per pair is what a source offset may store."""

from __future__ import annotations

from typing import Any, cast

import pytest

from qryptify.avro import KlineCodec
from qryptify.kline import EmptyRange
from qryptify.offsets import offset_key, parse_offset_key
from qryptify.pairs import Pair
from qryptify.publish import AckTracker, KlinePublisher, event_position
from tests.conftest import T0, make_kline

BTC = Pair("BTCUSDT", "1m")
ETH = Pair("ETHUSDT", "1h")


def test_watermark_is_the_acknowledged_prefix() -> None:
    t = AckTracker()
    slots = [t.sent(BTC, T0 + i * 60_000) for i in range(4)]
    assert t.acked_through(BTC) is None
    t.delivered_ok(BTC, slots[1])  # out of order: the first is still in flight
    assert t.acked_through(BTC) is None
    t.delivered_ok(BTC, slots[0])
    assert t.acked_through(BTC) == T0 + 60_000
    t.delivered_ok(BTC, slots[3])
    assert t.acked_through(BTC) == T0 + 60_000
    t.delivered_ok(BTC, slots[2])
    assert t.acked_through(BTC) == T0 + 3 * 60_000
    assert t.in_flight() == 0 and t.delivered == 4


def test_a_failed_record_blocks_the_watermark_of_its_pair_only() -> None:
    t = AckTracker()
    b0, b1 = t.sent(BTC, T0), t.sent(BTC, T0 + 60_000)
    e0 = t.sent(ETH, T0)
    t.delivery_failed(BTC, b0, "Local: Message timed out")
    t.delivered_ok(BTC, b1)
    t.delivered_ok(ETH, e0)
    assert t.acked_through(BTC) is None
    assert t.acked_through(ETH) == T0
    assert [f.position for f in t.failures()] == [T0]


def test_watermark_never_moves_backwards() -> None:
    t = AckTracker()
    a = t.sent(BTC, T0 + 600_000)
    t.delivered_ok(BTC, a)
    b = t.sent(BTC, T0)  # a re-published older candle (recheck)
    t.delivered_ok(BTC, b)
    assert t.acked_through(BTC) == T0 + 600_000


def test_position_of_events() -> None:
    assert event_position(make_kline(open_time=T0)) == T0
    # an empty range [T0, T0+10m) on 1m: resume continues at T0+10m
    r = EmptyRange("BTCUSDT", "1m", T0, T0 + 600_000, confirmed_at=1)
    assert event_position(r) == T0 + 9 * 60_000


def test_offset_keys_roundtrip() -> None:
    key = offset_key("backfiller", BTC)
    assert key == b"backfiller|BTCUSDT|1m"
    assert parse_offset_key(key) == ("backfiller", BTC)
    assert parse_offset_key(b"garbage") is None


def test_fast_kline_encoding_equals_the_codec() -> None:
    codec = KlineCodec()
    pub = KlinePublisher(cast(Any, None), "t", codec)
    k = make_kline(open_time=T0, source="archive")
    assert pub._encode(k) == codec.encode(k)
    assert codec.decode(pub._encode(k)) == k
    r = EmptyRange("BTCUSDT", "1m", T0, T0 + 600_000, confirmed_at=1)
    assert codec.decode(pub._encode(r)) == r


def test_a_batch_is_acknowledged_when_all_its_records_are() -> None:
    t = AckTracker()
    first = t.sent(BTC, T0 + 2 * 60_000, count=3)
    second = t.sent(BTC, T0 + 4 * 60_000, count=2)
    for _ in range(2):
        t.delivered_ok(BTC, second)
    t.delivered_ok(BTC, first)
    t.delivered_ok(BTC, first)
    assert t.acked_through(BTC) is None and t.in_flight(BTC) == 1
    t.delivered_ok(BTC, first)
    assert t.acked_through(BTC) == T0 + 4 * 60_000
    assert t.in_flight() == 0


def test_publish_batch_and_all_against_a_fake_producer() -> None:
    class Fake:
        def __init__(self) -> None:
            self.keys: list[bytes] = []
            self.callbacks: list[Any] = []

        def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
            self.keys.append(key)
            self.callbacks.append(on_delivery)

        def poll(self, timeout: float = 0) -> int:
            return 0

    fake = Fake()
    pub = KlinePublisher(cast(Any, fake), "t")
    events = [make_kline("BTCUSDT", "1m", T0 + i * 60_000) for i in range(3)]
    events += [make_kline("ETHUSDT", "1h", T0)]
    assert pub.publish_all(events) == 4
    assert fake.keys == [b"BTCUSDT|1m"] * 3 + [b"ETHUSDT|1h"]
    for cb in fake.callbacks:
        cb(None, None)
    assert pub.acked() == {BTC: T0 + 120_000, ETH: T0}
    with pytest.raises(ValueError, match="in a batch of"):
        pub.publish_batch([make_kline("BTCUSDT", "1m"), make_kline("ETHUSDT", "1m")])


def test_publisher_steps_are_timed_wall_and_cpu() -> None:
    from qryptify.publish import PUBLISH_STEPS

    class Instant:
        def produce_batch(self, topic: str, messages: list[Any], on_delivery: Any) -> int:
            return len(messages)

        def poll(self, timeout: float) -> int:
            return 0

        def flush(self, timeout: float) -> int:
            return 0

    publisher = KlinePublisher(Instant(), "klines")  # type: ignore[arg-type]
    publisher.publish_encoded(Pair("BTCUSDT", "1m"), 1, [b"a", b"b"])
    publisher.poll()
    publisher.flush()
    assert set(publisher.times.wall) == set(PUBLISH_STEPS)
    assert all(publisher.times.wall[s] > 0 for s in ("produce", "poll", "flush"))
    assert publisher.times.wall["queue_full"] == 0.0
    assert all(c >= 0 for c in publisher.times.cpu.values())
