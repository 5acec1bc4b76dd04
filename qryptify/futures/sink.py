"""The futures sink path: consume the futures topic, write ``funding_rates``, the price kline
tables, their exchange-confirmed empty ranges and the per-kind pointer in one transaction,
then (and only then) commit the offsets.

``stage`` is the pure middle (records → rows, DLQ entries, offsets); ``FuturesSink`` is the
I/O loop the sink service runs beside the klines loop when ``futures.funding_rates`` is on.
It runs one batch at a time: consume, write (retried with backoff while the database is
down, partitions paused but the consumer still polling, committing nothing), send DLQ entries,
commit. A crash anywhere before the commit re-delivers the batch, and the upsert makes the
second write a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from qryptify import db
from qryptify.avro import AvroCodec
from qryptify.dlq import DlqWriter
from qryptify.errors import InvalidFuturesRecord, InvalidKline, UndecodableRecord
from qryptify.futures import records as futures_records
from qryptify.futures.funding import FundingRate
from qryptify.futures.price import PriceEmptyRange, PriceKline
from qryptify.futures.store import write_futures
from qryptify.metrics import Health
from qryptify.retry import backoff
from qryptify.sink.batch import DlqEntry, RawRecord, offsets_to_commit

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FuturesBatch:
    funding: list[FundingRate]  # one per (symbol, funding time): the highest offset's
    prices: list[PriceKline]  # one per (kind, symbol, interval, open time): likewise
    dlq: list[DlqEntry]
    offsets: dict[tuple[str, int], int]  # next offset to read, per partition
    #: one per (kind, symbol, interval, start): the widest; the batch's candles of the series
    #: inside one that came before it are dropped (the klines' rule, ``qryptify.sink.batch``)
    empty: list[PriceEmptyRange] = field(default_factory=list)


def stage(records: Sequence[RawRecord], codec: AvroCodec) -> FuturesBatch:
    """Decode and check one batch. Never raises for bad input: every record becomes a row or
    a DLQ entry, and every one is covered by the offsets."""
    rows: dict[tuple[str, int], FundingRate] = {}
    prices: dict[tuple[str, str, str, int], tuple[int, PriceKline]] = {}
    empty: dict[tuple[str, str, str, int], PriceEmptyRange] = {}
    dlq: list[DlqEntry] = []
    for n, r in enumerate(records):
        value = r.value()
        try:
            if value is None:
                raise UndecodableRecord("null value (tombstone)")
            f = futures_records.validate(futures_records.decode(codec, value))
            key = r.key()
            if key is not None and key != f.key.encode():
                raise UndecodableRecord(f"record key {key!r:.60} is not {f.key!r}")
            # Records arrive in offset order: the last one per key wins.
            if isinstance(f, PriceKline):
                prices[(f.kind, f.symbol, f.interval, f.open_time)] = (n, f)
            elif isinstance(f, PriceEmptyRange):
                e = f.range
                ident = (f.kind, e.symbol, e.interval, e.start_time)
                have = empty.get(ident)
                if have is None or e.end_time >= have.range.end_time:
                    empty[ident] = f
                # Candles of the series inside it that came before it: the exchange has since
                # confirmed those open times empty.
                doomed = [
                    slot
                    for slot, (m, _) in prices.items()
                    if slot[:3] == ident[:3] and e.start_time <= slot[3] < e.end_time and m < n
                ]
                for slot in doomed:
                    del prices[slot]
            else:
                rows[(f.symbol, f.funding_time)] = f
        except (UndecodableRecord, InvalidFuturesRecord, InvalidKline, ValueError) as exc:
            dlq.append(
                DlqEntry(
                    topic=r.topic() or "",
                    partition=r.partition() or 0,
                    offset=r.offset() or 0,
                    key=r.key(),
                    value=value,
                    reason=str(exc),
                    error_class=type(exc).__name__,
                )
            )
    return FuturesBatch(
        list(rows.values()),
        [k for _, k in prices.values()],
        dlq,
        offsets_to_commit(records),
        list(empty.values()),
    )


class FuturesSink:
    """Runs until ``stop`` is set; returns 0."""

    def __init__(
        self,
        consumer: Consumer,
        connect: Callable[[], db.Connection],
        topic: str,
        stop: threading.Event,
        *,
        dlq: DlqWriter | None = None,
        codec: AvroCodec | None = None,
        health: Health | None = None,
        batch_size: int = 5000,
        until: dict[int, int] | None = None,
    ) -> None:
        self.consumer = consumer
        self.connect = connect
        self.topic = topic
        self.stop = stop
        self.dlq = dlq
        self.codec = codec or AvroCodec()
        self.health = health
        self.batch_size = batch_size
        self.written = 0
        self.records = 0
        #: Replay: per partition, the high watermark to reach before returning (None: follow).
        self.until = until
        self.positions: dict[int, int] = {}
        self._conn: db.Connection | None = None
        self._paused = False

    def run(self) -> int:
        self.consumer.subscribe([self.topic])
        try:
            while not self.stop.is_set() and not self.caught_up():
                messages = self.consumer.consume(num_messages=self.batch_size, timeout=0.2)
                records: list[Any] = []
                for m in messages:
                    if m.error() is not None:
                        logger.warning("futures consumer: %s", m.error())
                    else:
                        records.append(m)
                if records and not self._handle(stage(records, self.codec)):
                    break  # stopped while the database was down: nothing committed
        finally:
            if self._conn is not None:
                self._conn.close()
            self.consumer.close()
        return 0

    def _wait_paused(self, seconds: float) -> bool:
        """Wait ``seconds`` with every assigned partition paused, still polling so the group
        keeps us (``max.poll.interval.ms``); False when a stop was requested."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop.is_set():
                return False
            assigned = self.consumer.assignment()  # again: a rebalance may have added some
            if assigned:
                self.consumer.pause(assigned)
                self._paused = True
            for m in self.consumer.consume(num_messages=1, timeout=min(0.5, seconds)):
                topic, partition, offset = m.topic(), m.partition(), m.offset()
                if m.error() is None and topic and partition is not None and offset is not None:
                    # Fetched before the pause took effect: read it again after the outage.
                    self.consumer.seek(TopicPartition(topic, partition, offset))
        return not self.stop.is_set()

    def _resume_all(self) -> None:
        if self._paused:
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.resume(assigned)
            self._paused = False
            if self.health is not None:
                self.health.set(True, "futures writes resumed")

    def caught_up(self) -> bool:
        """Replay mode: every partition committed up to its mark (never in follow mode)."""
        if self.until is None:
            return False
        return all(self.positions.get(p, 0) >= high for p, high in self.until.items())

    def _handle(self, batch: FuturesBatch) -> bool:
        delays = backoff()
        while True:
            try:
                if self._conn is None:
                    self._conn = self.connect()
                self.written += write_futures(self._conn, batch.funding, batch.prices, batch.empty)
                break
            except Exception as exc:
                if not db.is_database_error(exc):
                    raise
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                delay = next(delays)
                logger.warning("futures write failed, retrying in %.1fs: %s", delay, exc)
                if self.health is not None:
                    self.health.set(False, f"futures write failed: {exc}")
                if not self._wait_paused(delay):
                    return False
        self._resume_all()
        if batch.dlq:
            if self.dlq is None:
                raise RuntimeError(f"{len(batch.dlq)} bad futures records and no DLQ writer")
            for entry in batch.dlq:
                logger.warning("futures record to DLQ: %s", entry.reason)
            self.dlq.send(batch.dlq)
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Partitions revoked while we wrote (a rebalance): their new owner reads these
            # records again and rewrites them as no-ops.
            logger.warning("futures offset commit failed (records will be redelivered): %s", exc)
            return True
        self.records += len(batch.funding) + len(batch.prices) + len(batch.empty) + len(batch.dlq)
        for (_topic, partition), offset in batch.offsets.items():
            self.positions[partition] = max(self.positions.get(partition, 0), offset)
        return True
