"""What one planned unit (an archive file, a REST page) produced, as topic values (no Kline
per candle), and the candles of it that may be published: those passing the sink's rules
(``split_batch``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import Counter

from qryptify.archive_ledger import IngestedFile
from qryptify.avro import EncodedKlines, KlineCodec
from qryptify.kline import EmptyRange
from qryptify.publish import event_position
from qryptify.sink.batch import rejected_values

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
    """What one unit produced: candles already encoded in blocks, each ascending by open time
    (``rest`` pages, ``archive`` files), and the ranges the exchange confirmed empty."""

    rest: list[EncodedKlines] = field(default_factory=list)
    empty: list[EmptyRange] = field(default_factory=list)
    archive: list[EncodedKlines] = field(default_factory=list)
    files: list[IngestedFile] = field(default_factory=list)  # archive files the rows came from

    def extend(self, other: UnitResult) -> None:
        self.rest.extend(other.rest)
        self.empty.extend(other.empty)
        self.archive.extend(other.archive)
        self.files.extend(other.files)

    @property
    def rest_candles(self) -> int:
        return sum(len(block) for block in self.rest)

    @property
    def archive_candles(self) -> int:
        return sum(len(block) for block in self.archive)

    @property
    def candles(self) -> int:
        return self.rest_candles + self.archive_candles

    def encoded(self, codec: KlineCodec) -> tuple[list[int], list[bytes], list[bytes]]:
        """Everything to publish, in publish order: ``(positions, values, last candles)``, the
        last candles' values (at most RECENT_KEPT, newest last).

        Candles of every block are merged by open time, empty ranges by start time after the
        candles of the same time."""
        blocks = [*self.archive, *self.rest]
        if not self.empty and len(blocks) == 1:
            block = blocks[0]  # the common case: one file or one page, nothing to merge
            return block.open_times, block.values, block.values[-RECENT_KEPT:]
        items: list[tuple[int, int, int, bytes]] = []
        for block in blocks:
            items += [(t, 0, t, v) for t, v in zip(block.open_times, block.values, strict=True)]
        items += [(r.start_time, 1, event_position(r), codec.encode(r)) for r in self.empty]
        items.sort(key=lambda item: (item[0], item[1]))
        candles = [item[3] for item in items if item[1] == 0]
        return [i[2] for i in items], [i[3] for i in items], candles[-RECENT_KEPT:]


def with_missing(first: EncodedKlines, second: EncodedKlines) -> EncodedKlines:
    """``first`` plus the candles of ``second`` (the same pair) it lacks, ascending."""
    seen = set(first.open_times)
    extra = second.pick([i for i, t in enumerate(second.open_times) if t not in seen])
    if not extra.values:
        return first
    both = EncodedKlines(
        first.symbol,
        first.interval,
        first.open_times + extra.open_times,
        first.close_times + extra.close_times,
        first.values + extra.values,
    )
    return both.pick(sorted(range(len(both)), key=both.open_times.__getitem__))


def valid_rows(rows: EncodedKlines, codec: KlineCodec, source: str, where: object) -> EncodedKlines:
    """Candles (already encoded) that pass the sink's verdicts (``split_batch``: the rules of
    ``check_kline``, fast path included), as the WebSocket path validates before publishing;
    the others are counted, logged and left out (never published, never recorded empty)."""
    key = f"{rows.symbol}|{rows.interval}".encode()
    dlq = rejected_values(key, rows.values, codec)
    if not dlq:
        return rows
    bad = {entry.offset for entry in dlq}
    INVALID.labels(source).inc(len(bad))
    for entry in dlq[:3]:
        logger.warning("%s %s: invalid candle not published: %s", source, where, entry.reason)
    return rows.pick([i for i in range(len(rows)) if i not in bad])
