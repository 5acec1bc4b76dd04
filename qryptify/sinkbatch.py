"""The sink's pure middle: accumulate consumed records, decide when to flush, split a batch into
what the database gets, what the DLQ gets and which offsets may be committed afterwards.

No sockets, no clocks: time arrives as ``now_ms`` and decoding as an injected function, so the
sink service and ``qryptify replay`` (both driven by ``qryptify.sinkloop``) share every rule
and the unit tests check them without a broker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from qryptify.errors import IngestorError, InvalidKline, UndecodableRecord
from qryptify.kline import EmptyRange, Event, Kline, latest_per_key, validate_kline

#: Open times outside [2010-01-01, 2200-01-01) cannot be Binance candles (and would overflow
#: or distort TIMESTAMPTZ); such records go to the DLQ instead of failing the transaction.
MIN_OPEN_MS = 1_262_304_000_000
MAX_OPEN_MS = 7_258_118_400_000


class RawRecord(Protocol):
    """What the loop reads off a consumed record (``confluent_kafka.Message`` fits)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...


class Record:
    """A plain consumed record (tests, tools); same accessors as ``confluent_kafka.Message``."""

    __slots__ = ("_key", "_offset", "_partition", "_topic", "_value")

    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value = key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """Flush when ``batch_size`` records are held or the oldest has waited ``max_latency_ms``.

    Bulk replays fill a batch long before the deadline (few large transactions); a live stream
    of a few closes per minute is flushed within ``max_latency_ms`` of its first record.
    """

    batch_size: int
    max_latency_ms: int

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_latency_ms < 1:
            raise ValueError(f"max_latency_ms must be >= 1, got {self.max_latency_ms}")

    def should_flush(self, held: int, first_at_ms: int | None, now_ms: int) -> bool:
        if held == 0 or first_at_ms is None:
            return False
        return held >= self.batch_size or now_ms - first_at_ms >= self.max_latency_ms

    def wait_ms(self, held: int, first_at_ms: int | None, now_ms: int) -> int:
        """How long the next poll may block without missing the flush deadline."""
        if held == 0 or first_at_ms is None:
            return self.max_latency_ms
        return max(0, first_at_ms + self.max_latency_ms - now_ms)

    def room(self, held: int) -> int:
        """How many more records to ask the consumer for."""
        return max(1, self.batch_size - held)


R = TypeVar("R", bound=RawRecord)


@dataclass(slots=True)
class PendingBatch:
    """Records consumed but not yet written and committed, in consumption order."""

    records: list[RawRecord] = field(default_factory=list)
    first_at_ms: int | None = None

    def __len__(self) -> int:
        return len(self.records)

    def add(self, records: Sequence[RawRecord], now_ms: int) -> None:
        if not records:
            return
        if not self.records:
            self.first_at_ms = now_ms
        self.records.extend(records)

    def drop_partitions(self, partitions: Iterable[TopicPartitionKey]) -> int:
        """Forget records of partitions we no longer own; return how many were dropped."""
        gone = set(partitions)
        if not gone:
            return 0
        kept = [r for r in self.records if (r.topic(), r.partition()) not in gone]
        dropped = len(self.records) - len(kept)
        self.records = kept
        if not kept:
            self.first_at_ms = None
        return dropped

    def clear(self) -> None:
        self.records = []
        self.first_at_ms = None


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """A record the sink cannot write, with why; it goes to the DLQ with its original bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error_class: str

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        return [
            ("qryptify.reason", self.reason.encode()),
            ("qryptify.topic", self.topic.encode()),
            ("qryptify.partition", str(self.partition).encode()),
            ("qryptify.offset", str(self.offset).encode()),
            ("qryptify.error_class", self.error_class.encode()),
        ]


@dataclass(frozen=True, slots=True)
class Split:
    """One batch, ready for one transaction and then one offset commit."""

    klines: list[Kline]  # one per (symbol, interval, open time): the highest offset's
    empty_ranges: list[EmptyRange]  # one per (symbol, interval, start): the widest
    dlq: list[DlqEntry]
    offsets: dict[TopicPartitionKey, int]  # next offset to read, per partition
    records: int  # records consumed (klines + empty ranges + DLQ, before de-duplication)
    newest: list[Kline]  # per pair, the candle with the latest close (latency metrics)


class KeyMismatch(IngestorError, ValueError):
    """The record's key is not the pair of its value: it would sit in the wrong partition."""

    def __init__(self, key: bytes | None, expected: str) -> None:
        self.key = key
        self.expected = expected
        super().__init__(f"record key {key!r:.60} is not the value's pair key {expected!r}")


_DECIMAL = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
#: The eight decimal fields joined by tabs: one regex call checks them all.
_DECIMALS_RE = re.compile(rf"{_DECIMAL}(?:\t{_DECIMAL}){{7}}")
_FLOAT_FIELDS = (
    "open", "high", "low", "close", "volume", "quote_volume", "taker_buy_base", "taker_buy_quote",
)  # fmt: skip


