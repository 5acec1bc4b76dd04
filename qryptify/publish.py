"""Publishing kline events to the ``klines`` topic with delivery tracking.

``KlinePublisher`` wraps the idempotent producer from ``qryptify.kafka.make_producer``: every
Kline / EmptyRange goes out keyed ``SYMBOL|interval`` (so one pair stays ordered in one
partition), Avro-encoded by ``KlineCodec``. Delivery reports are tracked per pair, and
``acked_through(pair)`` gives the newest *position* (open time) such that the record at that
position and every earlier record of the pair were acknowledged by Kafka. That is what a
source offset may record (``qryptify.offsets.SourceOffsetStore``).

The position of an EmptyRange is the open time of the last grid slot it covers, so a resume
from it continues right after the range.

Delivery callbacks run inside ``poll``/``flush`` on whatever thread calls them, so the tracker
is lock-protected.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from qryptify.avro import KLINE, KlineCodec
from qryptify.errors import IngestorError
from qryptify.kafka import KafkaError, Message, Producer
from qryptify.kline import EmptyRange, Event, Kline
from qryptify.pairs import Pair, align_open

logger = logging.getLogger(__name__)


class DeliveryFailed(IngestorError):
    """Kafka reported a record as not delivered (after the producer's own retries)."""

    def __init__(self, pair: Pair, position: int, reason: str) -> None:
        self.pair = pair
        self.position = position
        self.reason = reason
        super().__init__(f"delivery of {pair} @ {position} failed: {reason}")


def event_position(event: Event) -> int:
    """The open time a resume may continue after, once this event is acknowledged."""
    if isinstance(event, Kline):
        return event.open_time
    return align_open(event.interval, event.end_time - 1)


def event_pair(event: Event) -> Pair:
    return Pair(event.symbol, event.interval)


@dataclass(slots=True)
class _Slot:
    position: int
    acked: bool = False


class AckTracker:
    """Per pair: records in publish order; the acknowledged prefix gives the watermark.

    Pure bookkeeping (no Kafka), so it is unit-tested directly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Pair, deque[_Slot]] = {}
        self._acked: dict[Pair, int] = {}
        self._failed: list[DeliveryFailed] = []
        self.delivered = 0

    def sent(self, pair: Pair, position: int) -> _Slot:
        slot = _Slot(position)
        with self._lock:
            self._pending.setdefault(pair, deque()).append(slot)
        return slot

    def delivered_ok(self, pair: Pair, slot: _Slot) -> None:
        with self._lock:
            slot.acked = True
            self.delivered += 1
            queue = self._pending.get(pair)
            while queue and queue[0].acked:
                head = queue.popleft()
                self._acked[pair] = max(self._acked.get(pair, head.position), head.position)

    def delivery_failed(self, pair: Pair, slot: _Slot, reason: str) -> None:
        # The slot stays un-acked: the pair's watermark can never move past it.
        with self._lock:
            self._failed.append(DeliveryFailed(pair, slot.position, reason))

    def acked_through(self, pair: Pair) -> int | None:
        with self._lock:
            return self._acked.get(pair)

    def acked(self) -> dict[Pair, int]:
        with self._lock:
            return dict(self._acked)

    def in_flight(self, pair: Pair | None = None) -> int:
        with self._lock:
            if pair is not None:
                return len(self._pending.get(pair, ()))
            return sum(len(q) for q in self._pending.values())

    def failures(self) -> list[DeliveryFailed]:
        with self._lock:
            return list(self._failed)


class KlinePublisher:
    """Publishes Kline / EmptyRange events and tracks which ones Kafka acknowledged."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        codec: KlineCodec | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.codec = codec or KlineCodec()
        self.tracker = AckTracker()
        self.published = 0
        self._pairs: dict[tuple[str, str], Pair] = {}

    def _pair(self, event: Event) -> Pair:
        ident = (event.symbol, event.interval)
        pair = self._pairs.get(ident)
        if pair is None:
            pair = self._pairs[ident] = event_pair(event)
        return pair

    def _encode(self, event: Event) -> bytes:
        if isinstance(event, Kline):
            # The codec's record for a Kline, built without reflection (hot path).
            return self.codec.avro.encode(
                KLINE,
                {
                    "symbol": event.symbol,
                    "interval": event.interval,
                    "open_time": event.open_time,
                    "close_time": event.close_time,
                    "open": event.open,
                    "high": event.high,
                    "low": event.low,
                    "close": event.close,
                    "volume": event.volume,
                    "quote_volume": event.quote_volume,
                    "trades": event.trades,
                    "taker_buy_base": event.taker_buy_base,
                    "taker_buy_quote": event.taker_buy_quote,
                    "source": event.source,
                    "ingested_at": event.ingested_at,
                },
            )
        return self.codec.encode(event)

    def publish(self, event: Event) -> None:
        """Queue one event; never blocks for long (serves delivery reports when full)."""
        pair = self._pair(event)
        value = self._encode(event)
        slot = self.tracker.sent(pair, event_position(event))

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.tracker.delivered_ok(pair, slot)
            else:
                logger.error("kafka delivery of %s @ %d failed: %s", pair, slot.position, err)
                self.tracker.delivery_failed(pair, slot, str(err))

        # The record timestamp stays the producer's wall time: a candle's (or a simulator's)
        # time may be far in the past or future, which brokers reject (timestamp.after.max.ms).
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=pair.key.encode(),
                    value=value,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.published += 1

    def publish_all(self, events: Iterable[Event]) -> int:
        n = 0
        for event in events:
            self.publish(event)
            n += 1
        self.producer.poll(0)
        return n

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; raises DeliveryFailed if any record failed."""
        served: int = self.producer.poll(timeout_s)
        self.raise_if_failed()
        return served

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued record; returns how many are still queued."""
        remaining: int = self.producer.flush(timeout_s)
        self.raise_if_failed()
        return remaining

    def raise_if_failed(self) -> None:
        failures = self.tracker.failures()
        if failures:
            raise failures[0]

    def acked_through(self, pair: Pair) -> int | None:
        """Newest position whose record and all earlier records of the pair are acked."""
        return self.tracker.acked_through(pair)

    def acked(self) -> dict[Pair, int]:
        return self.tracker.acked()

    def in_flight(self, pair: Pair | None = None) -> int:
        return self.tracker.in_flight(pair)


__all__ = [
    "AckTracker",
    "DeliveryFailed",
    "EmptyRange",
    "KlinePublisher",
    "event_pair",
    "event_position",
]
