"""The Kafka edge: client construction, topic creation, keys. The only confluent_kafka importer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)

from qryptify.config import KafkaConfig
from qryptify.errors import KafkaSetupError, KafkaUnavailable, NoDataYet
from qryptify.logs import LIBRDKAFKA_LOGGER

logger = logging.getLogger(__name__)
#: librdkafka's own log lines (connection failures, ...) go through the project's logging:
#: level-filtered, secrets scrubbed, the same line repeated at most once a minute.
LIBRDKAFKA_LOG = logging.getLogger(LIBRDKAFKA_LOGGER)

__all__ = [
    "Consumer",
    "KafkaError",
    "KafkaException",
    "Message",
    "Producer",
    "TopicPartition",
    "client_settings",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "produce_waiting",
]

#: How long to serve delivery reports before trying again when the producer's queue is full.
QUEUE_FULL_POLL_S = 0.05


def client_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings shared by every client: brokers and security."""
    settings: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "client.id": cfg.client_id,
        "security.protocol": cfg.security_protocol,
        "logger": LIBRDKAFKA_LOG,
    }
    if cfg.sasl_mechanism:
        settings["sasl.mechanism"] = cfg.sasl_mechanism
    if cfg.sasl_username is not None:
        settings["sasl.username"] = cfg.sasl_username
    if cfg.sasl_password is not None:
        settings["sasl.password"] = cfg.sasl_password.get_secret_value()
    for key, value in (
        ("ssl.ca.location", cfg.ssl_ca_location),
        ("ssl.certificate.location", cfg.ssl_certificate_location),
        ("ssl.key.location", cfg.ssl_key_location),
    ):
        if value:
            settings[key] = value
    return settings


def _log_client_error(err: KafkaError) -> None:
    # librdkafka reports transient broker trouble here and retries by itself.
    if err.fatal():
        logger.error("kafka fatal error: %s", err.str())
    else:
        LIBRDKAFKA_LOG.warning("kafka: %s", err.str())


def make_producer(cfg: KafkaConfig, **overrides: Any) -> Producer:
    """Idempotent (acks=all), compressed producer; partitioner compatible with Java clients."""
    settings = client_settings(cfg) | {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": cfg.compression,
        "linger.ms": cfg.linger_ms,
        "partitioner": "murmur2_random",
        "error_cb": _log_client_error,
    }
    settings.update(overrides)
    return Producer(settings)


def produce_waiting(
    producer: Producer,
    topic: str,
    *,
    on_full: Callable[[], None] | None = None,
    **record: Any,
) -> None:
    """``producer.produce(topic, **record)``, waiting while librdkafka's local queue is full
    (``BufferError``): serving delivery reports is what frees it, so poll and try again.
    ``on_full`` replaces the poll (a caller that also times the wait)."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            if on_full is None:
                producer.poll(QUEUE_FULL_POLL_S)
            else:
                on_full()


def make_consumer(cfg: KafkaConfig, group_id: str, **overrides: Any) -> Consumer:
    """Manual-commit consumer with cooperative rebalancing."""
    settings = client_settings(cfg) | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # librdkafka prefetches up to 100k messages per partition / 64 MB of payload by default,
        # and each small record costs about 1 KB more than its payload in its queue: ~240 MB of
        # resident memory for a sink catching up. 2,000 per partition / 2 MB keep it near 130 MB.
        "queued.min.messages": 2_000,
        "queued.max.messages.kbytes": 2_048,
        # A fetch that finds the queue above those marks is postponed by this long (librdkafka's
        # default: 1 s), so a small queue emptied far faster than it was refilled: a sink on a
        # 1M-kline backlog wrote 78k rows/s, 200k with 5 ms. Only a full queue is backed off, so
        # a live consumer (its queue near empty) does no extra work.
        "fetch.queue.backoff.ms": 5,
        "error_cb": _log_client_error,
    }
    settings.update(overrides)
    return Consumer(settings)


def replication(configured: int, brokers: int) -> tuple[int, int | None]:
    """(replication factor, min.insync.replicas) for new topics on a cluster of ``brokers``:
    with three or more, at least 3 copies of which 2 must acknowledge (``acks=all`` then
    survives one broker down without losing an acknowledged record); otherwise the
    configured factor (min.insync.replicas left to the broker: None)."""
    if brokers >= 3:
        rf = min(max(configured, 3), brokers)
        return rf, 2
    return configured, None


def topic_specs(cfg: KafkaConfig, brokers: int = 1) -> list[NewTopic]:
    """The three topics and their contracts (DESIGN.md "Contracts")."""
    rf, min_isr = replication(cfg.replication_factor, brokers)
    durable = {} if min_isr is None else {"min.insync.replicas": str(min_isr)}
    return [
        # Full history forever: replay needs every record; compaction by pair would destroy it.
        NewTopic(
            cfg.topic,
            cfg.partitions,
            rf,
            config={
                "cleanup.policy": "delete",
                "retention.ms": "-1",
                "message.timestamp.type": "CreateTime",
                **durable,
            },
        ),
        # Source offsets: only the latest per key matters.
        NewTopic(cfg.offsets_topic, 1, rf, config={"cleanup.policy": "compact", **durable}),
        NewTopic(
            cfg.dlq_topic,
            1,
            rf,
            config={"cleanup.policy": "delete", "retention.ms": "-1", **durable},
        ),
    ]


def ensure_topics(
    cfg: KafkaConfig, timeout_s: float = 30.0, specs: Iterable[NewTopic] | None = None
) -> None:
    """Create the topics that do not exist yet; existing ones are left alone."""
    admin = AdminClient(client_settings(cfg))
    try:
        meta = admin.list_topics(timeout=timeout_s)
        existing = meta.topics
    except KafkaException as exc:  # broker down or unreachable: a clear error, not a traceback
        err = exc.args[0] if exc.args else None
        reason = err.str() if isinstance(err, KafkaError) else str(exc)
        raise KafkaSetupError(f"cannot list topics on {cfg.bootstrap_servers}: {reason}") from None
    wanted = list(specs) if specs is not None else topic_specs(cfg, len(meta.brokers))
    missing = [t for t in wanted if t.topic not in existing]
    if not missing:
        return
    futures = admin.create_topics(missing, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            logger.info("created topic %s", name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaSetupError(f"cannot create topic {name}: {exc}") from None


def topic_partitions(client: Any, topic: str, bootstrap: str, timeout_s: float = 10.0) -> list[int]:
    """The partitions of ``topic``; KafkaUnavailable (one line) when the brokers do not answer,
    NoDataYet when the topic does not exist."""
    try:
        meta = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        reason = err.str() if isinstance(err, KafkaError) else str(exc)
        raise KafkaUnavailable(f"{bootstrap}: {reason}") from None
    if meta is None or meta.error is not None:
        raise NoDataYet(
            f"topic {topic} does not exist on {bootstrap} (nothing published yet: start the "
            "pipeline with `make up`, or check kafka.topic)"
        )
    return sorted(meta.partitions)


def headers_dict(msg: Message) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for header in msg.headers() or []:
        name, value = header[0], header[1]
        if isinstance(value, bytes):
            found[str(name)] = value
    return found


def high_watermarks(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """Partition → high watermark (next offset to be written)."""
    meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaSetupError(f"topic {topic} not found")
    marks: dict[int, int] = {}
    for partition in meta.partitions:
        _low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout_s
        )
        marks[partition] = high
    return marks


def committed_offsets(
    consumer: Consumer, topic: str, partitions: Iterable[int], timeout_s: float = 10.0
) -> Mapping[int, int]:
    tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout_s)
    return {tp.partition: tp.offset for tp in tps}
