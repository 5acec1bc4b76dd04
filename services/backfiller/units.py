"""What one planned unit (an archive file, a REST page) produced, and the candles of it that
may be published: those passing the sink's rules (``check_kline`` / ``split_batch``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter

from qryptify.archive_ledger import IngestedFile
from qryptify.avro import EncodedKlines, KlineCodec
from qryptify.errors import InvalidKline
from qryptify.kline import EmptyRange, Event, Kline
from qryptify.pairs import Pair
from qryptify.publish import event_position
from qryptify.sink.batch import Record, check_kline, split_batch

logger = logging.getLogger(__name__)

#: Candles of a unit kept for the recheck (``backfill.recheck_recent`` is at most this).
RECENT_KEPT = 1_500

INVALID = Counter(
    "qryptify_backfill_invalid_candles_total",
    "Candles the exchange sent that fail the kline rules (not published, not recorded empty)",
    ["source"],
)


@dataclass(slots=True)
class UnitResult:
    """What one unit produced: REST ``klines`` ascending by open time, archive rows already
    encoded (``archive``, each block ascending), confirmed empty ranges."""

    klines: list[Kline] = field(default_factory=list)
    empty: list[EmptyRange] = field(default_factory=list)
    archive: list[EncodedKlines] = field(default_factory=list)
    files: list[IngestedFile] = field(default_factory=list)  # archive files the rows came from

    def extend(self, other: UnitResult) -> None:
        self.klines.extend(other.klines)
        self.empty.extend(other.empty)
        self.archive.extend(other.archive)
        self.files.extend(other.files)

    @property
    def candles(self) -> int:
        return len(self.klines) + sum(len(block) for block in self.archive)

    def events(self) -> list[Event]:
        """The REST klines and empty ranges in open-time order (archive blocks aside)."""
        if not self.empty:
            return list(self.klines)  # already in open-time order
        merged: list[tuple[int, Event]] = [(k.open_time, k) for k in self.klines]
        merged += [(r.start_time, r) for r in self.empty]
        merged.sort(key=lambda item: item[0])
        return [event for _, event in merged]

    def encoded(self, codec: KlineCodec) -> tuple[list[int], list[bytes], list[Kline | bytes]]:
        """Everything to publish, in publish order: ``(positions, values, last candles)``, the
        last candles (at most RECENT_KEPT, newest last) as Klines or their encoded values.

        Archive rows and REST klines are merged by open time, empty ranges by start time after
        the candles of the same time (the order ``events`` gives, archive rows included)."""
        if not self.klines and not self.empty and len(self.archive) == 1:
            block = self.archive[0]  # the common case: one archive file, nothing to merge
            return block.open_times, block.values, list(block.values[-RECENT_KEPT:])
        if not self.archive:
            events = self.events()
            values = [codec.encode(e) for e in events]
            recent: list[Kline | bytes] = [k for k in self.klines[-RECENT_KEPT:]]
            return [event_position(e) for e in events], values, recent
        items: list[tuple[int, int, int, bytes, Kline | bytes | None]] = []
        for block in self.archive:
            items += [(t, 0, t, v, v) for t, v in zip(block.open_times, block.values, strict=True)]
        items += [(k.open_time, 0, k.open_time, codec.encode(k), k) for k in self.klines]
        items += [(r.start_time, 1, event_position(r), codec.encode(r), None) for r in self.empty]
        items.sort(key=lambda item: (item[0], item[1]))
        candles = [item[4] for item in items if item[4] is not None]
        return [i[2] for i in items], [i[3] for i in items], candles[-RECENT_KEPT:]


def valid_klines(pair: Pair, klines: Sequence[Kline]) -> list[Kline]:
    """REST candles that pass the rules the sink applies (``check_kline``), as the WebSocket
    path validates before publishing; the others are counted and logged, never published."""
    good: list[Kline] = []
    for k in klines:
        try:
            good.append(check_kline(k))
        except InvalidKline as exc:
            INVALID.labels("rest").inc()
            logger.warning("%s: invalid REST candle not published: %s", pair, exc)
    return good


def valid_rows(rows: EncodedKlines, codec: KlineCodec, file: object) -> EncodedKlines:
    """Archive rows (already encoded) that pass the sink's verdicts (``split_batch``: the same
    rules, fast path included); the others are counted, logged and left out."""
    key = f"{rows.symbol}|{rows.interval}".encode()
    verdict = split_batch([Record("", 0, i, key, v) for i, v in enumerate(rows.values)], codec)
    if not verdict.dlq:
        return rows
    bad = {entry.offset for entry in verdict.dlq}
    INVALID.labels("archive").inc(len(bad))
    for entry in verdict.dlq[:3]:
        logger.warning("archive %s: invalid row not published: %s", file, entry.reason)
    return rows.pick([i for i in range(len(rows)) if i not in bad])
