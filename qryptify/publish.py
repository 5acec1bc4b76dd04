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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from qryptify.avro import KlineCodec
from qryptify.errors import DeliveryFailed
from qryptify.kafka import KafkaError, Message, Producer, produce_waiting
from qryptify.kline import EmptyRange, Event, Kline
from qryptify.pairs import Pair, align_open
from qryptify.timing import Mark, StepTimes

#: The publishers' steps: ``produce`` (encode and hand records to librdkafka), ``queue_full``
#: (waiting for room in librdkafka's queue), ``poll`` (serving delivery reports) and ``flush``
#: (waiting for every acknowledgement); wall and CPU time of the calling thread.
PUBLISH_STEPS = ("produce", "queue_full", "poll", "flush")
PUBLISH_STEP_SECONDS = Counter(
    "qryptify_publish_step_seconds",
    "Seconds the Kafka publishers spend per step; clock=wall includes waiting, clock=cpu is the "
    "CPU time of the thread doing the step",
    ["step", "clock"],
)

logger = logging.getLogger(__name__)


def event_position(event: Event) -> int:
    """The open time a resume may continue after, once this event is acknowledged."""
    if isinstance(event, Kline):
        return event.open_time
    return align_open(event.interval, event.end_time - 1)


def event_pair(event: Event) -> Pair:
    return Pair(event.symbol, event.interval)


@dataclass(slots=True)
class _Slot:
    """A batch of records of one pair: acknowledged when ``remaining`` reaches 0."""

    position: int  # the newest position in the batch
    remaining: int = 1
    failed: bool = False
    size: int = 1  # records in the batch


