"""Kafka acknowledgements of the producer's records, from the poll thread to the event loop.

librdkafka serves delivery reports on the producer's poll thread. ``Acks.report`` measures the
frame → ack latency there (librdkafka's own produce → ack time, ``Message.latency()``, so a late
GIL does not count) and queues the outcome; the loop's ``drain`` hands the queue to the
``LiveBook``. The one optional hook for benchmarks, ``AckObserver``, is called from here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import Histogram

from qryptify.kafka import KafkaError, Message, Producer
from qryptify.pairs import Pair
from qryptify.publish import AckTracker
from services.producer.stream import LiveBook

ACK_LATENCY = Histogram(
    "qryptify_producer_frame_to_ack_seconds",
    "From receiving an x:true frame to Kafka acknowledging its record",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25,
             0.5, 1.0, 2.5),
)  # fmt: skip


class AckObserver(Protocol):
    """Optional hook (benchmarks): called on the poll thread for every acked WS candle."""

    def __call__(self, pair: Pair, open_time: int, frame_s: float, ack_s: float) -> None: ...


class NotifyingTracker(AckTracker):
    """The publisher's tracker, also handing every delivery report to the producer's loop."""

    def __init__(self, report: Callable[[Pair, int, str | None], None]) -> None:
        super().__init__()
        self._report = report

    # ``slot`` is the publisher's private slot record; only its ``position`` is read here.
    def delivered_ok(self, pair: Pair, slot: Any) -> None:
        super().delivered_ok(pair, slot)
        self._report(pair, slot.position, None)

    def delivery_failed(self, pair: Pair, slot: Any, reason: str) -> None:
        super().delivery_failed(pair, slot, reason)
        self._report(pair, slot.position, reason)


class TimedProducer:
    """The producer as the publisher sees it, noting librdkafka's own produce → ack latency
    (``Message.latency()``, timed in C) of the record whose delivery report is being served.
    Delivery reports are served one at a time on the poll thread, so one attribute suffices.
    Everything else is the real producer."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.last_latency_s: float | None = None

    def produce(self, topic: str, **kwargs: Any) -> None:
        on_delivery = kwargs.pop("on_delivery", None)
        if on_delivery is not None:

            def report(err: KafkaError | None, msg: Message) -> None:
                self.last_latency_s = msg.latency() if err is None else None
                on_delivery(err, msg)

            kwargs["on_delivery"] = report
        self._producer.produce(topic, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


class Acks:
    """Delivery outcomes on their way from the poll thread to the loop, and the frame → ack
    latency of WebSocket candles."""

    def __init__(self, timed: TimedProducer, observer: AckObserver | None = None) -> None:
        self._timed = timed
        self.observer = observer
        self._queue: deque[tuple[Pair, int, str | None]] = deque()
        # (symbol, interval, open time) → (frame read, produce called), perf_counter seconds
        self._frame_t: dict[tuple[str, str, int], tuple[float, float]] = {}

    def sending(self, symbol: str, interval: str, open_time: int, frame_s: float) -> None:
        """A WebSocket candle read at ``frame_s`` is about to be produced."""
        self._frame_t[(symbol, interval, open_time)] = (frame_s, time.perf_counter())

    def report(self, pair: Pair, position: int, error: str | None) -> None:
        # On the poll thread: measure, then hand over to the loop. The ack time is librdkafka's
        # (produce call + its measured latency): this thread may get the GIL later than that.
        ack_s = time.perf_counter()
        times = self._frame_t.pop((pair.symbol, pair.interval, position), None)
        if times is not None and error is None:
            frame_s, produce_s = times
            latency = self._timed.last_latency_s
            if latency is not None:
                ack_s = min(ack_s, produce_s + latency)
            ACK_LATENCY.observe(ack_s - frame_s)
            if self.observer is not None:
                self.observer(pair, position, frame_s, ack_s)
        self._queue.append((pair, position, error))

    def drain(self, book: LiveBook) -> None:
        """On the loop: every outcome reported so far, into the book."""
        queue = self._queue
        while queue:
            pair, position, error = queue.popleft()
            if error is None:
                book.on_ack(pair, position)
            else:
                book.on_failed(pair, position)
