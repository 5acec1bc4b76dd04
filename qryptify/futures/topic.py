"""The futures topic: its spec, publishing records with acknowledgement, and the funding
source offsets (the resume points of the funding series) on the offsets topic."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from qryptify.avro import SOURCE_OFFSET, AvroCodec
from qryptify.config import Config
from qryptify.errors import FuturesPublishFailed
from qryptify.futures.funding import KIND
from qryptify.futures.records import FuturesRecord, encode
from qryptify.kafka import produce_waiting
from qryptify.offsets import OffsetsTopicWriter

KEY_SUFFIX = f"|{KIND}".encode()


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
        produce_waiting(
            producer, topic, key=f.key.encode(), value=encode(codec, f), on_delivery=delivered
        )
    remaining = producer.flush(60)
    if remaining or failures:
        raise FuturesPublishFailed(
            f"{remaining} futures records unacknowledged; {'; '.join(failures[:3])}"
        )


class FundingOffsets(OffsetsTopicWriter):
    """Funding source offsets on the compacted offsets topic, like the candles': key
    ``service|SYMBOL|funding``, value the ``SourceOffset`` record (interval ``funding``,
    ``last_open_time`` = the newest funding time Kafka acknowledged). The kline source
    offsets skip these keys (``funding`` is not an interval)."""

    what = "funding offset commit"

    def load(self, service: str, timeout_s: float = 30.0) -> dict[str, int]:
        found: dict[str, int] = {}
        prefix = f"{service}|".encode()

        def wanted(key: bytes) -> bytes | None:
            return key if key.startswith(prefix) and key.endswith(KEY_SUFFIX) else None

        for _key, record in self.latest_positions(wanted, timeout_s):
            found[str(record["symbol"])] = int(record["last_open_time"])
        return found

    def commit(self, service: str, symbol: str, funding_time: int) -> None:
        """Call only with a funding time whose record (and every earlier one) Kafka
        acknowledged."""
        if "|" in service or not service:
            raise ValueError(f"service name {service!r} must be non-empty and contain no '|'")
        value = self.codec.encode(
            SOURCE_OFFSET,
            {
                "symbol": symbol,
                "interval": KIND,
                "last_open_time": funding_time,
                "updated_at": self._clock_ms(),
            },
        )
        self._produce(f"{service}|{symbol}".encode() + KEY_SUFFIX, value)