class AckTracker:
    """Per pair: batches in publish order; the acknowledged prefix gives the watermark.

    Pure bookkeeping (no Kafka), so it is unit-tested directly. Delivery reports arrive on the
    thread that polls the producer; the lock guards the queues against ``sent`` elsewhere.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Pair, deque[_Slot]] = {}
        self._acked: dict[Pair, int] = {}
        self._failed: list[DeliveryFailed] = []
        self.delivered = 0

    def sent(self, pair: Pair, position: int, count: int = 1) -> _Slot:
        """``count`` records of ``pair`` up to ``position`` were handed to the producer."""
        if count < 1:
            raise ValueError(f"a batch has at least one record, got {count}")
        slot = _Slot(position, count, size=count)
        with self._lock:
            self._pending.setdefault(pair, deque()).append(slot)
        return slot

    def delivered_ok(self, pair: Pair, slot: _Slot) -> None:
        self.delivered += 1
        slot.remaining -= 1
        if slot.remaining > 0:
            return
        with self._lock:
            queue = self._pending.get(pair)
            while queue and queue[0].remaining <= 0 and not queue[0].failed:
                head = queue.popleft()
                self._acked[pair] = max(self._acked.get(pair, head.position), head.position)

    def batch_delivered(self, pair: Pair, slot: _Slot) -> None:
        """Every record of ``slot`` was acknowledged (its callback counted them down itself:
        one call per batch instead of one per record)."""
        self.delivered += slot.size
        with self._lock:
            queue = self._pending.get(pair)
            while queue and queue[0].remaining <= 0 and not queue[0].failed:
                head = queue.popleft()
                self._acked[pair] = max(self._acked.get(pair, head.position), head.position)

    def delivery_failed(self, pair: Pair, slot: _Slot, reason: str) -> None:
        # The batch stays un-acked: the pair's watermark can never move past it.
        with self._lock:
            slot.failed = True
            self._failed.append(DeliveryFailed(pair, slot.position, reason))

    def acked_through(self, pair: Pair) -> int | None:
        with self._lock:
            return self._acked.get(pair)

    def acked(self) -> dict[Pair, int]:
        with self._lock:
            return dict(self._acked)

    def in_flight(self, pair: Pair | None = None) -> int:
        """Records handed to the producer and not acknowledged yet."""
        with self._lock:
            queues = [self._pending.get(pair, deque())] if pair else self._pending.values()
            return sum(max(0, slot.remaining) for q in queues for slot in q)

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
        self.times = StepTimes(PUBLISH_STEP_SECONDS, PUBLISH_STEPS)

    def _pair(self, event: Event) -> Pair:
        ident = (event.symbol, event.interval)
        pair = self._pairs.get(ident)
        if pair is None:
            pair = self._pairs[ident] = event_pair(event)
        return pair

    def _encode(self, event: Event) -> bytes:
        return self.codec.encode(event)  # Klines: KlineEncoder, byte-identical to fastavro

    def publish(self, event: Event) -> None:
        """Queue one event; never blocks for long (serves delivery reports when full)."""
        self.publish_batch([event])

    def publish_batch(self, events: Sequence[Event]) -> None:
        """Queue events of ONE pair, in order; acknowledged (for ``acked_through``) as a whole
        when Kafka confirmed every one of them."""
        if not events:
            return
        mark = Mark.now()
        pair = self._pair(events[0])
        for event in events:
            if (event.symbol, event.interval) != (pair.symbol, pair.interval):
                raise ValueError(f"publish_batch: {event.key} in a batch of {pair.key}")
        position = max(event_position(e) for e in events)
        self._produce(pair, position, [self._encode(e) for e in events])
        self.times.since("produce", mark)

    def publish_values(self, closes: Sequence[tuple[str, str, int, bytes]]) -> None:
        """Queue Klines already encoded as their topic values (the live producer's closes,
        ``qryptify.binance.frames``), each ``(symbol, interval, open time, value)``; every one
        tracked and reported exactly like ``publish``. Timed as one step (two clock reads
        for the lot, not per record)."""
        mark = Mark.now()
        pairs = self._pairs
        for symbol, interval, open_time, value in closes:
            pair = pairs.get((symbol, interval))
            if pair is None:
                pair = pairs[(symbol, interval)] = Pair(symbol, interval)
            self._produce(pair, open_time, [value])
        self.times.since("produce", mark)

    def _produce(self, pair: Pair, position: int, values: Sequence[bytes]) -> None:
        """One ``produce`` per value, each reporting to the batch's slot."""
        slot = self.tracker.sent(pair, position, len(values))
        tracker = self.tracker

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                tracker.delivered_ok(pair, slot)
            else:
                logger.error("kafka delivery of %s up to %d failed: %s", pair, position, err)
                tracker.delivery_failed(pair, slot, str(err))

        key = pair.key.encode()
        producer = self.producer
        # The record timestamp stays the producer's wall time: a candle's (or a simulator's)
        # time may be far in the past or future, which brokers reject (timestamp.after.max.ms).
        for value in values:
            produce_waiting(
                producer,
                self.topic,
                on_full=self._wait_for_room,
                key=key,
                value=value,
                on_delivery=on_delivery,
            )
        self.published += len(values)

    def publish_encoded(self, pair: Pair, position: int, values: Sequence[bytes]) -> None:
        """Queue already-encoded records of ONE pair, in order (``position`` is the newest);
        acknowledged as a whole like ``publish_batch``, with ONE delivery callback object for
        the batch and ``produce_batch`` (one call into librdkafka for the lot).

        Every record still carries the callback: a record that fails while a later one of the
        same partition succeeds (an idempotent producer's message timeout bumps the epoch and
        carries on) must be seen, so no record goes unreported."""
        if not values:
            return
        mark = Mark.now()
        tracker = self.tracker
        slot = tracker.sent(pair, position, len(values))

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                slot.remaining -= 1
                if slot.remaining == 0:
                    tracker.batch_delivered(pair, slot)
            else:
                logger.error("kafka delivery of %s up to %d failed: %s", pair, position, err)
                tracker.delivery_failed(pair, slot, str(err))

        key = pair.key.encode()
        messages = [{"value": v, "key": key} for v in values]
        while True:
            queued: int = self.producer.produce_batch(self.topic, messages, on_delivery=on_delivery)
            if queued == len(messages):
                break
            messages = self._unqueued(pair, slot, messages)
            self._wait_for_room()
        self.published += len(values)
        self.times.since("produce", mark)

    def _wait_for_room(self) -> None:
        """The producer's queue is full: serve delivery reports until there is room."""
        mark = Mark.now()
        self.producer.poll(0.05)
        self.times.since("queue_full", mark)

    def _unqueued(self, pair: Pair, slot: _Slot, messages: list[dict[str, Any]]) -> list[Any]:
        """After a partly queued ``produce_batch``: the messages to offer again, in order.

        librdkafka fails every message after the first "queue full" one too, so those are a
        suffix and retrying it keeps the order. Any other error fails the batch."""
        failed = [i for i, m in enumerate(messages) if "_error" in m]
        first = failed[0]
        errors = [messages[i]["_error"] for i in failed]
        full = all(e.code() == KafkaError._QUEUE_FULL for e in errors)
        if not full or failed != list(range(first, len(messages))):
            reason = "; ".join(sorted({str(e) for e in errors}))
            self.tracker.delivery_failed(pair, slot, reason)
            raise DeliveryFailed(pair, slot.position, f"not queued: {reason}")
        return [{"value": m["value"], "key": m["key"]} for m in messages[first:]]

    def publish_all(self, events: Iterable[Event]) -> int:
        """Queue events of any pairs, one batch per run of the same pair."""
        n = 0
        batch: list[Event] = []
        for event in events:
            if batch and (event.symbol, event.interval) != (batch[0].symbol, batch[0].interval):
                self.publish_batch(batch)
                batch = []
            batch.append(event)
            n += 1
        self.publish_batch(batch)
        self.producer.poll(0)
        return n

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; raises DeliveryFailed if any record failed."""
        mark = Mark.now()
        served: int = self.producer.poll(timeout_s)
        self.times.since("poll", mark)
        self.raise_if_failed()
        return served

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued record; returns how many are still queued."""
        mark = Mark.now()
        remaining: int = self.producer.flush(timeout_s)
        self.times.since("flush", mark)
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
