"""qryptify-backfiller: wiring only (config → edges → run loop); see services/backfiller/run.py."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

from qryptify import db
from qryptify.archive_ledger import ArchiveLedger
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest
from qryptify.config import Config
from qryptify.kafka import ensure_topics, make_producer
from qryptify.metrics import Health
from qryptify.offsets import SourceOffsetStore
from qryptify.publish import KlinePublisher
from qryptify.service import service_main
from services.backfiller.run import Backfiller


def build(cfg: Config, stop: threading.Event, health: Health) -> Backfiller:
    ensure_topics(cfg.kafka)
    producer = make_producer(cfg.kafka)
    return Backfiller(
        cfg,
        rest=BinanceRest(cfg.rest),
        publisher=KlinePublisher(producer, cfg.kafka.topic),
        offsets=SourceOffsetStore(cfg.kafka, producer),
        archive=ArchiveClient(cfg.archive) if cfg.archive.enabled else None,
        ledger=ArchiveLedger(cfg.kafka, producer) if cfg.archive.enabled else None,
        connect_db=functools.partial(db.connect, cfg.db.dsn.get_secret_value()),
        stop=stop,
        health=health,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return service_main("backfiller", argv, build, "backfill closed klines: archive + REST → Kafka")


if __name__ == "__main__":
    raise SystemExit(main())
