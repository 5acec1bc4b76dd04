"""The archive ledger: which archive files were published, with which content (their sha256),
and the outcome of the last audit — on the compacted ``kafka.offsets_topic``.

Keys (UTF-8) beside the source offsets' ``service|SYMBOL|interval``:

- ``archive|<file path>`` → ``ArchiveChecksum`` (qryptify/schemas/archive_checksum.avsc): the
  file, the open times taken from it and the sha256 of the content they came from;
- ``audit|archive`` → ``ArchiveAudit`` (qryptify/schemas/archive_audit.avsc): when the last audit
  finished, what it found, and the running totals ``qryptify status`` shows.

Why a compacted topic and not a table: the checksum belongs to what was *published*, like the
source offsets, not to the database, which is a projection that may be thrown away and
replayed (``qryptify reset-db`` + ``qryptify replay``) without losing what the audit needs. It
is written by the publisher (the backfiller or ``qryptify audit``), which needs no database.
Only the latest value per key matters, which is what compaction keeps.

An entry is recorded only after Kafka acknowledged the file's candles (the backfiller waits
for its pair's acknowledged position; the audit flushes first), so a file in the ledger is a
file whose content is in the topic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from qryptify.avro import NAMESPACE, AvroCodec
from qryptify.binance.archive import ArchiveFile
from qryptify.config import KafkaConfig
from qryptify.errors import UndecodableRecord
from qryptify.offsets import OffsetsTopicWriter, read_latest

logger = logging.getLogger(__name__)

ARCHIVE_CHECKSUM = f"{NAMESPACE}.ArchiveChecksum"
ARCHIVE_AUDIT = f"{NAMESPACE}.ArchiveAudit"
FILE_PREFIX = b"archive|"
AUDIT_KEY = b"audit|archive"


@dataclass(frozen=True, slots=True)
class IngestedFile:
    """Open times ``[start_ms, end_ms)`` of ``file`` were published from content ``sha256``."""

    file: ArchiveFile
    start_ms: int
    end_ms: int
    sha256: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """The last audit (``finished_at`` ms) and the totals over every audit so far."""

    finished_at: int
    files_checked: int
    files_reingested: int
    candles_corrected: int
    total_files_reingested: int
    total_candles_corrected: int


def file_key(file: ArchiveFile) -> bytes:
    return FILE_PREFIX + file.path.encode()


def ingested_from_record(record: dict[str, object]) -> IngestedFile | None:
    """An ``ArchiveChecksum`` record back to an IngestedFile (None when it is not sound)."""
    kind, symbol, interval = record.get("kind"), record.get("symbol"), record.get("interval")
    period, start, end = (
        record.get("period_start"),
        record.get("start_time"),
        record.get("end_time"),
    )
    sha = record.get("sha256")
    if not (isinstance(symbol, str) and isinstance(interval, str) and isinstance(sha, str)):
        return None
    if not (isinstance(period, int) and isinstance(start, int) and isinstance(end, int)):
        return None
    try:
        if kind == "monthly":
            file = ArchiveFile.monthly(symbol, interval, period)
        elif kind == "daily":
            file = ArchiveFile.daily(symbol, interval, period)
        else:
            return None
    except ValueError:
        return None
    if file.path != record.get("path") or not file.start_ms <= start < end <= file.end_ms:
        return None
    return IngestedFile(file, start, end, sha)


def read_ledger(
    cfg: KafkaConfig, codec: AvroCodec | None = None, timeout_s: float = 30.0
) -> tuple[dict[str, IngestedFile], AuditRecord | None]:
    """The ledger on ``cfg.offsets_topic``: ingested files by path, and the last audit."""
    codec = codec or AvroCodec()
    files: dict[str, IngestedFile] = {}
    audit: AuditRecord | None = None
    for key, value in read_latest(cfg, cfg.offsets_topic, timeout_s).items():
        if value is None or not (key.startswith(FILE_PREFIX) or key == AUDIT_KEY):
            continue
        try:
            name, record = codec.decode(value)
        except UndecodableRecord as exc:
            logger.warning("archive ledger: %s: %s", key, exc)
            continue
        if name == ARCHIVE_CHECKSUM:
            entry = ingested_from_record(record)
            if entry is None:
                logger.warning("archive ledger: %s: not a sound entry, ignored", key)
            else:
                files[entry.file.path] = entry
        elif name == ARCHIVE_AUDIT:
            audit = AuditRecord(**{f: int(record[f]) for f in AuditRecord.__slots__})
    return files, audit


class ArchiveLedger(OffsetsTopicWriter):
    """Load and record ingested archive files and audit outcomes on the offsets topic."""

    what = "archive ledger write"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # OffsetsTopicWriter's
        super().__init__(*args, **kwargs)
        #: By file path: what was published from it.
        self.files: dict[str, IngestedFile] = {}
        self.last_audit: AuditRecord | None = None

    def load(self, timeout_s: float = 30.0) -> dict[str, IngestedFile]:
        """Read the ledger (latest value per key) into ``files`` and ``last_audit``."""
        files, self.last_audit = read_ledger(self.cfg, self.codec, timeout_s)
        self.files.update(files)
        return self.files

    def record(self, entry: IngestedFile) -> IngestedFile:
        """Record that ``entry``'s candles are in the topic. The same content recorded again
        widens the range (a file used in two parts); new content replaces it."""
        old = self.files.get(entry.file.path)
        if old is not None and old.sha256 == entry.sha256:
            entry = IngestedFile(
                entry.file,
                min(old.start_ms, entry.start_ms),
                max(old.end_ms, entry.end_ms),
                entry.sha256,
            )
            if entry == old:
                return entry
        file = entry.file
        value = self.codec.encode(
            ARCHIVE_CHECKSUM,
            {
                "path": file.path,
                "kind": file.kind,
                "symbol": file.symbol,
                "interval": file.interval,
                "period_start": file.start_ms,
                "start_time": entry.start_ms,
                "end_time": entry.end_ms,
                "sha256": entry.sha256,
                "recorded_at": self._clock_ms(),
            },
        )
        self._produce(file_key(file), value)
        self.producer.poll(0)
        self.files[file.path] = entry
        return entry

    def record_audit(
        self, finished_at: int, files_checked: int, files_reingested: int, candles_corrected: int
    ) -> AuditRecord:
        before = self.last_audit
        audit = AuditRecord(
            finished_at=finished_at,
            files_checked=files_checked,
            files_reingested=files_reingested,
            candles_corrected=candles_corrected,
            total_files_reingested=(before.total_files_reingested if before else 0)
            + files_reingested,
            total_candles_corrected=(before.total_candles_corrected if before else 0)
            + candles_corrected,
        )
        value = self.codec.encode(
            ARCHIVE_AUDIT, {f: getattr(audit, f) for f in AuditRecord.__slots__}
        )
        self._produce(AUDIT_KEY, value)
        self.producer.poll(0)
        self.last_audit = audit
        return audit
