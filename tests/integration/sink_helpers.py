"""Shared helpers for the sink, replay and tap integration tests (real Kafka, real PostgreSQL)."""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from qryptify import db
from qryptify.avro import KlineCodec
from qryptify.config import Config, KafkaConfig
from qryptify.dlq import DlqWriter
from qryptify.kafka import TopicPartition, make_consumer, make_producer, produce_waiting
from qryptify.kline import Event, Kline
from qryptify.pairs import interval_ms
from qryptify.sink.batch import FlushPolicy
from qryptify.sink.loop import LoopSettings, OffsetCommits, SinkLoop
from tests.conftest import T0, make_kline
from tests.support.processes import TIMEOUT_FACTOR, spawn

Row = tuple[Any, ...]


def series(
    pairs: Sequence[tuple[str, str]], count: int, *, start: int = T0, tag: str = ""
) -> list[Kline]:
    """``count`` consecutive 1m-grid candles per pair, values varying by index (and tag)."""
    out: list[Kline] = []
    for symbol, interval in pairs:
        step = interval_ms(interval)
        for i in range(count):
            base = 100 + i % 50
            out.append(
                make_kline(
                    symbol,
                    interval,
                    start + i * step,
                    open=f"{base}.5",
                    high=f"{base + 2}.25",
                    low=f"{base - 1}.125",
                    close=f"{base + 1}{tag or '.0'}",
                    trades=i,
                )
            )
    return out


def produce(kafka: KafkaConfig, events: Iterable[Event], codec: KlineCodec | None = None) -> int:
    codec = codec or KlineCodec()
    items = [(e.key.encode(), codec.encode(e)) for e in events]
    return produce_raw(kafka, items)


def produce_raw(kafka: KafkaConfig, items: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    producer = make_producer(kafka)
    n = 0
    for key, value in items:
        produce_waiting(producer, kafka.topic, key=key, value=value)
        n += 1
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} records not delivered"
    return n


def expected_table(events: Iterable[Event]) -> dict[tuple[str, str, int], Kline]:
    """The table a correct sink builds: per key the last produced (= highest offset) candle."""
    best: dict[tuple[str, str, int], Kline] = {}
    for e in events:
        if isinstance(e, Kline):
            best[(e.symbol, e.interval, e.open_time)] = e
    return best


def as_row(k: Kline) -> Row:
    return (
        k.symbol, k.interval, k.open_time, float(k.open), float(k.high), float(k.low),
        float(k.close), float(k.volume), k.close_time, float(k.quote_volume), k.trades,
        float(k.taker_buy_base), float(k.taker_buy_quote),
    )  # fmt: skip


def expected_rows(events: Iterable[Event]) -> list[Row]:
    return sorted(as_row(k) for k in expected_table(events).values())


_ROWS = """
SELECT symbol, interval, (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume,
       (extract(epoch FROM close_time) * 1000)::bigint, quote_asset_volume, number_of_trades,
       taker_buy_base, taker_buy_quote
FROM candlesticks ORDER BY symbol, interval, ts
"""


def table_rows(dsn: str) -> list[Row]:
    with db.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(_ROWS).fetchall()]


def sync_state(dsn: str) -> dict[tuple[str, str], int]:
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, interval, (extract(epoch FROM last_closed_ts) * 1000)::bigint"
            " FROM sync_state"
        ).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def row_count(dsn: str) -> int:
    with db.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM candlesticks").fetchone()
    return int(row[0]) if row else 0


