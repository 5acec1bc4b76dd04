"""Helpers for the backfiller end-to-end tests: config files, service subprocesses, reading
the topic, waiting for the sink, comparing the database with the simulator's truth.

No assertion here is about timing; waits are hang guards scaled by
``QRYPTIFY_TEST_TIMEOUT_FACTOR``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from qryptify import db
from qryptify.archive_ledger import ArchiveLedger
from qryptify.avro import KlineCodec
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest
from qryptify.config import Config, KafkaConfig, build_config
from qryptify.kafka import TopicPartition, make_consumer, make_producer
from qryptify.kline import Event
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair, align_open
from qryptify.publish import KlinePublisher
from services.backfiller.run import Backfiller
from sim.check import PairReport, compare_db_with_truth, format_report
from sim.symbols import parse_time_ms
from tests.integration.conftest import unique
from tests.support.processes import TIMEOUT_FACTOR as FACTOR
from tests.support.processes import Service, spawn

#: The simulator's clock: started here and (nearly) frozen, so "closed" stays put during a test.
SIM_NOW = parse_time_ms("2024-07-10T12:34:30Z")
FROZEN = 1e-6


class Sim(Protocol):
    @property
    def url(self) -> str: ...

    def now_ms(self) -> int: ...


@dataclass
class BackfillEnv:
    """One simulator, one topic set, one database; writes configs and starts services."""

    sim: Sim
    kafka: KafkaConfig
    dsn: str
    tmp: Path
    pairs: Sequence[str]
    start_date: str = "2024-04-01"
    archive: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    sink_group: str = field(default_factory=lambda: unique("sink"))

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "pairs": list(self.pairs),
            "rest": {"endpoint": self.sim.url, "timeout_s": 30},
            "archive": {
                "endpoint": self.sim.url,
                "enabled": self.archive,
                "cache_dir": str(self.tmp / "archive-cache"),
            },
            "db": {"dsn": self.dsn},
            "kafka": self.kafka.model_dump(mode="json"),
            "backfill": {"start_date": self.start_date, "exit_when_done": True},
            "sink": {"group_id": self.sink_group, "max_latency_ms": 100},
            "metrics": {"port": 0},
            "log": {"level": "INFO", "format": "human"},
        }
        for section, values in self.extra.items():
            doc[section] = {**doc.get(section, {}), **values}
        return doc

    def config(self) -> Config:
        return build_config(self.doc())

    def config_path(self) -> Path:
        path = self.tmp / "config.yaml"
        path.write_text(yaml.safe_dump(self.doc()))
        return path

    def start(self, module: str) -> Service:
        log = self.tmp / f"{module.rsplit('.', 1)[-1]}-{len(self.services)}.log"
        service = Service(module, spawn(module, ["--config", str(self.config_path())], log), log)
        self.services.append(service)
        return service

    def cleanup(self) -> None:
        for service in self.services:
            if service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait()

    def backfiller(self, transport: httpx.AsyncBaseTransport | None = None) -> Backfiller:
        """An in-process backfiller on this environment (optionally a recording transport)."""
        cfg = self.config()
        producer = make_producer(cfg.kafka)
        return Backfiller(
            cfg,
            rest=BinanceRest(cfg.rest, transport=transport),
            publisher=KlinePublisher(producer, cfg.kafka.topic),
            offsets=SourceOffsetStore(cfg.kafka, producer),
            archive=ArchiveClient(cfg.archive) if cfg.archive.enabled else None,
            ledger=ArchiveLedger(cfg.kafka, producer) if cfg.archive.enabled else None,
            connect_db=functools.partial(db.connect, self.dsn),
        )

    def topic_size(self) -> int:
        consumer = make_consumer(self.kafka, unique("size"))
        try:
            meta = consumer.list_topics(self.kafka.topic, timeout=10).topics[self.kafka.topic]
            return sum(
                consumer.get_watermark_offsets(TopicPartition(self.kafka.topic, p), timeout=10)[1]
                for p in meta.partitions
            )
        finally:
            consumer.close()

    def sink_caught_up(self) -> bool:
        return group_caught_up(self.kafka, self.kafka.topic, self.sink_group)

    def check(self, pairs: Sequence[str] | None = None) -> list[PairReport]:
        """Row-by-row comparison per pair over ``[start_date, last closed candle]``."""
        now = self.sim.now_ms()
        start = parse_time_ms(self.start_date)
        reports: list[PairReport] = []
        for text in pairs or self.pairs:
            pair = Pair(*text.split("/"))
            report = compare_db_with_truth(
                self.dsn, self.sim.url, [pair], start, align_open(pair.interval, now)
            )
            print(format_report(report, details=3))
            reports.extend(report.pairs)
        return reports


def group_caught_up(kafka: KafkaConfig, topic: str, group: str) -> bool:
    """``group`` has committed every record on ``topic`` (up to the high watermarks)."""
    consumer = make_consumer(kafka, group)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        for tp in consumer.committed(parts, timeout=10):
            high = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def read_topic(kafka: KafkaConfig, topic: str | None = None) -> list[tuple[int, int, Event]]:
    """Every event on the topic as ``(partition, offset, event)``, up to the high watermarks."""
    name = topic or kafka.topic
    codec = KlineCodec()
    consumer = make_consumer(kafka, unique("reader"), **{"enable.partition.eof": True})
    out: list[tuple[int, int, Event]] = []
    try:
        meta = consumer.list_topics(name, timeout=10).topics[name]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(name, p, 0) for p in ends])
        deadline = time.monotonic() + 120 * FACTOR
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                partition, offset = msg.partition(), msg.offset()
                if partition is None or offset is None:
                    continue
                if msg.error() is not None:
                    if offset >= ends.get(partition, 0):
                        ends.pop(partition, None)
                    continue
                value = msg.value()
                if value is not None:
                    out.append((partition, offset, codec.decode(value)))
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
    finally:
        consumer.close()
    return out


def summary_values(log_text: str) -> dict[str, str]:
    """``key=value`` pairs of the last ``backfill summary:`` line of a service log."""
    lines = [line for line in log_text.splitlines() if "backfill summary:" in line]
    assert lines, "no backfill summary in the log"
    values: dict[str, str] = {}
    for token in lines[-1].split("backfill summary:", 1)[1].split():
        key, sep, value = token.partition("=")
        if sep:
            values[key] = value
    return values


@dataclass
class Sent:
    path: str
    params: dict[str, str]
    started: float
    finished: float
    status: int
    retry_after: float | None


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real network transport, recording every request's time and answer."""

    def __init__(self, max_connections: int = 16) -> None:
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=max_connections))
        self.sent: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        response = await self.inner.handle_async_request(request)
        retry = response.headers.get("Retry-After")
        self.sent.append(
            Sent(
                request.url.path,
                dict(request.url.params),
                started,
                time.monotonic(),
                response.status_code,
                float(retry) if retry else None,
            )
        )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
