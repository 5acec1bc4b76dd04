"""The dead-letter topic (``kafka.dlq_topic``): the one writer every service uses.

A dead letter is anything that can say what to produce: ``bounded()`` → (key, value, headers),
small enough for the broker. Two kinds exist:

* the sink's ``qryptify.sink.batch.DlqEntry``: a Kafka record it cannot write, with its
  origin (topic, partition, offset) and why; oversized ones go truncated with their digest;
* ``FrameLetter``: a WebSocket frame the producer could not use (kline or markPrice stream),
  raw and unchanged, with why in the headers: ``qryptify.reason`` (``<kind>: <reason>``, at
  most 500 characters), ``qryptify.source`` (``ws``) and ``qryptify.stream``; the key is the
  stream name (none when the frame named no stream).

``DlqWriter.send`` waits for delivery and raises ``DlqUnavailable`` when it did not happen (the
sink commits no offset before its DLQ records are in); ``DlqWriter.post`` does not wait (the
producer never holds a stream up for a bad frame) and logs a failed delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qryptify.errors import DlqUnavailable
from qryptify.kafka import KafkaError, KafkaException, Message, Producer, produce_waiting

logger = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class DeadLetter(Protocol):
    def bounded(self) -> tuple[bytes | None, bytes | None, Headers]:
        """(key, value, headers) to produce to the DLQ."""
        ...


@dataclass(frozen=True, slots=True)
class FrameLetter:
    """A WebSocket frame no use could be made of. Frames are at most
    ``qryptify.binance.ws.MAX_FRAME_BYTES`` (64 KiB; the connection refuses larger ones), far
    under what a broker takes: always sent whole."""

    raw: bytes
    kind: str
    reason: str
    stream: str | None

    def bounded(self) -> tuple[bytes | None, bytes | None, Headers]:
        stream = (self.stream or "").encode()
        headers: Headers = [
            ("qryptify.reason", f"{self.kind}: {self.reason}"[:500].encode()),
            ("qryptify.source", b"ws"),
            ("qryptify.stream", stream),
        ]
        return stream or None, self.raw, headers


class DlqWriter:
    """Produces dead letters to ``topic``."""

    def __init__(self, producer: Producer, topic: str, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Produce every letter and wait for their delivery (before any offset commit)."""
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for letter in letters:
            try:
                self._produce(letter, delivered)
            except KafkaException as exc:
                # Refused locally (size, config): retry the batch later, never crash on it.
                raise DlqUnavailable(f"cannot produce to {self.topic}: {exc}") from None
        remaining = self.producer.flush(self.timeout_s)
        if remaining or failures:
            raise DlqUnavailable(
                f"{remaining} undelivered, errors: {'; '.join(failures[:3]) or 'timeout'}"
            )

    def post(self, letter: DeadLetter) -> None:
        """Produce one letter without waiting; a failed delivery is logged."""

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                logger.error("DLQ delivery failed: %s", err)

        self._produce(letter, on_delivery)

    def _produce(self, letter: DeadLetter, on_delivery: Callable[[Any, Any], None]) -> None:
        key, value, headers = letter.bounded()
        produce_waiting(
            self.producer,
            self.topic,
            key=key,
            value=value,
            headers=headers,
            on_delivery=on_delivery,
        )

    def close(self) -> None:
        self.producer.flush(self.timeout_s)
