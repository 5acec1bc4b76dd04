"""Source offsets, like a Kafka Connect source connector: per service and pair, the open time
of the newest record Kafka acknowledged, on the compacted topic ``kafka.offsets_topic``.

Key ``service|SYMBOL|interval`` (UTF-8), value the Avro record
``io.qryptify.binance.futures.SourceOffset`` (Avro single-object encoding). A resume starts at
the candle after the stored open time.

Commit only what ``KlinePublisher.acked_through`` reports: then a restart (even after kill -9)
skips nothing. What it publishes again is bounded by the commit cadence, not by what was in
flight: a pair resumes after its last *committed* offset, so candles acknowledged after that
commit are published again, and a pair killed before its first offset commit starts again from
its beginning. That is at-least-once delivery; the sink's idempotent upsert absorbs the repeats.

The same topic carries the two handoff marks of ``qryptify.handoff`` (services
``backfiller-plan`` and ``producer-start``), same record, same key layout.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from qryptify.avro import SOURCE_OFFSET, AvroCodec
from qryptify.config import KafkaConfig
from qryptify.errors import OffsetStoreError, UndecodableRecord
from qryptify.kafka import (
    KafkaError,
    Message,
    Producer,
    TopicPartition,
    make_consumer,
    produce_waiting,
)
from qryptify.pairs import Pair
from qryptify.publish import KlinePublisher

logger = logging.getLogger(__name__)


def offset_key(service: str, pair: Pair) -> bytes:
    if "|" in service or not service:
        raise ValueError(f"service name {service!r} must be non-empty and contain no '|'")
    return f"{service}|{pair.symbol}|{pair.interval}".encode()


def _reached(ends: dict[int, int], partition: int, next_offset: int) -> None:
    if next_offset >= ends.get(partition, 0):
        ends.pop(partition, None)


def parse_offset_key(key: bytes) -> tuple[str, Pair] | None:
    try:
        service, symbol, interval = key.decode().split("|")
        return service, Pair(symbol, interval)
    except (UnicodeDecodeError, ValueError):
        return None


def read_latest(cfg: KafkaConfig, topic: str, timeout_s: float = 30.0) -> dict[bytes, bytes | None]:
    """A compacted topic read from the beginning to its high watermarks: the latest value per
    key (None for a tombstone). Raises OffsetStoreError when the topic is missing or the read
    does not finish within ``timeout_s``."""
    consumer = make_consumer(
        cfg,
        f"qryptify-offsets-reader-{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": True},
    )
    found: dict[bytes, bytes | None] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise OffsetStoreError(f"offsets topic {topic} not found")
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        if not starts:
            return found
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise OffsetStoreError(
                    f"reading {topic} timed out with partitions {sorted(ends)} unread"
                )
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                partition, offset = msg.partition(), msg.offset()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        logger.warning("offsets topic: %s", err.str())
                    elif partition is not None and offset is not None:
                        _reached(ends, partition, offset)  # EOF: offset is the next one
                    continue
                key = msg.key()
                if isinstance(key, bytes):
                    found[key] = msg.value()
                if partition is not None and offset is not None:
                    _reached(ends, partition, offset + 1)
    finally:
        consumer.close()
    return found


_Key = TypeVar("_Key")


class OffsetsTopicWriter:
    """Writes Avro records to the compacted ``kafka.offsets_topic``; ``flush`` raises if any
    write failed. The source offsets and the archive ledger share it."""

    #: What the records are, for the failure messages.
    what = "offset commit"

    def __init__(
        self,
        cfg: KafkaConfig,
        producer: Producer,
        codec: AvroCodec | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.topic = cfg.offsets_topic
        self.producer = producer
        self.codec = codec or AvroCodec()
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._failed: list[str] = []

    def _produce(self, key: bytes, value: bytes) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                logger.error("%s %s failed: %s", self.what, key.decode(errors="replace"), err)
                self._failed.append(str(err))

        produce_waiting(self.producer, self.topic, key=key, value=value, on_delivery=on_delivery)

    def latest_positions(
        self, wanted: Callable[[bytes], _Key | None], timeout_s: float
    ) -> Iterator[tuple[_Key, dict[str, Any]]]:
        """``(wanted(key), record)`` of the newest source-offset record of every key that
        ``wanted`` maps to something other than None (tombstones and undecodable records
        skipped, the latter logged)."""
        for key, value in read_latest(self.cfg, self.topic, timeout_s).items():
            if value is None:
                continue  # reset (tombstone)
            parsed = wanted(key)
            if parsed is None:
                continue  # another kind of record
            try:
                name, record = self.codec.decode(value)
            except UndecodableRecord as exc:
                logger.warning("offsets topic: %s: %s", key, exc)
                continue
            if name == SOURCE_OFFSET and isinstance(record.get("last_open_time"), int):
                yield parsed, record

    def flush(self, timeout_s: float = 30.0) -> int:
        remaining: int = self.producer.flush(timeout_s)
        if self._failed:
            raise OffsetStoreError(f"{self.what}s failed: {self._failed[0]}")
        return remaining

    def acknowledge(self, timeout_s: float = 30.0) -> None:
        """Wait until Kafka acknowledged every write so far (a mark another service must be
        able to read before this one reads theirs); OffsetStoreError when it did not."""
        remaining = self.flush(timeout_s)
        if remaining:
            raise OffsetStoreError(
                f"{remaining} records to {self.topic} not acknowledged within {timeout_s:.0f}s"
            )


class SourceOffsetStore(OffsetsTopicWriter):
    """Load and commit per-pair source offsets on the compacted offsets topic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # OffsetsTopicWriter's
        super().__init__(*args, **kwargs)
        self._committed: dict[tuple[str, Pair], int] = {}

    def load(self, service: str, timeout_s: float = 30.0) -> dict[Pair, int]:
        """Read the topic from the beginning to its high watermarks; latest value per key."""
        return self.load_services((service,), timeout_s)[service]

    def load_services(
        self, services: Sequence[str], timeout_s: float = 30.0
    ) -> dict[str, dict[Pair, int]]:
        """``load`` for several services in one read of the topic: service → pair → value."""
        found: dict[str, dict[Pair, int]] = {service: {} for service in services}

        def wanted(key: bytes) -> tuple[str, Pair] | None:
            parsed = parse_offset_key(key)
            return parsed if parsed is not None and parsed[0] in found else None

        for (service, pair), record in self.latest_positions(wanted, timeout_s):
            found[service][pair] = int(record["last_open_time"])
        for service, positions in found.items():
            for pair, position in positions.items():
                self._committed[(service, pair)] = position
        return found

    def commit(self, service: str, pair: Pair, last_open_time: int) -> None:
        """Record that every record of ``pair`` up to ``last_open_time`` is in Kafka.

        Call only with a position the publisher's delivery reports confirmed.
        """
        value = self.codec.encode(
            SOURCE_OFFSET,
            {
                "symbol": pair.symbol,
                "interval": pair.interval,
                "last_open_time": last_open_time,
                "updated_at": self._clock_ms(),
            },
        )
        self._produce(offset_key(service, pair), value)
        self._committed[(service, pair)] = last_open_time

    def committed(self, service: str, pair: Pair) -> int | None:
        return self._committed.get((service, pair))

    def commit_acked(self, service: str, publisher: KlinePublisher) -> int:
        """Commit every pair whose acknowledged position moved past its stored offset."""
        n = 0
        for pair, position in publisher.acked().items():
            stored = self._committed.get((service, pair))
            if stored is None or position > stored:
                self.commit(service, pair, position)
                n += 1
        if n:
            self.producer.poll(0)
        return n

    def reset(self, service: str, pair: Pair) -> None:
        """Delete the pair's offset (a tombstone): the next start begins from scratch."""
        self.producer.produce(self.topic, key=offset_key(service, pair), value=None)
        self._committed.pop((service, pair), None)
