"""The futures topic: its spec, publishing records with acknowledgement, and reading what it
already holds (the backfiller's resume point: the topic is the system of record)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from qryptify.avro import AvroCodec
from qryptify.config import Config
from qryptify.errors import IngestorError, UndecodableRecord
from qryptify.futures.funding import record_from_avro
from qryptify.futures.records import FuturesRecord, encode
from qryptify.kafka import make_consumer


class FuturesPublishFailed(IngestorError):
    """Kafka did not acknowledge every futures record of a batch."""


def topic_spec(cfg: Config) -> NewTopic:
    """Like the klines topic: partitioned, kept forever (replay needs all of it)."""
    return NewTopic(
        cfg.futures.topic,
        cfg.kafka.partitions,
        cfg.kafka.replication_factor,
        config={"cleanup.policy": "delete", "retention.ms": "-1"},
    )


def publish_records(
    producer: Producer, topic: str, codec: AvroCodec, rows: Sequence[FuturesRecord]
) -> None:
    """Publish ``rows`` (each keyed by its series, ``SYMBOL|funding`` or
    ``SYMBOL|kind|interval``: one series stays ordered in one partition) and wait until Kafka
    acknowledged all of them; FuturesPublishFailed otherwise."""
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    for f in rows:
        while True:
            try:
                producer.produce(
                    topic, key=f.key.encode(), value=encode(codec, f), on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.1)
    remaining = producer.flush(60)
    if remaining or failures:
        raise FuturesPublishFailed(
            f"{remaining} futures records unacknowledged; {'; '.join(failures[:3])}"
        )


def last_funding_times(cfg: Config, timeout_s: float = 120.0) -> dict[str, int]:
    """Per symbol, the newest funding time the futures topic holds (read up to the high
    watermarks with a throwaway group; funding is a few records per symbol and day)."""
    topic = cfg.futures.topic
    codec = AvroCodec()
    consumer = make_consumer(
        cfg.kafka,
        f"qryptify-futures-resume-{time.time_ns()}",
        **{"enable.auto.commit": False, "enable.partition.eof": True},
    )
    found: dict[str, int] = {}
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None:
            return found
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, low_offset(consumer, topic, p)) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise FuturesPublishFailed(f"reading {topic} took over {timeout_s:.0f}s")
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                _take(msg, codec, found, ends)
    finally:
        consumer.close()
    return found


def low_offset(consumer: Any, topic: str, partition: int) -> int:
    low, _high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    return int(low)


def _take(msg: Message, codec: AvroCodec, found: dict[str, int], ends: dict[int, int]) -> None:
    partition, offset = msg.partition(), msg.offset()
    if partition is None or offset is None:
        return
    if msg.error() is None:
        value = msg.value()
        try:
            f = record_from_avro(*codec.decode(value)) if value is not None else None
        except UndecodableRecord:
            f = None  # not ours to judge here: the sink sends it to the DLQ
        if f is not None and f.funding_time > found.get(f.symbol, -1):
            found[f.symbol] = f.funding_time
    if offset + 1 >= ends.get(partition, 0):
        ends.pop(partition, None)
