"""The consume → write → commit loop shared by the sink service and ``qryptify replay``.

One thread sequences everything (arroyo-style): poll records and stage them as COPY rows at
once (pure, ``qryptify.sink.batch``); at a flush, send undecodable/invalid records to the DLQ
and wait for their delivery, hand the rows to ONE writer thread for one PostgreSQL transaction
(``qryptify.db.write_rows``), and only after its COMMIT commit the batch's offsets (invariant 2).
At most one batch is being written while the next is consumed and staged, so decoding overlaps
the database round trip; batches are written strictly in order. The offset commit does not hold
up the next batch either: it is asynchronous (librdkafka sends commits in order) and its result
comes back through ``OffsetCommits``, the consumer's ``on_commit`` callback; a failed commit is
sent again (with the highest offsets the database holds, so it never goes backwards) while the
partition is ours, and otherwise its next owner re-reads the records. Rebalances and shutdown
commit synchronously. A consumer built without that callback gets synchronous commits.
Offsets are never ahead of the database; a crash anywhere re-delivers at most the last batches,
which the idempotent upsert rewrites as no-ops.
Each step's wall and CPU time is counted (``qryptify.sink.timing``).

Batching: a flush happens when ``batch_size`` records are held, when the oldest has waited
``max_latency_ms``, or at once when the consumer has nothing more queued and the writer is
idle (live candles are written as they come; bulk replays fill large batches while the
previous one is written).

Failure behaviour:
- database (or DLQ) failing: pause every assigned partition, retry the same batch with backoff
  while still polling (heartbeats, rebalances), commit nothing; resume once a write succeeds.
- partitions revoked: flush and commit what is held before giving them up; if the database is
  down at that moment, drop their records uncommitted (the next owner reads them again).
- partitions lost: drop their records, commit nothing.
- stop requested (SIGTERM): finish the batch, commit, return 0.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from qryptify import db
from qryptify.avro import KlineCodec
from qryptify.clock import Clock, MonotonicClock
from qryptify.dlq import DlqWriter
from qryptify.errors import KafkaFatal, is_retryable
from qryptify.kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from qryptify.kline import EmptyRange
from qryptify.metrics import Health
from qryptify.retry import backoff
from qryptify.sink.batch import (
    DlqEntry,
    FlushPolicy,
    Split,
    StagedBatch,
    TopicPartitionKey,
    write_bisecting,
)
from qryptify.sink.rows import CandleBatch
from qryptify.sink.timing import Mark, sink_step_times

logger = logging.getLogger(__name__)

#: librdkafka's logical offset "beginning of the partition" (RD_KAFKA_OFFSET_BEGINNING).
OFFSET_BEGINNING = -2

#: Fault hook points, in cycle order (tests crash the process at one of them).
HOOK_POINTS = (
    "after_poll",  # records consumed, nothing written yet
    "after_dlq",  # DLQ records delivered, database not written
    "before_db_commit",  # inside the transaction, every statement done, COMMIT not sent
    "after_db_commit",  # rows durable, offsets not committed
    "after_offset_commit",  # offsets committed
)
FaultHook = Callable[[str, int], None]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400)

ROWS_WRITTEN = Counter("qryptify_sink_rows_written", "Candles inserted or changed")
ROWS_UNCHANGED = Counter(
    "qryptify_sink_rows_unchanged", "Candles identical to the stored row (replays: no-op)"
)
EMPTY_RANGES = Counter("qryptify_sink_empty_ranges", "Empty-range events recorded")
EMPTIED = Counter(
    "qryptify_sink_candles_deleted", "Stored candles deleted inside exchange-confirmed empty ranges"
)
DLQ_RECORDS = Counter(
    "qryptify_sink_dlq_records", "Records sent to the DLQ (undecodable or invalid)", ["error_class"]
)
BATCH_RECORDS = Histogram(
    "qryptify_sink_batch_records",
    "Records per flushed batch",
    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000),
)
COMMIT_SECONDS = Histogram(
    "qryptify_sink_commit_seconds",
    "Time to commit a batch: the database transaction, then the Kafka offsets",
    ["stage"],
)
CONSUMER_LAG = Gauge(
    "qryptify_sink_consumer_lag", "High watermark minus committed offset", ["topic", "partition"]
)
CLOSE_TO_COMMIT = Histogram(
    "qryptify_sink_close_to_commit_seconds",
    "Candle close time to its offset commit (newest candle per pair and batch)",
    buckets=_LATENCY_BUCKETS,
)
INGEST_TO_COMMIT = Histogram(
    "qryptify_sink_ingest_to_commit_seconds",
    "Candle ingest time (read from the exchange) to its offset commit (newest per pair and batch)",
    buckets=_LATENCY_BUCKETS,
)
WRITE_FAILURES = Counter(
    "qryptify_sink_write_failures", "Failed attempts to write a batch (database or DLQ)"
)
PAUSED = Gauge("qryptify_sink_paused", "1 while partitions are paused for a failing database")


#: What one batch's write returned: the transactions' results, and the records the database
#: refused on their own (already delivered to the DLQ).
Written = tuple[list[db.WriteResult], list[DlqEntry]]


@dataclass(frozen=True, slots=True)
class _Inflight:
    """The batch the writer thread is writing; its offsets are committed after it returns."""

    split: Split
    batch_no: int
    future: Future[Written]
    started_s: float  # time.monotonic() at submission


class OffsetCommits:
    """The consumer's ``on_commit`` callback: librdkafka calls it inside ``consume()`` (on the
    loop's thread) with the result of every commit; the loop reads ``reports``. Pass
    ``on_commit=commits.record`` to ``make_consumer`` and ``commits=commits`` to the loop."""

    def __init__(self) -> None:
        #: (error or None, topic, partition, offset) per partition of each finished commit.
        self.reports: list[tuple[str | None, str, int, int]] = []

    def record(self, err: Any, partitions: Sequence[Any]) -> None:
        for tp in partitions:
            error = tp.error if tp.error is not None else err
            if (
                error is not None
                and getattr(error, "code", lambda: None)() == KafkaError._NO_OFFSET
            ):
                error = None  # nothing to commit: not a failure
            self.reports.append(
                (None if error is None else str(error), tp.topic, tp.partition, tp.offset)
            )


@dataclass(frozen=True, slots=True)
class FlushReport:
    records: int
    written: int
    unchanged: int
    empty_ranges: int
    dlq: int
    offsets: dict[TopicPartitionKey, int]


@dataclass(frozen=True, slots=True)
class LoopSettings:
    topic: str
    policy: FlushPolicy
    #: TimescaleDB per-transaction decompression limit to set (None: the server's setting).
    max_tuples_decompressed: int | None = None
    retry_initial_s: float = 0.5
    retry_max_s: float = 5.0
    #: After a stop request, how long a failing database may still be retried.
    shutdown_grace_s: float = 10.0
    #: Seek newly assigned partitions to the beginning once (replay with an existing group).
    reset_to_beginning: bool = False
    #: A write running longer than this: pause the partitions, keep polling (the consumer
    #: stays in the group: must be well under max.poll.interval.ms, 300 s), report
    #: "database not answering" until it returns.
    write_stall_s: float = 10.0


class SinkLoop:
    """Runs until ``stop`` is set (or ``done(loop)`` says so); returns the exit code."""

    def __init__(
        self,
        consumer: Consumer,
        connect: Callable[[], db.Connection],
        settings: LoopSettings,
        stop: threading.Event,
        *,
        codec: KlineCodec | None = None,
        dlq: DlqWriter | None = None,
        health: Health | None = None,
        hook: FaultHook | None = None,
        clock: Clock | None = None,
        on_flush: Callable[[FlushReport], None] | None = None,
        done: Callable[[SinkLoop], bool] | None = None,
        commits: OffsetCommits | None = None,
    ) -> None:
        self.consumer = consumer
        #: Results of asynchronous offset commits (None: commit synchronously).
        self.commits = commits
        self.connect = connect
        self.settings = settings
        self.policy = settings.policy
        self.stop = stop
        self.codec = codec or KlineCodec()
        self.dlq = dlq
        self.health = health or Health()
        self.hook = hook
        self.clock: Clock = clock or MonotonicClock()
        self.on_flush = on_flush
        self.done = done
        #: Per partition of the topic: next offset whose record is in the database (committed
        #: to Kafka now or soon: see _commit).
        self.positions: dict[int, int] = {}
        #: Per partition: the highest offset to commit (its batch is in the database).
        self._to_commit: dict[TopicPartitionKey, int] = {}
        self._commit_retry: set[TopicPartitionKey] = set()
        self._retry_at = 0.0
        self.times = sink_step_times()
        # Records below a committed position (re-read after a rebalance) are already written.
        self.pending = StagedBatch(self.codec, floors=self.positions)
        self._inflight: _Inflight | None = None
        self._drained = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer")
        #: Per partition: the offset at which the consumer last reached the end.
        self.eof: dict[int, int] = {}
        self.assigned: set[TopicPartitionKey] = set()
        self.batches = 0
        self.totals = {"records": 0, "written": 0, "unchanged": 0, "dlq": 0, "empty_ranges": 0}
        self._conn: db.Connection | None = None
        self._paused = False
        self._flushing = False  # inside the retry loop (rebalance callbacks must not re-enter)
        self._closing = False
        self._seen: set[TopicPartitionKey] = set()
        self._lag_labels: set[TopicPartitionKey] = set()

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> int:
        self.consumer.subscribe(
            [self.settings.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.health.set(False, "waiting for partitions")
        try:
            while not self.stop.is_set():
                if (
                    self.done is not None
                    and not self.pending
                    and self._inflight is None
                    and self.done(self)
                ):
                    break
                self._poll_once()
                if self.commits is not None and (self.commits.reports or self._commit_retry):
                    self._check_commits()
                if self._inflight is not None:
                    if self._inflight.future.done():
                        self._settle()
                    else:
                        self._watch_writer(self._inflight)
                now = self.clock.now_ms()
                if self.policy.should_flush(
                    len(self.pending),
                    self.pending.first_at_ms,
                    now,
                    idle=self._drained and self._inflight is None,
                ):
                    self._flush()
            if self.pending:
                logger.info("stopping: flushing %d held records", len(self.pending))
            self._flush(synchronous=True)
        finally:
            self._close()
        return 0

    def _poll_once(self) -> None:
        held = len(self.pending)
        room = self.policy.room(held)
        mark = Mark.now()
        messages = self.consumer.consume(num_messages=room, timeout=0)
        # "Nothing more queued" only counts after a poll that waited: the local queue may be
        # short of `room` only because librdkafka's (small) prefetch is being refilled.
        self._drained = False
        if not messages:
            if held or self._inflight is not None:
                # Wait briefly (for more records, the batch deadline, the writer finishing): a
                # short poll that stays short says nothing more is queued.
                now = self.clock.now_ms()
                wait_ms = min(self.policy.wait_ms(held, self.pending.first_at_ms, now), 2)
                messages = self.consumer.consume(num_messages=room, timeout=wait_ms / 1000)
            else:
                # Nothing held: block until the first record, then take what is queued.
                messages = self.consumer.consume(num_messages=1, timeout=1.0)
                if messages and room > 1:
                    messages += self.consumer.consume(num_messages=room - 1, timeout=0)
            self._drained = len(messages) < room
        self.times.since("poll", mark)
        if messages:
            mark = Mark.now()
            self._accept(messages)
            self.times.since("stage", mark)
            if self.hook is not None:
                self.hook("after_poll", self.batches + 1)

    def _accept(self, messages: Sequence[Any]) -> None:
        # One call stages the whole batch (in the compiled core when built); messages that
        # carry an error instead of a record come back, in order.
        for msg in self.pending.add_consumed(messages, self.clock.now_ms(), self.assigned):
            err = msg.error()
            if err.code() == KafkaError._PARTITION_EOF:
                self.eof[msg.partition()] = msg.offset()
            elif err.fatal():
                raise KafkaFatal(err.str())
            else:
                logger.warning("kafka consumer: %s", err.str())

    # -- the batch cycle ------------------------------------------------------------------

    def _flush(self, *, in_callback: bool = False, synchronous: bool = False) -> bool:
        """Write and commit everything held (and the batch in flight). With ``synchronous``
        (rebalance callbacks, shutdown) it returns once all is committed; otherwise the held
        batch is left being written. False when it had to give up (nothing more committed)."""
        synchronous = synchronous or in_callback
        if not self._settle(in_callback=in_callback):
            return False
        if not self.pending:
            return True
        mark = Mark.now()
        split = self.pending.split()
        self.pending.clear()
        self.batches += 1
        batch_no = self.batches
        if not synchronous and not (split.dlq and self.dlq is not None):
            if split.dlq:  # no DLQ writer (replay): only say what is skipped
                self._send_dlq(split.dlq)
            self._hook("after_dlq")
            future = self._writer.submit(self._write, split, batch_no)
            self.times.since("handover", mark)
            self._inflight = _Inflight(split, batch_no, future, time.monotonic())
            return True
        return self._write_and_commit(split, batch_no, in_callback=in_callback)

    def _settle(self, *, in_callback: bool = False) -> bool:
        """Wait for the batch being written; commit its offsets (or retry it until written)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return True
        mark = Mark.now()
        try:
            if not self._await_writer(inflight, in_callback=in_callback):
                # Inside a rebalance: not finished in time. It completes on its own; its
                # offsets stay uncommitted (the next owner rewrites the rows as no-ops).
                logger.warning("batch %d still being written during a rebalance", inflight.batch_no)
                return False
            results = inflight.future.result()
        except Exception as exc:
            if not (is_retryable(exc) or db.is_database_error(exc)):
                raise
            WRITE_FAILURES.inc()
            self._drop_connection()
            logger.warning("database write failed (%s); retrying the batch", _one_line(exc))
            return self._write_and_commit(
                inflight.split, inflight.batch_no, in_callback=in_callback
            )
        finally:
            self.times.since("wait_writer", mark)
        self._finish(inflight.split, results, synchronous=in_callback)
        return True

    def _watch_writer(self, inflight: _Inflight) -> None:
        """A write running past ``write_stall_s``: stop taking records (pause), say so."""
        waited = time.monotonic() - inflight.started_s
        if waited < self.settings.write_stall_s:
            return
        if not self._paused:
            self._pause()
            logger.warning(
                "database not answering: batch %d has been written for %.0fs; partitions "
                "paused, still polling",
                inflight.batch_no,
                waited,
            )
        self.health.set(
            False, f"database not answering: a write has been running for {waited:.0f}s"
        )

    def _await_writer(self, inflight: _Inflight, *, in_callback: bool) -> bool:
        """Wait for the writer thread, never past ``write_stall_s`` without polling: after it,
        pause every partition and keep polling (heartbeats, rebalances) until the write
        returns. In a rebalance callback (no polling possible): False when it did not return
        within ``write_stall_s``."""
        future = inflight.future
        left = inflight.started_s + self.settings.write_stall_s - time.monotonic()
        with contextlib.suppress(FutureTimeout):
            future.result(timeout=max(left, 0.0))
        if future.done():
            return True
        if in_callback:
            return False
        self._flushing = True  # a rebalance meanwhile drops held records instead of flushing
        try:
            while not future.done():
                self._watch_writer(inflight)
                self._wait_paused(min(1.0, self.settings.write_stall_s))
        finally:
            self._flushing = False
        return True

    def _finish(self, split: Split, written: Written, *, synchronous: bool = False) -> None:
        self._hook("after_db_commit")
        self._commit(split, synchronous=synchronous)
        self._hook("after_offset_commit")
        self._account(split, written)
        if self._paused:
            self._resume()

    def _write_and_commit(self, split: Split, batch_no: int, *, in_callback: bool) -> bool:
        """Write the batch on this thread (retrying, see ``_retry_write``), then commit its
        offsets; if it had to give up, rewind instead and return False."""
        self._flushing = True
        try:
            done, results, as_written = self._retry_write(split, batch_no, in_callback=in_callback)
        finally:
            self._flushing = False
        if not done:
            self._abandon(split)
            return False
        self._finish(as_written, results, synchronous=in_callback)
        return True

    def _retry_write(
        self, split: Split, batch_no: int, *, in_callback: bool
    ) -> tuple[bool, Written, Split]:
        """Send the batch's DLQ records, write its rows; on failure pause, back off and retry
        (in a rebalance callback: a few quick attempts). Returns (written?, results, the batch
        as written: without partitions revoked meanwhile, whose offsets must not be committed
        by us); False means: gave up."""
        delays = iter(backoff(self.settings.retry_initial_s, self.settings.retry_max_s))
        dlq_sent = False
        attempts = 0
        give_up_at: float | None = None
        while True:
            gone = {tp for tp in split.offsets if tp not in self.assigned}
            if gone:
                # Revoked meanwhile: their next owner writes them (ours could be older).
                split = split.without(gone)
            try:
                if not dlq_sent and split.dlq:
                    self._send_dlq(split.dlq)
                dlq_sent = True
                self._hook("after_dlq")
                return True, self._write(split, batch_no), split
            except Exception as exc:
                if not (is_retryable(exc) or db.is_database_error(exc)):
                    raise
                failure: BaseException = exc
            attempts += 1
            WRITE_FAILURES.inc()
            self._drop_connection()
            delay = next(delays)
            if in_callback:
                if attempts >= 3:
                    logger.warning("cannot flush during rebalance: %s", failure)
                    return False, ([], []), split
                time.sleep(min(delay, 1.0))
                continue
            if not self._paused:
                self._pause()
            now = time.monotonic()
            if self.stop.is_set():
                give_up_at = give_up_at or now + self.settings.shutdown_grace_s
                if now >= give_up_at:
                    logger.warning(
                        "stopping with the database still failing: %d records left "
                        "uncommitted (they will be consumed again)",
                        split.records,
                    )
                    return False, ([], []), split
            logger.warning(
                "database write failed (%s); partitions paused, nothing committed, "
                "retrying in %.1fs (attempt %d)",
                _one_line(failure),
                delay,
                attempts,
            )
            self.health.set(False, f"database unavailable: {_one_line(failure)}")
            self._wait_paused(delay)

    def _abandon(self, split: Split) -> None:
        """Given up on a batch: rewind the partitions we keep to its first records, so nothing
        after it is committed over its head; records staged after it are dropped too. A rewind
        that fails ends the process (exit 1): committing past those records would lose them."""
        keep = [tp for tp in split.first_offsets if tp in self.assigned]
        if not keep:
            return
        for tp in keep:
            try:
                self.consumer.seek(TopicPartition(tp[0], tp[1], split.first_offsets[tp]))
            except KafkaException as exc:
                msg = f"cannot rewind partition {tp[1]} to an unwritten batch: {exc}"
                raise KafkaFatal(msg) from None
        self.pending.drop_partitions(keep)
        logger.warning(
            "rewound partitions %s to their first uncommitted records",
            ",".join(str(p) for _, p in sorted(keep)),
        )

    def _write(self, split: Split, batch_no: int) -> Written:
        """One batch's transaction(s); runs on the writer thread, or inline when retrying.
        Records the database refuses on their own go to the DLQ from here (before any offset
        commit); the rest of the batch is written."""
        if not split.batch.rows and not split.empty_ranges:
            return [], []
        started = time.perf_counter()
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        conn = self._conn
        hook = self.hook

        def before_commit() -> None:
            if hook is not None:
                hook("before_db_commit", batch_no)

        def write(batch: CandleBatch, ranges: Sequence[EmptyRange]) -> db.WriteResult:
            return db.write_rows(
                conn,
                batch,
                ranges,
                max_tuples_decompressed=self.settings.max_tuples_decompressed,
                before_commit=before_commit,
            )

        results, rejected = write_bisecting(
            write, split.batch, split.empty_ranges, db.is_limit_exceeded, db.record_sqlstate
        )
        entries = [split.rejected_entry(r) for r in rejected]
        if entries:
            self._send_dlq(entries)
        COMMIT_SECONDS.labels("db").observe(time.perf_counter() - started)
        return results, entries

    def _send_dlq(self, entries: Sequence[DlqEntry]) -> None:
        for e in entries:
            logger.warning(
                "to DLQ: %s[%d]@%d %s: %s", e.topic, e.partition, e.offset, e.error_class, e.reason
            )
        if self.dlq is not None:
            self.dlq.send(entries)

    def _commit(self, split: Split, *, synchronous: bool = False) -> None:
        """Commit the offsets of a batch the database holds: asynchronously (results in
        ``_check_commits``), or here and now when ``synchronous`` (rebalance callbacks,
        shutdown) or when the consumer has no ``on_commit`` callback."""
        mark = Mark.now()
        owned = [tp for tp in split.offsets if tp in self.assigned]
        for tp in owned:
            offset = split.offsets[tp]
            if offset > self._to_commit.get(tp, -1):
                self._to_commit[tp] = offset
                if tp[0] == self.settings.topic:
                    self.positions[tp[1]] = offset
        if owned:
            if synchronous or self.commits is None:
                self._commit_now(owned)
            else:
                self._commit_async(owned)
        self.times.since("offset_commit", mark)

    def _offsets_of(self, tps: Iterable[TopicPartitionKey]) -> list[Any]:
        return [TopicPartition(t, p, self._to_commit[(t, p)]) for t, p in tps]

    def _commit_async(self, tps: Iterable[TopicPartitionKey]) -> None:
        try:
            self.consumer.commit(offsets=self._offsets_of(tps), asynchronous=True)
        except KafkaException as exc:
            logger.warning("offset commit not sent (will be sent again): %s", exc)
            self._commit_retry.update(tps)

    def _commit_now(self, tps: Iterable[TopicPartitionKey]) -> None:
        """Commit these partitions' offsets on this thread and wait for the result."""
        offsets = self._offsets_of(tps)
        if not offsets:
            return
        started = time.perf_counter()
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are durable; uncommitted records come again and are rewritten as no-ops.
            logger.warning("offset commit failed (rows are written; will be re-read): %s", exc)
            return
        COMMIT_SECONDS.labels("offsets").observe(time.perf_counter() - started)
        for tp in result or []:
            if tp.error is not None:
                logger.warning("offset commit failed for partition %d: %s", tp.partition, tp.error)
            else:
                self._commit_retry.discard((tp.topic, tp.partition))

    def _check_commits(self) -> None:
        """Read what the asynchronous commits reported; send failed ones again (at most every
        0.5 s, the highest offsets the database holds) while their partitions are ours. Their
        records are in the database: a commit that never succeeds only means the next owner
        of the partition reads them again."""
        assert self.commits is not None  # noqa: S101 - only called with the callback
        reports, self.commits.reports = self.commits.reports, []
        for error, topic, partition, offset in reports:
            key = (topic, partition)
            if error is not None:
                logger.warning(
                    "offset commit failed for partition %d (will be sent again): %s",
                    partition,
                    error,
                )
                self._commit_retry.add(key)
            elif offset >= self._to_commit.get(key, -1):
                self._commit_retry.discard(key)
        self._commit_retry &= self.assigned
        now = time.monotonic()
        if self._commit_retry and now >= self._retry_at:
            self._retry_at = now + 0.5
            self._commit_async(sorted(self._commit_retry))

    def _account(self, split: Split, outcome: Written) -> None:
        results, rejected = outcome
        written = sum(r.written for r in results)
        unchanged = sum(r.unchanged for r in results)
        for r in results:
            self.times.add("statements", r.timings[0], r.timings[1])
            self.times.add("db_commit", r.timings[2], r.timings[3])
        ranges = sum(r.empty_ranges for r in results)
        self.totals["records"] += split.records
        self.totals["written"] += written
        self.totals["unchanged"] += unchanged
        self.totals["dlq"] += len(split.dlq) + len(rejected)
        self.totals["empty_ranges"] += ranges
        ROWS_WRITTEN.inc(written)
        ROWS_UNCHANGED.inc(unchanged)
        EMPTY_RANGES.inc(ranges)
        deleted = sum(r.deleted for r in results)
        if deleted:
            EMPTIED.inc(deleted)
            logger.warning(
                "deleted %d stored candles the exchange now confirms empty (%d ranges)",
                deleted,
                ranges,
            )
        for entry in (*split.dlq, *rejected):
            DLQ_RECORDS.labels(entry.error_class).inc()
        BATCH_RECORDS.observe(split.records)
        now_s = time.time()
        for closed_at, ingested_at in split.newest:
            CLOSE_TO_COMMIT.observe(max(0.0, now_s - (closed_at + 1) / 1000))
            INGEST_TO_COMMIT.observe(max(0.0, now_s - ingested_at / 1000))
        self._update_lag()
        self.health.set(True, "consuming")
        if self.on_flush is not None:
            self.on_flush(
                FlushReport(
                    split.records,
                    written,
                    unchanged,
                    ranges,
                    len(split.dlq) + len(rejected),
                    split.offsets,
                )
            )

    def _update_lag(self) -> None:
        for topic, partition in self.assigned:
            position = self.positions.get(partition)
            if position is None:
                continue
            try:
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high is not None and high >= 0:
                CONSUMER_LAG.labels(topic, str(partition)).set(max(0, high - position))
                self._lag_labels.add((topic, partition))

    # -- outage handling ------------------------------------------------------------------

    def _pause(self) -> None:
        parts = self._assigned_tps()
        if parts:
            self.consumer.pause(parts)
        self._paused = True
        PAUSED.set(1)
        logger.warning("paused %d partitions until the database accepts writes", len(parts))

    def _resume(self) -> None:
        parts = self._assigned_tps()
        if parts:
            self.consumer.resume(parts)
        self._paused = False
        PAUSED.set(0)
        logger.info("database writes succeed again: resumed %d partitions", len(parts))

    def _wait_paused(self, delay_s: float) -> None:
        """Keep polling (heartbeats, rebalance callbacks) while the partitions are paused."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.is_set():
                # Do not sleep out a long backoff once asked to stop; retry within a second.
                deadline = min(deadline, time.monotonic() + 1.0)
            messages = self.consumer.consume(
                num_messages=self.policy.batch_size, timeout=min(left, 1.0)
            )
            if messages:
                # Only partitions assigned during the outage can deliver; keep their records.
                self._accept(messages)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                conn.close()

    # -- rebalance callbacks (run inside consume()/close()) -------------------------------

    def _assigned_tps(self) -> list[Any]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def _on_assign(self, consumer: Consumer, partitions: list[Any]) -> None:
        wanted = []
        for tp in partitions:
            ident = (tp.topic, tp.partition)
            if self.settings.reset_to_beginning and ident not in self._seen:
                wanted.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
            else:
                wanted.append(tp)
            self._seen.add(ident)
        consumer.incremental_assign(wanted)
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)
        if self._paused:
            consumer.pause(partitions)
        logger.info(
            "assigned partitions %s", ",".join(str(tp.partition) for tp in partitions) or "-"
        )
        if not self._paused:
            self.health.set(True, "consuming")

    def _on_revoke(self, consumer: Consumer, partitions: list[Any]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        held = self.pending.held(revoked)
        if self._inflight is not None and revoked & set(self._inflight.split.offsets):
            held += 1  # the batch being written covers them: commit it while we own them
        if held and not self._flushing and not self._closing:
            logger.info("partitions revoked: flushing %d held records first", len(self.pending))
            if not self._flush(in_callback=True):
                self._drop(revoked, "revoked while the database is failing")
        elif held:
            self._drop(revoked, "revoked while the database is failing")
        # What the database holds of them is committed before they go (not left in flight).
        self._commit_now(sorted(revoked & set(self._to_commit)))
        self._forget(revoked)
        logger.info("revoked partitions %s", ",".join(str(p) for _, p in sorted(revoked)) or "-")

    def _on_lost(self, consumer: Consumer, partitions: list[Any]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._drop(lost, "partitions lost")
        self._forget(lost)
        logger.warning("lost partitions %s", ",".join(str(p) for _, p in sorted(lost)) or "-")

    def _drop(self, partitions: Iterable[TopicPartitionKey], why: str) -> None:
        dropped = self.pending.drop_partitions(partitions)
        if dropped:
            logger.warning("%s: dropped %d uncommitted records (re-read later)", why, dropped)

    def _forget(self, partitions: set[TopicPartitionKey]) -> None:
        self.assigned -= partitions
        self._commit_retry -= partitions
        for tp in partitions:
            self._to_commit.pop(tp, None)
        for topic, partition in partitions:
            if (topic, partition) in self._lag_labels:
                self._lag_labels.discard((topic, partition))
                CONSUMER_LAG.remove(topic, str(partition))

    # -- shutdown -------------------------------------------------------------------------

    def _close(self) -> None:
        self._closing = True
        if self._inflight is not None:  # an exception left a batch being written
            with contextlib.suppress(Exception):
                self._inflight.future.result(timeout=60)
            self._inflight = None
        self._writer.shutdown(wait=True)
        try:
            # Once more, synchronously, everything the database holds: it covers asynchronous
            # commits still in flight or failed.
            self._commit_now(sorted(set(self._to_commit) & self.assigned))
        except Exception as exc:  # the consumer may have failed fatally
            logger.warning("final offset commit: %s", exc)
        try:
            self.consumer.close()
        except Exception as exc:  # a consumer already failed fatally
            logger.warning("closing the consumer: %s", exc)
        if self.dlq is not None:
            self.dlq.close()
        self._drop_connection()

    def _hook(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point, self.batches)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
