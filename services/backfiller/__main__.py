"""qryptify-backfiller: wiring only (config → edges → run loop); see services/backfiller/run.py."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

from confluent_kafka import Producer

from qryptify import db
from qryptify.archive_ledger import ArchiveLedger
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest
from qryptify.config import Config
from qryptify.futures.price import enabled_kinds
from qryptify.futures.sources import FundingSource
from qryptify.futures.topic import FundingOffsets, topic_spec
from qryptify.kafka import ensure_topics, make_producer
from qryptify.metrics import Health
from qryptify.offsets import SourceOffsetStore
from qryptify.publish import KlinePublisher
from qryptify.service import service_main
from services.backfiller.funding import FundingBackfill
from services.backfiller.futures import FuturesPasses
from services.backfiller.price_klines import PriceKlineBackfill
from services.backfiller.run import Backfiller


def build(cfg: Config, stop: threading.Event, health: Health) -> Backfiller:
    ensure_topics(cfg.kafka)
    producer = make_producer(cfg.kafka)
    rest = BinanceRest(cfg.rest)
    archive = ArchiveClient(cfg.archive) if cfg.archive.enabled else None
    offsets = SourceOffsetStore(cfg.kafka, producer)
    return Backfiller(
        cfg,
        rest=rest,
        publisher=KlinePublisher(producer, cfg.kafka.topic),
        offsets=offsets,
        archive=archive,
        ledger=ArchiveLedger(cfg.kafka, producer) if cfg.archive.enabled else None,
        connect_db=functools.partial(db.connect, cfg.db.dsn.get_secret_value()),
        stop=stop,
        health=health,
        futures=build_futures(cfg, rest, archive, producer, offsets),
    )


def build_futures(
    cfg: Config,
    rest: BinanceRest,
    archive: ArchiveClient | None,
    producer: Producer,
    offsets: SourceOffsetStore,
) -> FuturesPasses | None:
    """The futures passes the ``futures`` section turns on (their topic ensured), or None."""
    if not cfg.futures.enabled:
        return None
    ensure_topics(cfg.kafka, specs=[topic_spec(cfg)])
    passes = FuturesPasses()
    if cfg.futures.funding_rates:
        source = FundingSource(rest, archive, page_limit=cfg.futures.funding_page_limit)
        passes.funding = FundingBackfill(cfg, source, producer, FundingOffsets(cfg.kafka, producer))
    if enabled_kinds(cfg):
        passes.prices = PriceKlineBackfill(cfg, rest, archive, producer, offsets)
    return passes


def main(argv: Sequence[str] | None = None) -> int:
    return service_main("backfiller", argv, build, "backfill closed klines: archive + REST → Kafka")


if __name__ == "__main__":
    raise SystemExit(main())
