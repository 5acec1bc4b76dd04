"""Malformed WebSocket frames → the dead-letter topic (``kafka.dlq_topic``), raw and unchanged,
with why in the headers: ``qryptify.reason`` (``<kind>: <reason>``, at most 500 characters),
``qryptify.source`` (``ws``) and ``qryptify.stream``; the key is the stream name (none when the
frame named no stream). Shared by the kline connections and the futures task."""

from __future__ import annotations

import logging

from qryptify.kafka import KafkaError, Message, Producer

logger = logging.getLogger(__name__)


def send_frame_to_dlq(
    producer: Producer, topic: str, raw: bytes, *, kind: str, reason: str, stream: str | None
) -> None:
    headers: list[tuple[str, str | bytes | None]] = [
        ("qryptify.reason", f"{kind}: {reason}"[:500].encode()),
        ("qryptify.source", b"ws"),
        ("qryptify.stream", (stream or "").encode()),
    ]

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            logger.error("DLQ delivery failed: %s", err)

    while True:
        try:
            producer.produce(
                topic,
                key=(stream or "").encode() or None,
                value=raw,
                headers=headers,
                on_delivery=on_delivery,
            )
            return
        except BufferError:
            producer.poll(0.05)
