"""The archive audit: is the published history still what the exchange publishes?

For every archive file in the ledger (``qryptify.archive_ledger``), fetch its published
``.CHECKSUM`` (a few bytes, no request weight) and compare it with the sha256 of the content
its candles came from. Unchanged: nothing more is asked. Changed (Binance re-uploaded a
corrected file): download it, take the same open times as before, and publish

- the candles that differ from the previous content or are new (all of the file's candles
  when the previous content is no longer cached: the sink's ``IS DISTINCT FROM`` upsert makes
  the identical ones no-ops);
- for open times the new file lacks, what REST says: its candles, or — where a full REST page
  has none — ``EmptyRange`` events. The sink deletes stored candles inside an empty range, so
  a candle that disappeared from a corrected file is neither kept nor fabricated
  (DESIGN.md invariant 8);

then, once Kafka acknowledged them, record the new checksum. Each corrected file is logged
once with its pair, range and number of changed candles. Files no longer published are
reported and left alone (nothing is deleted on a 404).

Runs on demand (``qryptify audit [--since DATE]``) and periodically in the backfiller
(``backfill.audit_every_s``), one file at a time, between backfill passes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge

from qryptify.archive_ledger import ArchiveLedger, IngestedFile
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest
from qryptify.errors import ArchiveError
from qryptify.gaps import missing_runs
from qryptify.kline import EmptyRange, Event, Kline
from qryptify.pairs import Pair
from qryptify.planning import page_events, plan_pages
from qryptify.publish import KlinePublisher, event_position

logger = logging.getLogger(__name__)

FILES_CHECKED = Counter(
    "qryptify_backfill_audit_files_checked", "Archive files whose checksum was checked"
)
FILES_REINGESTED = Counter(
    "qryptify_backfill_audit_files_reingested",
    "Archive files re-ingested after their checksum changed",
)
CANDLES_CORRECTED = Counter(
    "qryptify_backfill_audit_candles_corrected",
    "Candles published as corrections (changed, new, or gone = empty range)",
)
LAST_AUDIT = Gauge(
    "qryptify_backfill_audit_last_finished_timestamp_seconds",
    "When the last archive audit finished",
)


@dataclass(frozen=True, slots=True)
class CandleDiff:
    """What changed between two contents of one file: candles new or with other values, and
    open times that are gone."""

    changed: list[Kline]
    gone: list[int]

    @property
    def count(self) -> int:
        return len(self.changed) + len(self.gone)


def diff_candles(old: Sequence[Kline], new: Sequence[Kline]) -> CandleDiff:
    """Compare two contents of a file by open time (ingest times do not count)."""
    before = {k.open_time: k for k in old}
    changed = [k for k in new if (b := before.get(k.open_time)) is None or not b.same_values(k)]
    present = {k.open_time for k in new}
    return CandleDiff(changed, sorted(t for t in before if t not in present))


@dataclass(frozen=True, slots=True)
class Correction:
    """One re-ingested file: what was published for it."""

    entry: IngestedFile  # the new ledger entry
    candles: int  # candles changed (new/different + gone), counted against the old content
    known: bool  # False: the old content was not cached, every candle was re-published
    events: int  # records published

    def describe(self) -> str:
        file = self.entry.file
        what = (
            f"{self.candles} candles changed"
            if self.known
            else f"previous content not cached: {self.candles} candles re-published"
        )
        return (
            f"{file.symbol}/{file.interval} [{_iso(self.entry.start_ms)}, "
            f"{_iso(self.entry.end_ms)}) from {file.zip_name}: {what}"
        )


@dataclass(slots=True)
class AuditSummary:
    files_checked: int = 0
    files_unchanged: int = 0
    files_reingested: int = 0
    files_missing: int = 0  # no longer published (404): left alone
    files_failed: int = 0  # corrupt or unreadable new content: checked again next time
    candles_corrected: int = 0
    corrections: list[Correction] = field(default_factory=list)
    finished_at: int = 0

    def line(self) -> str:
        return (
            f"archive audit: files_checked={self.files_checked} "
            f"unchanged={self.files_unchanged} reingested={self.files_reingested} "
            f"missing={self.files_missing} failed={self.files_failed} "
            f"candles_corrected={self.candles_corrected}"
        )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


class ArchiveAudit:
    """Checks every ledger entry against the published checksum; re-ingests the changed."""

    def __init__(
        self,
        *,
        archive: ArchiveClient,
        rest: BinanceRest,
        publisher: KlinePublisher,
        ledger: ArchiveLedger,
        stop: threading.Event | None = None,
    ) -> None:
        self.archive = archive
        self.rest = rest
        self.publisher = publisher
        self.ledger = ledger
        self.stop = stop or threading.Event()

    async def run(self, since_ms: int | None = None) -> AuditSummary:
        """One pass over the ledger (files ending after ``since_ms`` when given)."""
        summary = AuditSummary()
        entries = sorted(
            (e for e in self.ledger.files.values() if since_ms is None or e.end_ms > since_ms),
            key=lambda e: (e.file.symbol, e.file.interval, e.start_ms, e.file.kind),
        )
        now = await self.rest.server_time()
        for entry in entries:
            if self.stop.is_set():
                break
            summary.files_checked += 1
            FILES_CHECKED.inc()
            published = await self.archive.published_checksum(entry.file)
            if published is None:
                summary.files_missing += 1
                logger.warning(
                    "archive audit: %s is no longer published; its candles are left as they are",
                    entry.file,
                )
                continue
            if published[0] == entry.sha256:
                summary.files_unchanged += 1
                continue
            try:
                correction = await self.reingest(entry, now)
            except ArchiveError as exc:
                summary.files_failed += 1
                logger.error(
                    "archive audit: %s unusable, audited again next time: %s", entry.file, exc
                )
                continue
            if correction is None:
                summary.files_missing += 1
                continue
            summary.files_reingested += 1
            summary.candles_corrected += correction.candles
            summary.corrections.append(correction)
            FILES_REINGESTED.inc()
            CANDLES_CORRECTED.inc(correction.candles)
            logger.warning("archive correction: %s", correction.describe())
        summary.finished_at = time.time_ns() // 1_000_000
        if not self.stop.is_set():
            self.ledger.record_audit(
                summary.finished_at,
                summary.files_checked,
                summary.files_reingested,
                summary.candles_corrected,
            )
            await asyncio.to_thread(self.ledger.flush)
            LAST_AUDIT.set(summary.finished_at / 1000)
        logger.info("%s", summary.line())
        return summary

    async def reingest(self, entry: IngestedFile, now: int) -> Correction | None:
        """Publish what changed in ``entry``'s file and record its new checksum; None when
        the file vanished meanwhile."""
        file = entry.file
        pair = Pair(file.symbol, file.interval)
        old = self.archive.cached_klines(file, now, entry.sha256)
        new = await self.archive.fetch(file, now)
        sha = self.archive.used.get(file.path)
        if new is None or sha is None:
            return None
        start, end = entry.start_ms, entry.end_ms
        new = [k for k in new if start <= k.open_time < end and k.close_time < now]
        events: list[Event] = []
        if old:
            diff = diff_candles([k for k in old if start <= k.open_time < end], new)
            events += diff.changed
            candles = diff.count
        else:
            events += new
            candles = len(new)
        holes = missing_runs(pair.interval, start, end, (k.open_time for k in new))
        limit = self.rest.page_limit
        for a, b in holes:  # what the corrected file lacks: REST decides
            for page in plan_pages(pair.interval, a, b, limit):
                answer = await self.rest.klines(pair, page.start_ms, page.last_ms, limit)
                closed, empty = page_events(pair, page, answer, now, limit)
                events += closed
                events += empty
        events.sort(key=lambda e: (event_position(e), isinstance(e, EmptyRange)))
        if events:
            self.publisher.publish_all(events)
        remaining = await asyncio.to_thread(self.publisher.flush, 60.0)
        if remaining:
            raise TimeoutError(f"{remaining} corrections of {file} not acknowledged by Kafka")
        # Replace (not widen) the entry: its range stays the one published before.
        self.ledger.files.pop(file.path, None)
        recorded = self.ledger.record(IngestedFile(file, start, end, sha))
        return Correction(recorded, candles, bool(old), len(events))
