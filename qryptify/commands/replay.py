"""``qryptify replay --dsn DSN``: rebuild a database from the topic.

The target is migrated first; a fresh consumer group (or ``--group NAME``, reset to the earliest
offsets) reads every partition from the beginning through the same consume → write → commit
loop as the sink (``qryptify.sink.loop``), with a progress bar against the high watermarks taken
at start. Exits 0 once every partition reached them (or keeps going with ``--follow``) and
prints rows/s. Replaying into a database that already holds the data changes nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from qryptify import db, native
from qryptify.config import Config
from qryptify.dlq import DlqWriter
from qryptify.errors import IngestorError, NoDataYet
from qryptify.futures.sink import FuturesSink
from qryptify.kafka import (
    TopicPartition,
    make_consumer,
    make_producer,
    topic_partitions,
)
from qryptify.redaction import redact_message
from qryptify.service import install_stop_handlers, settle_garbage_collector
from qryptify.sink.batch import FlushPolicy
from qryptify.sink.loop import FlushReport, LoopSettings, OffsetCommits, SinkLoop
from qryptify.sink.timing import StepTimes, sink_step_times

#: Replays are bulk loads: at least this many records per transaction, even where the
#: sink is configured with smaller batches.
REPLAY_BATCH_SIZE = 50_000
#: A fresh replay's consumer group starts so (``qryptify tap`` refuses these groups).
REPLAY_GROUP_PREFIX = "qryptify-replay-"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay", help="rebuild a database from the Kafka topic (idempotent)", description=__doc__
    )
    parser.add_argument("--dsn", default=None, help="target database (default: db.dsn)")
    parser.add_argument(
        "--group",
        default=None,
        help="consumer group (default: a fresh qryptify-replay-<id>); an existing group is "
        "reset to the earliest offsets",
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep consuming after catching up (like the sink)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"records per transaction (default: max(sink.batch_size, {REPLAY_BATCH_SIZE}))",
    )
    parser.add_argument(
        "--dlq",
        action="store_true",
        help="also send bad records to the DLQ (the live sink already did: off by default)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _watermarks(consumer: Any, topic: str, bootstrap: str) -> dict[int, tuple[int, int]]:
    marks: dict[int, tuple[int, int]] = {}
    for partition in topic_partitions(consumer, topic, bootstrap):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        marks[partition] = (int(low), int(high))
    return marks


def caught_up(marks: dict[int, tuple[int, int]]) -> Any:
    """``done`` predicate: every partition committed (or reached the end) at its start mark."""

    def done(loop: SinkLoop) -> bool:
        return all(
            max(loop.positions.get(p, low), loop.eof.get(p, -1)) >= high
            for p, (low, high) in marks.items()
        )

    return done


@dataclass(frozen=True, slots=True)
class ReplayResult:
    totals: dict[str, int]
    elapsed_s: float
    #: From the first committed batch to the end: the rate without the group join.
    steady_s: float
    interrupted: bool
    #: Where the time went, per step of the batch cycle (wall and CPU).
    times: StepTimes = field(default_factory=sink_step_times)

    @property
    def rows(self) -> int:
        return self.totals["written"] + self.totals["unchanged"]


def replay(
    cfg: Config,
    dsn: str,
    *,
    group: str | None = None,
    follow: bool = False,
    batch_size: int | None = None,
    dlq: bool = False,
    progress: bool = True,
) -> ReplayResult:
    """Migrate ``dsn``, then consume the topic from the beginning into it."""
    where = redact_message(dsn, dsn)
    with db.connect(dsn) as conn:
        applied = db.migrate(conn)
    if applied:
        print(f"{where}: applied {', '.join(applied)}", file=sys.stderr)
    group_id = group or f"{REPLAY_GROUP_PREFIX}{uuid.uuid4().hex[:12]}"
    commits = OffsetCommits()
    consumer = make_consumer(
        cfg.kafka,
        group_id,
        on_commit=commits.record,
        **{"enable.partition.eof": True},
    )
    topic = cfg.kafka.topic
    try:
        marks = _watermarks(consumer, topic, cfg.kafka.bootstrap_servers)
    except IngestorError:
        consumer.close()
        raise
    total = sum(high - low for low, high in marks.values())
    print(
        f"replaying {topic} ({total} records in {len(marks)} partitions) into {where} "
        f"as group {group_id}",
        file=sys.stderr,
    )
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(stop)
    bar = tqdm(total=total, unit="rec", unit_scale=True, disable=not progress, file=sys.stderr)
    reached = {p: low for p, (low, _high) in marks.items()}
    first_flush: list[float] = []

    def on_flush(report: FlushReport) -> None:
        if not first_flush:
            first_flush.append(time.monotonic())
        step = 0
        for (t, p), offset in report.offsets.items():
            if t == topic and offset > reached.get(p, 0):
                step += offset - reached.get(p, 0)
                reached[p] = offset
        bar.update(step)

    loop = SinkLoop(
        consumer,
        lambda: db.connect(dsn),
        LoopSettings(
            topic=topic,
            policy=FlushPolicy(
                batch_size or max(cfg.sink.batch_size, REPLAY_BATCH_SIZE), cfg.sink.max_latency_ms
            ),
            max_tuples_decompressed=cfg.sink.max_tuples_decompressed or None,
            reset_to_beginning=group is not None,
        ),
        stop,
        dlq=DlqWriter(make_producer(cfg.kafka), cfg.kafka.dlq_topic) if dlq else None,
        on_flush=on_flush,
        done=None if follow else caught_up(marks),
        commits=commits,
    )
    futures = _futures_replay(cfg, dsn, group_id, stop, follow)
    settle_garbage_collector()
    started = time.monotonic()
    try:
        loop.run()
    finally:
        bar.close()
        if futures is not None:
            if follow or stop.is_set():
                stop.set()
            futures[1].join()
            print(f"futures: {futures[0].written} funding rows written", file=sys.stderr)
    ended = time.monotonic()
    return ReplayResult(
        totals=dict(loop.totals),
        elapsed_s=max(ended - started, 1e-9),
        steady_s=max(ended - (first_flush[0] if first_flush else started), 1e-9),
        interrupted=stop.is_set() and not follow,
        times=loop.times,
    )


def _futures_replay(
    cfg: Config, dsn: str, group_id: str, stop: threading.Event, follow: bool
) -> tuple[FuturesSink, threading.Thread] | None:
    """With ``futures.funding_rates`` on: the futures topic replayed on its own thread (its
    own fresh group), up to its high watermarks at start unless following."""
    if not cfg.futures.enabled:
        return None
    consumer = make_consumer(cfg.kafka, f"{group_id}.futures")
    try:
        marks = _watermarks(consumer, cfg.futures.topic, cfg.kafka.bootstrap_servers)
    except NoDataYet:
        consumer.close()
        print(f"futures: no topic {cfg.futures.topic} yet, nothing to replay", file=sys.stderr)
        return None
    sink = FuturesSink(
        consumer,
        lambda: db.connect(dsn),
        cfg.futures.topic,
        stop,
        until=None if follow else {p: high for p, (_low, high) in marks.items()},
    )
    thread = threading.Thread(target=sink.run, name="futures-replay", daemon=True)
    thread.start()
    return sink, thread


def run(args: argparse.Namespace, cfg: Config) -> int:
    dsn: str = args.dsn or cfg.db.dsn.get_secret_value()
    result = replay(
        cfg,
        dsn,
        group=args.group,
        follow=args.follow,
        batch_size=args.batch_size,
        dlq=args.dlq,
        progress=not args.no_progress,
    )
    t = result.totals
    print(
        f"replayed {t['records']} records into {redact_message(dsn, dsn)} in "
        f"{result.elapsed_s:.1f}s: {t['written']} rows written, {t['unchanged']} unchanged, "
        f"{t['dlq']} invalid, {t['empty_ranges']} empty ranges; "
        f"{result.rows / result.elapsed_s:,.0f} rows/s, {t['records'] / result.elapsed_s:,.0f} "
        f"records/s ({native.describe()})"
    )
    print(f"time per step: {result.times.render(t['records'])}")
    if result.interrupted:
        print("interrupted before catching up", file=sys.stderr)
        return 130
    return 0