def check_kline(k: Kline) -> Kline:
    """``validate_kline`` plus what the database needs, so that no record can make a
    transaction fail for good: decimals in plain notation (what PostgreSQL's float8 input
    reads; ``Decimal`` also takes ``1_000``, ``NaN`` or spaces), finite and non-underflowing as
    DOUBLE PRECISION, an open time within 2010..2200. Raises InvalidKline."""
    validate_kline(k)
    texts = (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.taker_buy_base,
             k.taker_buy_quote)  # fmt: skip
    joined = "\t".join(texts)
    if not _DECIMALS_RE.fullmatch(joined):
        bad = next(n for n, t in zip(_FLOAT_FIELDS, texts, strict=True) if not _plain(t))
        raise InvalidKline(f"{k.key} {k.open_time}: {bad} {getattr(k, bad)!r:.40} is not a decimal")
    if not MIN_OPEN_MS <= k.open_time < MAX_OPEN_MS:
        raise InvalidKline(f"{k.key}: open_time {k.open_time} is outside 2010..2200")
    # Without an exponent and with fewer than 300 characters no value can leave the double range.
    if len(joined) > 300 or "e" in joined or "E" in joined:
        for name, text in zip(_FLOAT_FIELDS, texts, strict=True):
            if math.isinf(float(text)) or _underflows(text):
                raise InvalidKline(
                    f"{k.key} {k.open_time}: {name} {text:.40} is out of range for DOUBLE PRECISION"
                )
    return k


def _underflows(text: str) -> bool:
    """A non-zero decimal that rounds to 0.0 (PostgreSQL's float8 input rejects those)."""
    mantissa = text.lower().partition("e")[0]
    return float(text) == 0.0 and any(d in mantissa for d in "123456789")


def _plain(text: str) -> bool:
    return re.fullmatch(_DECIMAL, text) is not None


def offsets_to_commit(records: Iterable[RawRecord]) -> dict[TopicPartitionKey, int]:
    """Per partition, the offset to commit: last consumed + 1 (the next one to read)."""
    nxt: dict[TopicPartitionKey, int] = {}
    for r in records:
        tp = (r.topic() or "", r.partition() or 0)
        offset = (r.offset() or 0) + 1
        if offset > nxt.get(tp, -1):
            nxt[tp] = offset
    return nxt


def _dlq(r: RawRecord, exc: BaseException) -> DlqEntry:
    return DlqEntry(
        topic=r.topic() or "",
        partition=r.partition() or 0,
        offset=r.offset() or 0,
        key=r.key(),
        value=r.value(),
        reason=str(exc),
        error_class=type(exc).__name__,
    )


def split_batch(records: Sequence[RawRecord], decode: Callable[[bytes], Event]) -> Split:
    """Decode, validate and de-duplicate one batch. Never raises for bad input: every record
    either becomes a row or a DLQ entry, and every one is covered by the offsets to commit."""
    klines: list[tuple[int, Kline]] = []
    ranges: dict[tuple[str, str, int], EmptyRange] = {}
    dlq: list[DlqEntry] = []
    for r in records:
        value = r.value()
        try:
            if value is None:
                raise UndecodableRecord("null value (tombstone)")
            event = decode(value)
            key = r.key()
            if key is not None and key != event.key.encode():
                raise KeyMismatch(key, event.key)
            if isinstance(event, Kline):
                klines.append((r.offset() or 0, check_kline(event)))
            else:
                ident = (event.symbol, event.interval, event.start_time)
                seen = ranges.get(ident)
                if seen is None or event.end_time >= seen.end_time:
                    ranges[ident] = event
        except (UndecodableRecord, InvalidKline, KeyMismatch, ValueError) as exc:
            dlq.append(_dlq(r, exc))
    unique = latest_per_key(klines)
    newest: dict[tuple[str, str], Kline] = {}
    for k in unique:
        pair = (k.symbol, k.interval)
        best = newest.get(pair)
        if best is None or k.close_time > best.close_time:
            newest[pair] = k
    return Split(
        klines=unique,
        empty_ranges=list(ranges.values()),
        dlq=dlq,
        offsets=offsets_to_commit(records),
        records=len(records),
        newest=list(newest.values()),
    )


W = TypeVar("W")


def write_within_limit(
    write: Callable[[Sequence[Kline], Sequence[EmptyRange]], W],
    klines: Sequence[Kline],
    empty_ranges: Sequence[EmptyRange],
    is_limit_error: Callable[[BaseException], bool],
) -> list[W]:
    """Write in one transaction; when the database refuses it for exceeding a per-transaction
    limit (TimescaleDB's tuple decompression limit on compressed chunks), split the candles in
    two halves by (pair, time) and write each in its own transaction, recursively.

    The caller commits Kafka offsets only after every part returned, so a crash between parts
    re-delivers the batch and the parts already written are rewritten as no-ops.
    """
    try:
        return [write(klines, empty_ranges)]
    except Exception as exc:
        if not is_limit_error(exc) or len(klines) <= 1:
            raise
    ordered = sorted(klines, key=lambda k: (k.symbol, k.interval, k.open_time))
    half = len(ordered) // 2
    return write_within_limit(
        write, ordered[:half], empty_ranges, is_limit_error
    ) + write_within_limit(write, ordered[half:], (), is_limit_error)