def high_watermarks(kafka: KafkaConfig, topic: str | None = None) -> dict[int, int]:
    consumer = make_consumer(kafka, "qryptify-test-watermarks")
    try:
        name = topic or kafka.topic
        meta = consumer.list_topics(name, timeout=10).topics[name]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def committed(kafka: KafkaConfig, group: str) -> dict[int, int]:
    """Committed offset per partition of the topic (-1001 = none yet)."""
    consumer = make_consumer(kafka, group)
    try:
        parts = consumer.list_topics(kafka.topic, timeout=10).topics[kafka.topic].partitions
        tps = consumer.committed([TopicPartition(kafka.topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def read_topic(kafka: KafkaConfig, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every record of ``topic`` (waits for at least ``expected``)."""
    consumer = make_consumer(kafka, f"qryptify-test-read-{time.monotonic_ns()}")
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s * TIMEOUT_FACTOR
    try:
        while time.monotonic() < deadline and len(out) < expected:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    out.append(msg)
        # A little longer, to see records that should not be there.
        for msg in consumer.consume(num_messages=1000, timeout=1.0):
            if msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def make_loop(
    cfg: Config,
    stop: threading.Event,
    *,
    group: str | None = None,
    dsn: str | None = None,
    batch_size: int = 500,
    max_latency_ms: int = 100,
    when_idle: bool = True,
    done: Callable[[SinkLoop], bool] | None = None,
    hook: Callable[[str, int], None] | None = None,
) -> SinkLoop:
    target = dsn or cfg.db.dsn.get_secret_value()
    commits = OffsetCommits()
    return SinkLoop(
        make_consumer(cfg.kafka, group or cfg.sink.group_id, on_commit=commits.record),
        lambda: db.connect(target),
        LoopSettings(
            topic=cfg.kafka.topic,
            policy=FlushPolicy(batch_size, max_latency_ms, when_idle),
            retry_initial_s=0.2,
            retry_max_s=2.0,
        ),
        stop,
        dlq=DlqWriter(make_producer(cfg.kafka), cfg.kafka.dlq_topic),
        hook=hook,
        done=done,
        commits=commits,
    )


class LoopThread:
    """A SinkLoop running in a thread of the test process (stop() = SIGTERM's effect)."""

    def __init__(self, loop: SinkLoop) -> None:
        self.loop = loop
        self.result: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sink-loop", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.loop.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> LoopThread:
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 60) -> int:
        self.loop.stop.set()
        self.thread.join(timeout_s * TIMEOUT_FACTOR)
        if self.thread.is_alive():  # show where it is stuck
            faulthandler.dump_traceback(sys.stderr, all_threads=True)
        assert not self.thread.is_alive(), "sink loop did not stop"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def nonempty_watermarks(kafka: KafkaConfig) -> dict[int, int]:
    return {p: hw for p, hw in high_watermarks(kafka).items() if hw > 0}


def committed_nonempty(kafka: KafkaConfig, group: str) -> dict[int, int]:
    """Committed offsets of the partitions that hold records (empty ones never get one)."""
    marks = nonempty_watermarks(kafka)
    done = committed(kafka, group)
    return {p: done.get(p, -1) for p in marks}


def caught_up(kafka: KafkaConfig, group: str) -> Callable[[], bool]:
    marks = high_watermarks(kafka)

    def check() -> bool:
        done = committed(kafka, group)
        return all(done.get(p, -1) >= hw for p, hw in marks.items() if hw > 0)

    return check


def write_config(path: Path, cfg: Config, **sink: Any) -> Path:
    data = {
        "db": {"dsn": cfg.db.dsn.get_secret_value()},
        "kafka": cfg.kafka.model_dump(mode="json"),
        "sink": cfg.sink.model_dump(mode="json") | sink,
        "metrics": {"port": 0},
        "log": {"level": "INFO", "format": "human"},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def start_sink(
    config: Path, log: Path, env: dict[str, str] | None = None, module: str = "services.sink"
) -> subprocess.Popen[bytes]:
    """``python -m services.sink --config PATH`` (or another ``module`` running the sink, such
    as ``tests.support.sink_crash``) as a real subprocess, output to ``log``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QRYPTIFY_")}
    environ.update(env or {})
    return spawn(module, ["--config", str(config)], log, env=environ, append=True)


def topic_klines(kafka: KafkaConfig, expected: int) -> list[tuple[int, int, Kline]]:
    """``(partition, offset, kline)`` for every decodable kline record of the topic."""
    codec = KlineCodec()
    out: list[tuple[int, int, Kline]] = []
    for msg in read_topic(kafka, kafka.topic, expected):
        try:
            event = codec.decode(msg.value())
        except ValueError:
            continue
        if isinstance(event, Kline):
            out.append((msg.partition(), msg.offset(), event))
    return out


def assert_offsets_not_ahead(
    kafka: KafkaConfig, group: str, dsn: str, records: Sequence[tuple[int, int, Kline]]
) -> dict[int, int]:
    """Invariant 2 after a crash: every record below a committed offset is in the table (with
    its value or a later one of the same key), and the table holds nothing that was not sent.
    Returns the committed offsets."""
    done = committed(kafka, group)
    rows = {(r[0], r[1], r[2]): r for r in table_rows(dsn)}
    versions: dict[tuple[str, str, int], list[tuple[int, int, Kline]]] = {}
    for partition, offset, k in sorted(records, key=lambda r: (r[0], r[1])):
        versions.setdefault((k.symbol, k.interval, k.open_time), []).append((partition, offset, k))
    for key, vs in versions.items():
        partition = vs[0][0]
        covered = [i for i, (_, offset, _) in enumerate(vs) if offset < done.get(partition, -1)]
        row = rows.get(key)
        if covered:
            assert row is not None, f"offset {done[partition]} committed but {key} not in the table"
            allowed = [as_row(k) for _, _, k in vs[covered[-1] :]]
            assert row in allowed, f"{key}: table holds an older value than the committed offset"
        if row is not None:
            assert row in [as_row(k) for _, _, k in vs], f"{key}: table holds a value never sent"
    assert set(rows) <= set(versions), "table holds keys never sent"
    return done
