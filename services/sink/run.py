"""The sink's I/O wiring around the shared loop (``qryptify.sink.loop``): build the edges from
config, make sure the topics exist, migrate the database on first connect, run."""

from __future__ import annotations

import logging
import os
import threading

from qryptify import db
from qryptify.config import Config
from qryptify.errors import IngestorError
from qryptify.kafka import ensure_topics, make_consumer, make_producer
from qryptify.metrics import Health
from qryptify.sink.batch import FlushPolicy
from qryptify.sink.loop import DlqWriter, LoopSettings, OffsetCommits, SinkLoop
from services.sink.faults import crash_hook

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
    def __init__(self, cfg: Config, loop: SinkLoop) -> None:
        self.cfg = cfg
        self.loop = loop

    def run(self) -> int:
        try:
            ensure_topics(self.cfg.kafka)
        except IngestorError as exc:
            logger.warning("could not ensure topics (continuing): %s", exc)
        logger.info(
            "sink: topic %s, group %s, batch %d records / %d ms, database %s",
            self.cfg.kafka.topic,
            self.cfg.sink.group_id,
            self.cfg.sink.batch_size,
            self.cfg.sink.max_latency_ms,
            self.cfg.db.redacted_dsn(),
        )
        return self.loop.run()


def build_sink(cfg: Config, stop: threading.Event, health: Health) -> SinkRunner:
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
        hook=crash_hook(os.environ),
        commits=commits,
    )
    return SinkRunner(cfg, loop)
