"""The sink's I/O wiring around the shared loop (``qryptify.sink.loop``): build the edges from
config, make sure the topics exist, migrate the database on first connect, run."""

from __future__ import annotations

import logging
import os
import threading

from qryptify import db
from qryptify.config import Config
from qryptify.dlq import DlqWriter
from qryptify.errors import IngestorError
from qryptify.futures.sink import FuturesSink
from qryptify.futures.topic import topic_spec
from qryptify.kafka import ensure_topics, make_consumer, make_producer, topic_specs
from qryptify.metrics import Health
from qryptify.sink.batch import FlushPolicy
from qryptify.sink.loop import FaultHook, LoopSettings, OffsetCommits, SinkLoop

logger = logging.getLogger(__name__)

#: Optional static group membership (KIP-345): a sink restarted under the same id (supervisor,
#: kill -9) gets its partitions back at once instead of after the session timeout. Give every
#: instance its own id; two live instances with one id fence each other.
ENV_INSTANCE_ID = "QRYPTIFY_SINK_INSTANCE_ID"


class MigratingConnector:
    """Opens connections; the first successful one applies pending migrations."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._migrated = False

    def __call__(self) -> db.Connection:
        conn = db.connect(self._dsn)
        if not self._migrated:
            try:
                db.migrate(conn)
            except Exception:
                conn.close()
                raise
            self._migrated = True
        return conn


class SinkRunner:
    def __init__(self, cfg: Config, loop: SinkLoop, futures: FuturesSink | None = None) -> None:
        self.cfg = cfg
        self.loop = loop
        #: The futures topic's path (``futures.funding_rates``), on its own thread.
        self.futures = futures

    def run(self) -> int:
        specs = topic_specs(self.cfg.kafka)
        if self.futures is not None:
            specs.append(topic_spec(self.cfg))
        try:
            ensure_topics(self.cfg.kafka, specs=specs)
        except IngestorError as exc:
            logger.warning("could not ensure topics (continuing): %s", exc)
        if self.futures is None:
            return self._run_klines()
        thread = threading.Thread(target=self._run_futures, name="futures-sink", daemon=True)
        thread.start()
        try:
            return self._run_klines()
        finally:
            self.futures.stop.set()
            thread.join(60)

    def _run_futures(self) -> None:
        assert self.futures is not None  # noqa: S101 - only started with one
        try:
            self.futures.run()
        except Exception:
            # Bad records go to the DLQ and the database is retried, so this is Kafka or a bug:
            # stop the whole service loudly rather than run half of it.
            logger.exception("futures sink path failed; stopping the sink")
            self.futures.stop.set()

    def _run_klines(self) -> int:
        logger.info(
            "sink: topic %s, group %s, batch %d records / %d ms, database %s",
            self.cfg.kafka.topic,
            self.cfg.sink.group_id,
            self.cfg.sink.batch_size,
            self.cfg.sink.max_latency_ms,
            self.cfg.db.redacted_dsn(),
        )
        return self.loop.run()


def build_sink(
    cfg: Config, stop: threading.Event, health: Health, hook: FaultHook | None = None
) -> SinkRunner:
    """The sink service; ``hook`` is called at each of the loop's ``HOOK_POINTS`` (tests pass
    one to crash the process there: ``tests/support/sink_crash.py``)."""
    settings = LoopSettings(
        topic=cfg.kafka.topic,
        policy=FlushPolicy(cfg.sink.batch_size, cfg.sink.max_latency_ms),
        max_tuples_decompressed=cfg.sink.max_tuples_decompressed or None,
    )
    instance_id = os.environ.get(ENV_INSTANCE_ID, "").strip()
    overrides = {"group.instance.id": instance_id} if instance_id else {}
    commits = OffsetCommits()
    loop = SinkLoop(
        make_consumer(cfg.kafka, cfg.sink.group_id, on_commit=commits.record, **overrides),
        MigratingConnector(cfg.db.dsn.get_secret_value()),
        settings,
        stop,
        dlq=DlqWriter(make_producer(cfg.kafka), cfg.kafka.dlq_topic),
        health=health,
        hook=hook,
        commits=commits,
    )
    futures = None
    if cfg.futures.enabled:
        futures = FuturesSink(
            make_consumer(cfg.kafka, cfg.futures.sink_group(cfg.sink.group_id)),
            MigratingConnector(cfg.db.dsn.get_secret_value()),
            cfg.futures.topic,
            stop,
            dlq=DlqWriter(make_producer(cfg.kafka), cfg.kafka.dlq_topic),
            health=health,
        )
    return SinkRunner(cfg, loop, futures)
