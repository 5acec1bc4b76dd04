"""``qryptify audit [--since DATE]``: compare every ingested archive file with what the exchange
publishes now, and publish the corrections.

Reads the archive ledger (``kafka.offsets_topic``), fetches each file's published ``.CHECKSUM``
(files ending after ``--since`` only, when given), re-ingests the files whose checksum changed
and publishes their changed candles and exchange-confirmed empty ranges to ``kafka.topic``
(``qryptify.audit``). The sink applies them. Prints one summary line; exit 0, or 1 when a file
could not be audited. The backfiller runs the same audit every ``backfill.audit_every_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from datetime import UTC, date, datetime

from qryptify.archive_ledger import ArchiveLedger
from qryptify.audit import ArchiveAudit, AuditSummary
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest
from qryptify.config import Config
from qryptify.errors import ConfigError
from qryptify.kafka import ensure_topics, make_producer
from qryptify.publish import KlinePublisher
from qryptify.service import EXIT_FAILURE, install_stop_handlers


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "audit",
        help="re-check ingested archive files against their published checksums; publish "
        "corrections",
        description=__doc__,
    )
    parser.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="DATE",
        help="only files whose period ends after DATE (YYYY-MM-DD, UTC)",
    )
    parser.set_defaults(run=run)


def _since(text: str) -> int:
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since {text!r}: expected YYYY-MM-DD") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def run(args: argparse.Namespace, cfg: Config) -> int:
    if not cfg.archive.enabled:
        raise ConfigError("archive.enabled", False, "the archive audit needs the archive")
    stop = threading.Event()
    install_stop_handlers(stop)
    summary = asyncio.run(_audit(cfg, args.since, stop))
    print(summary.line())
    for correction in summary.corrections:
        print(f"  corrected {correction.describe()}")
    return EXIT_FAILURE if summary.files_failed else 0


async def _audit(cfg: Config, since_ms: int | None, stop: threading.Event) -> AuditSummary:
    ensure_topics(cfg.kafka)
    producer = make_producer(cfg.kafka)
    ledger = ArchiveLedger(cfg.kafka, producer)
    await asyncio.to_thread(ledger.load)
    async with ArchiveClient(cfg.archive) as archive:
        rest = BinanceRest(cfg.rest)
        try:
            audit = ArchiveAudit(
                archive=archive,
                rest=rest,
                publisher=KlinePublisher(producer, cfg.kafka.topic),
                ledger=ledger,
                stop=stop,
            )
            return await audit.run(since_ms)
        finally:
            await rest.aclose()
            await asyncio.to_thread(ledger.flush)
