"""The sink's pure middle: accumulate consumed records, decide when to flush, split a batch into
what the database gets, what the DLQ gets and which offsets may be committed afterwards.

No sockets, no clocks: time arrives as ``now_ms`` and decoding as an injected function, so the
sink service and ``qryptify replay`` (both driven by ``qryptify.sink.loop``) share every rule
and the unit tests check them without a broker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from qryptify.avro import KlineCodec, encode_long
from qryptify.errors import (
    InvalidEmptyRange,
    InvalidKline,
    KeyMismatch,
    PairError,
    UndecodableRecord,
)
from qryptify.kline import EmptyRange, Kline, validate_kline
from qryptify.native import KlineStager, StagedRows, make_kline_stager, make_staged_rows
from qryptify.pairs import FIXED_INTERVAL_MS, close_time, validate_interval, validate_symbol
from qryptify.sink.rows import DAY_MS, LINE, CandleBatch, CandleRow, PairKey, kline_line, ts_text

#: Open times outside [2010-01-01, 2200-01-01) cannot be Binance candles (and would overflow
#: or distort TIMESTAMPTZ); such records go to the DLQ instead of failing the transaction.
MIN_OPEN_MS = 1_262_304_000_000
MAX_OPEN_MS = 7_258_118_400_000
#: The longest empty range that can be true: USDⓈ-M futures history is shorter than this, so a
#: longer one is a bug upstream, not an exchange fact (it would hide real candles forever).
MAX_EMPTY_SPAN_MS = 20 * 366 * DAY_MS
#: Dead-lettered records above this size go truncated (producers refuse 1 MB by default).
DLQ_MAX_RECORD_BYTES = 256 * 1024
DLQ_KEEP_VALUE_BYTES = 64 * 1024
DLQ_KEEP_KEY_BYTES = 1024


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
    """Flush when ``batch_size`` records are held, when the oldest has waited
    ``max_latency_ms``, or — ``idle`` — when the consumer has nothing more queued and the
    writer is free.

    Bulk replays fill a batch while the previous one is written (few large transactions); live
    closes are written as soon as they arrive, since nothing would be gained by waiting.
    """

    batch_size: int
    max_latency_ms: int
    #: Off: wait for size or age even when nothing more is queued (tests hold records so).
    when_idle: bool = True
    #: At most this many records per ``consume()`` call. confluent-kafka builds every record
    #: of a call while holding the GIL; at 20,000 that is ~25 ms in which the writer thread
    #: cannot hand PostgreSQL the next COPY chunk. Replaying 1M klines: 214k rows/s taking
    #: the whole batch per call, 354k with 500 (and the consumer's CPU per row halved).
    poll_chunk: int = 500

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_latency_ms < 1:
            raise ValueError(f"max_latency_ms must be >= 1, got {self.max_latency_ms}")
        if self.poll_chunk < 1:
            raise ValueError(f"poll_chunk must be >= 1, got {self.poll_chunk}")

    def should_flush(
        self, held: int, first_at_ms: int | None, now_ms: int, *, idle: bool = False
    ) -> bool:
        if held == 0 or first_at_ms is None:
            return False
        return (
            (idle and self.when_idle)
            or held >= self.batch_size
            or now_ms - first_at_ms >= self.max_latency_ms
        )

    def wait_ms(self, held: int, first_at_ms: int | None, now_ms: int) -> int:
        """How long the next poll may block without missing the flush deadline."""
        if held == 0 or first_at_ms is None:
            return self.max_latency_ms
        return max(0, first_at_ms + self.max_latency_ms - now_ms)

    def room(self, held: int) -> int:
        """How many more records to ask the consumer for in one call."""
        return max(1, min(self.poll_chunk, self.batch_size - held))


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
    #: The PostgreSQL SQLSTATE when the database refused the record (e.g. 22008, 23514).
    sqlstate: str | None = None

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        headers: list[tuple[str, str | bytes | None]] = [
            ("qryptify.reason", self.reason.encode()),
            ("qryptify.topic", self.topic.encode()),
            ("qryptify.partition", str(self.partition).encode()),
            ("qryptify.offset", str(self.offset).encode()),
            ("qryptify.error_class", self.error_class.encode()),
        ]
        if self.sqlstate is not None:
            headers.append(("qryptify.sqlstate", self.sqlstate.encode()))
        return headers

    def bounded(self) -> tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]:
        """(key, value, headers) to produce to the DLQ. A record larger than
        ``DLQ_MAX_RECORD_BYTES`` (a producer or the broker would refuse it, and the sink would
        crash-loop on it) goes truncated to its first bytes, with its original sizes and the
        SHA-256 of its original value in headers; its topic, partition and offset locate the
        original, which the topic keeps."""
        key, value, headers = self.key, self.value, self.headers()
        size = len(key or b"") + len(value or b"")
        if size <= DLQ_MAX_RECORD_BYTES:
            return key, value, headers
        digest = hashlib.sha256(value or b"").hexdigest()
        headers += [
            ("qryptify.truncated", b"true"),
            ("qryptify.original_size", str(len(value or b"")).encode()),
            ("qryptify.original_key_size", str(len(key or b"")).encode()),
            ("qryptify.sha256", digest.encode()),
        ]
        short_key = None if key is None else key[:DLQ_KEEP_KEY_BYTES]
        short_value = None if value is None else value[:DLQ_KEEP_VALUE_BYTES]
        return short_key, short_value, headers


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
    # A generic Avro reader may hand over longs past 64 bits (10-byte varints).
    if k.trades >= 2**63 or not -(2**63) <= k.ingested_at < 2**63:
        raise InvalidKline(f"{k.key} {k.open_time}: trades or ingested_at beyond a 64-bit long")
    # Without an exponent and with fewer than 300 characters no value can leave the double range.
    if len(joined) > 300 or "e" in joined or "E" in joined:
        for name, text in zip(_FLOAT_FIELDS, texts, strict=True):
            if math.isinf(float(text)) or _underflows(text):
                raise InvalidKline(
                    f"{k.key} {k.open_time}: {name} {text:.40} is out of range for DOUBLE PRECISION"
                )
    return k


def check_empty_range(e: EmptyRange) -> EmptyRange:
    """What an empty-range event must satisfy before the database sees it (the Rust core
    reproduces these verdicts): a valid symbol and interval; ``MIN_OPEN_MS <= start_time <
    end_time <= MAX_OPEN_MS``; a span of at most ``MAX_EMPTY_SPAN_MS``; ``confirmed_at`` within
    2010..2200. Raises InvalidEmptyRange naming the bad field."""
    where = f"empty range {e.symbol!r:.40}|{e.interval!r:.10}"
    try:
        validate_symbol(e.symbol)
        validate_interval(e.interval)
    except PairError as exc:
        raise InvalidEmptyRange(f"{where}: {exc}") from None
    if not MIN_OPEN_MS <= e.start_time < MAX_OPEN_MS:
        raise InvalidEmptyRange(f"{where}: start_time {e.start_time} is outside 2010..2200")
    if not MIN_OPEN_MS < e.end_time <= MAX_OPEN_MS:
        raise InvalidEmptyRange(f"{where}: end_time {e.end_time} is outside 2010..2200")
    if e.end_time <= e.start_time:
        raise InvalidEmptyRange(f"{where}: end_time {e.end_time} <= start_time {e.start_time}")
    if e.end_time - e.start_time > MAX_EMPTY_SPAN_MS:
        raise InvalidEmptyRange(
            f"{where}: spans {(e.end_time - e.start_time) // DAY_MS} days (at most "
            f"{MAX_EMPTY_SPAN_MS // DAY_MS})"
        )
    if not MIN_OPEN_MS <= e.confirmed_at < MAX_OPEN_MS:
        raise InvalidEmptyRange(f"{where}: confirmed_at {e.confirmed_at} is outside 2010..2200")
    return e


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


#: A fast-path COPY line: timestamps and names come from validated data, so only the eight
#: decimals need checking; unsigned plain decimals of at most 30+30 digits are exactly what
#: ``check_kline`` accepts without further range checks (negative prices or exponents take the
#: exact path). One fullmatch also proves that no field smuggles a tab or newline into COPY.
_PLAIN = rb"[0-9]{1,30}(?:\.[0-9]{1,30})?"
_FAST_LINE = re.compile(
    rb"[^\t\n]+\t[^\t\n]+\t[^\t\n]+\t"
    + rb"\t".join([_PLAIN] * 5)
    + rb"\t[^\t\n]+\t"
    + _PLAIN
    + rb"\t[0-9]+\t"
    + _PLAIN
    + rb"\t"
    + _PLAIN
    + rb"\n"
)


@dataclass(frozen=True, slots=True)
class _PairInfo:
    names: tuple[str, str]
    key: bytes  # the record key this pair carries: b"SYMBOL|interval"
    symbol: bytes
    interval: bytes
    interval_ms: int  # 0 for 1M (calendar months)


#: Raw 6-byte zigzag varints of millisecond times -> (ms, TIMESTAMPTZ text). Candles of many
#: pairs share open and close times, so most times are read with one slice and one lookup.
_TIMES: dict[bytes, tuple[int, bytes]] = {}
_TIMES_LIMIT = 250_000
#: Per varint length n: the continuation bits of an n-byte varint, and their required value.
_VARINT_HIGH = [0] + [int.from_bytes(b"\x80" * n, "little") for n in range(1, 10)]
_VARINT_FORM = [0] + [int.from_bytes(b"\x80" * (n - 1) + b"\x00", "little") for n in range(1, 10)]


def _read_time(d: bytes, p: int) -> tuple[int, bytes, int] | None:
    """The zigzag varint time at ``p``: (ms, text, length), learning 6-byte ones."""
    n = 0
    shift = 0
    q = p
    while True:
        b = d[q]  # IndexError: truncated (the caller catches it)
        q += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if shift >= 63:
            return None
    ms = (n >> 1) ^ -(n & 1)
    if not MIN_OPEN_MS <= ms < MAX_OPEN_MS + 100 * 86_400_000:
        return None
    text = ts_text(ms)
    if q - p == 6:
        if len(_TIMES) >= _TIMES_LIMIT:
            _TIMES.clear()
        _TIMES[d[p:q]] = (ms, text)
    return ms, text, q - p


#: Where a staged record came from: (partition, offset, key, value).
Origin = tuple[TopicPartitionKey, int, bytes | None, bytes | None]
_StagedRow = tuple[TopicPartitionKey, int, bytes, CandleRow, bytes | None, bytes | None]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row or an empty range the database refused on its own (a one-record transaction
    failed with a data error): it goes to the DLQ with the SQLSTATE."""

    row: CandleRow | None
    empty_range: EmptyRange | None
    sqlstate: str
    reason: str


class _RowLookup(Protocol):
    def get(self, ident: tuple[bytes, int]) -> _StagedRow | None: ...


@dataclass(frozen=True, slots=True)
class _Origins:
    rows: _RowLookup
    ranges: Mapping[EmptyRange, Origin]

    def of(self, rejected: Rejected) -> Origin | None:
        if rejected.empty_range is not None:
            return self.ranges.get(rejected.empty_range)
        if rejected.row is None:
            return None
        symbol, interval, open_time, _line = rejected.row
        staged = self.rows.get((f"{symbol}|{interval}".encode(), open_time))
        if staged is None:
            return None
        tp, offset, _ingested, _row, key, value = staged
        return tp, offset, key, value


@dataclass(frozen=True, slots=True)
class Split:
    """One batch, ready for one transaction and then one offset commit."""

    batch: CandleBatch  # one row per (symbol, interval, open time): the highest offset's
    #: One per (symbol, interval, start): the widest. Written before the rows: a range
    #: deletes the stored candles it covers, and rows staged before it were dropped (a row
    #: in ``batch`` inside a range came after it and wins).
    empty_ranges: list[EmptyRange]
    dlq: list[DlqEntry]
    offsets: dict[TopicPartitionKey, int]  # next offset to read, per partition
    records: int  # records consumed (klines + empty ranges + DLQ, before de-duplication)
    newest: list[tuple[int, int]]  # per pair, (close time, ingested at) of its latest candle
    first_offsets: dict[TopicPartitionKey, int]  # lowest offset held, per partition
    row_partitions: list[TopicPartitionKey]  # the partition of each row of ``batch``
    #: Where each row and empty range came from (to dead-letter one the database rejects).
    origins: _Origins | None = None
    range_partitions: list[TopicPartitionKey] = dataclasses.field(default_factory=list)

    def without(self, partitions: set[TopicPartitionKey]) -> Split:
        """The same batch minus what came from ``partitions`` (revoked while retrying)."""
        keep = [i for i, tp in enumerate(self.row_partitions) if tp not in partitions]
        rows = [self.batch.rows[i] for i in keep]
        return Split(
            batch=CandleBatch.of(rows),
            # a revoked partition's range is applied by its new owner, in order with its rows
            empty_ranges=[
                r
                for r, tp in zip(self.empty_ranges, self.range_partitions, strict=True)
                if tp not in partitions
            ],
            dlq=[e for e in self.dlq if (e.topic, e.partition) not in partitions],
            offsets={tp: o for tp, o in self.offsets.items() if tp not in partitions},
            records=self.records,
            newest=self.newest,
            first_offsets={tp: o for tp, o in self.first_offsets.items() if tp not in partitions},
            row_partitions=[self.row_partitions[i] for i in keep],
            range_partitions=[tp for tp in self.range_partitions if tp not in partitions],
            origins=self.origins,
        )

    def rejected_entry(self, rejected: Rejected) -> DlqEntry:
        """The DLQ entry of a row or empty range the database refused: its original record
        (the staged origin) with the SQLSTATE and the server's message."""
        origin: Origin | None = None
        if self.origins is not None:
            origin = self.origins.of(rejected)
        if origin is None:  # not staged from a record (tools): the row text is all there is
            tp: TopicPartitionKey = ("", 0)
            origin = (tp, 0, None, rejected.row[3] if rejected.row else None)
        (topic, partition), offset, key, value = origin
        return DlqEntry(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=f"database rejected the record: {rejected.reason}",
            error_class="DatabaseRejected",
            sqlstate=rejected.sqlstate,
        )


class StagedBatch:
    """Records consumed but not yet written, staged as they arrive: every Kline becomes its
    COPY line at once (so decoding overlaps the previous batch's database write), bad records
    become DLQ entries, and empty ranges are kept widest-first.

    Most records take the fast path (the Avro body straight to the COPY line, with float
    pre-checks); anything unusual takes the exact path (full decode + ``check_kline``), which
    decides alone. Both paths produce the same line for the same candle. The fast path runs in
    the compiled core (``qryptify.native``, one call per consumed batch) when it is built, and
    as ``_fast`` below otherwise (``native=False`` forces that; tests compare the two).
    """

    def __init__(
        self,
        codec: KlineCodec,
        *,
        fast: bool = True,
        floors: Mapping[int, int] | None = None,
        native: bool = True,
    ) -> None:
        self.codec = codec
        #: Per partition, the committed position: records below it are already written
        #: (consumed again after a rebalance) and would overwrite newer values.
        self._floors: Mapping[int, int] = floors if floors is not None else {}
        self.first_at_ms: int | None = None
        self._prefix = codec.fast_prefix if fast else None
        self._pairs: dict[bytes, _PairInfo] = {}  # by record key; learnt on the exact path
        self._native: KlineStager | None = None
        if native and self._prefix is not None:
            self._native = make_kline_stager(self._prefix)
        self.clear()

    def clear(self) -> None:
        self.first_at_ms = None
        self._count = 0
        #: (pair key, open time) -> (partition, offset, raw ingested_at varint, row, key,
        #: value): the record itself is kept (a reference) in case the database rejects it.
        #: With the compiled core, its twin (same order, same tuples) held in Rust.
        self._rows: dict[tuple[bytes, int], _StagedRow] | StagedRows
        self._rows = {} if self._native is None else make_staged_rows()
        self._ranges: dict[tuple[str, str, int], tuple[TopicPartitionKey, EmptyRange, Origin]]
        self._ranges = {}
        self._dlq: list[DlqEntry] = []
        self._offsets: dict[TopicPartitionKey, int] = {}
        self._firsts: dict[TopicPartitionKey, int] = {}
        self._held: dict[TopicPartitionKey, int] = {}

    def __len__(self) -> int:
        return self._count

    def held(self, partitions: Iterable[TopicPartitionKey]) -> int:
        """Records held for these partitions."""
        return sum(self._held.get(tp, 0) for tp in partitions)

    def add(self, records: Sequence[RawRecord], now_ms: int) -> None:
        if not records:
            return
        if self._native is not None:
            self._add_native(records, now_ms, None, None)
            return
        if self._count == 0:
            self.first_at_ms = now_ms
        self._count += len(records)
        self._add_python(records)

    def add_consumed(
        self, messages: Sequence[Any], now_ms: int, assigned: set[TopicPartitionKey]
    ) -> list[Any]:
        """Stage consumed messages of ``assigned`` partitions; return those that carry an
        error instead of a record (end of partition, broker errors: the loop's to judge)."""
        errors: list[Any] = []
        if self._native is not None:
            self._add_native(messages, now_ms, assigned, errors)
            return errors
        good: list[RawRecord] = []
        for msg in messages:
            if msg.error() is not None:
                errors.append(msg)
            elif (msg.topic(), msg.partition()) in assigned:
                good.append(msg)
        self.add(good, now_ms)
        return errors

    def _add_native(
        self,
        records: Sequence[Any],
        now_ms: int,
        assigned: set[TopicPartitionKey] | None,
        errors: list[Any] | None,
    ) -> None:
        assert self._native is not None and not isinstance(self._rows, dict)  # noqa: S101
        if self._rows.frozen:  # staging goes on after a split (the split keeps its rows)
            self._rows = self._rows.copy()
        was_empty = self._count == 0
        taken, skipped = self._native.add(
            records,
            assigned,
            self._floors,
            self._offsets,
            self._held,
            self._firsts,
            self._rows,
            self._add_exact,
            errors,
        )
        if was_empty and taken:
            self.first_at_ms = now_ms
        self._count += taken - skipped

    def _add_python(self, records: Sequence[RawRecord]) -> None:
        assert isinstance(self._rows, dict)  # noqa: S101 - the Python path's store
        rows = self._rows
        prefix = self._prefix
        offsets = self._offsets
        held = self._held
        fast = self._fast
        floors = self._floors
        for r in records:
            tp = (r.topic() or "", r.partition() or 0)
            offset = r.offset() or 0
            if floors and offset < floors.get(tp[1], -1):
                self._count -= 1
                continue
            if offset >= offsets.get(tp, 0):
                offsets[tp] = offset + 1
            count = held.get(tp)
            if count is None:
                held[tp] = 1
                self._firsts[tp] = offset
            else:
                held[tp] = count + 1
            value = r.value()
            if prefix is not None and value is not None and value.startswith(prefix):
                staged = fast(value, r.key())
                if staged is not None:
                    ident, ingested, row = staged
                    seen = rows.get(ident)
                    if seen is None or offset >= seen[1]:
                        rows[ident] = (tp, offset, ingested, row, r.key(), value)
                    continue
            self._add_exact(r, tp, offset, value)

    def _fast(
        self, d: bytes, key: bytes | None
    ) -> tuple[tuple[bytes, int], bytes, CandleRow] | None:
        """One current-schema Kline record straight to its COPY line: ((pair key, open time),
        raw ingested_at varint, row), or None for anything outside the common shape (strings
        of 64+ bytes, odd varints, a key that is not the pair's, unusual decimals, OHLC ties of
        different spellings...). None is not a verdict: the exact path decides those.

        Reads the Avro body of ``schemas/kline.avsc`` field by field, unrolled because it runs
        once per consumed candle; tests compare it with the exact path on arbitrary records.
        """
        pair = self._pairs.get(key) if key is not None else None
        if pair is None:
            return None
        times = _TIMES
        try:
            # Strings: a one-byte zigzag length 2n < 0x80 has bits 0 and 7 clear. A string
            # sliced past the end comes back short, but the next read then raises IndexError
            # or the end check fails: truncation never passes.
            b = d[10]
            if b & 0x81:
                return None
            e = 11 + (b >> 1)
            if d[11:e] != pair.symbol:
                return None
            b = d[e]
            if b & 0x81:
                return None
            p = e + 1
            e = p + (b >> 1)
            if d[p:e] != pair.interval:
                return None
            hit = times.get(d[e : e + 6])
            if hit is None:
                t = _read_time(d, e)
                if t is None:
                    return None
                ot, ot_text, width = t
                p = e + width
            else:
                ot, ot_text = hit
                p = e + 6
            hit = times.get(d[p : p + 6])
            if hit is None:
                t = _read_time(d, p)
                if t is None:
                    return None
                ct, ct_text, width = t
                p += width
            else:
                ct, ct_text = hit
                p += 6
            b = d[p]
            if b & 0x81:
                return None
            p += 1
            e = p + (b >> 1)
            o = d[p:e]
            b = d[e]
            if b & 0x81:
                return None
            p = e + 1
            e = p + (b >> 1)
            h = d[p:e]
            b = d[e]
            if b & 0x81:
                return None
            p = e + 1
            e = p + (b >> 1)
            lo = d[p:e]
            b = d[e]
            if b & 0x81:
                return None
            p = e + 1
            e = p + (b >> 1)
            c = d[p:e]
            b = d[e]
            if b & 0x81:
                return None
            p = e + 1
            e = p + (b >> 1)
            v = d[p:e]
            b = d[e]
            if b & 0x81:
                return None
            p = e + 1
            e = p + (b >> 1)
            q = d[p:e]
            b = d[e]  # trades: non-negative, at most 3 bytes (< 2**20) on this path
            p = e + 1
            n = b & 0x7F
            if b & 0x80:
                b = d[p]
                p += 1
                n |= (b & 0x7F) << 7
                if b & 0x80:
                    b = d[p]
                    p += 1
                    if b & 0x80:
                        return None
                    n |= b << 14
            if n & 1:
                return None
            b = d[p]
            if b & 0x81:
                return None
            p += 1
            e = p + (b >> 1)
            tbb = d[p:e]
            b = d[e]
            if b & 0x81:
                return None
            p = e + 1
            e = p + (b >> 1)
            tbq = d[p:e]
            b = d[e]  # the source enum: index 0..2, zigzag 0, 2, 4
            if b > 4 or b & 1:
                return None
            ingested = d[e + 1 :]  # the last field, a long: check its varint form only
            width = len(ingested)
            if not 0 < width < 10:
                return None
            if int.from_bytes(ingested, "little") & _VARINT_HIGH[width] != _VARINT_FORM[width]:
                return None
        except IndexError:
            return None
        if ct != (pair.interval_ms + ot - 1 if pair.interval_ms else _month_close(ot)):
            return None
        if not MIN_OPEN_MS <= ot < MAX_OPEN_MS:
            return None
        line = LINE % (ot_text, pair.symbol, pair.interval, o, h, lo, c, v, ct_text, q, n >> 1,
                       tbb, tbq)  # fmt: skip
        if _FAST_LINE.fullmatch(line) is None:
            return None
        # Floats prove low <= open, close <= high for the exact decimals: rounding to the
        # nearest double is monotonic, so a strict float inequality implies the decimal one,
        # and a tie proves it only for identical spellings. Anything else: the exact path.
        fo, fh, fl, fc = float(o), float(h), float(lo), float(c)
        if not (fl <= fo <= fh and fl <= fc <= fh):
            return None
        if (
            (fo == fl and o != lo)
            or (fo == fh and o != h)
            or (fc == fl and c != lo)
            or (fc == fh and c != h)
        ):
            return None
        return (pair.key, ot), ingested, (pair.names[0], pair.names[1], ot, line)

    def _learn_pair(self, symbol: str, interval: str) -> None:
        """Remember a validated pair, so its next records can take the fast path."""
        if len(self._pairs) > 100_000:  # bounded: pairs are configured, but input is not
            self._pairs.clear()
            if self._native is not None:
                self._native.clear_pairs()
        key = f"{symbol}|{interval}".encode()
        interval_ms = FIXED_INTERVAL_MS.get(interval, 0)
        self._pairs[key] = _PairInfo(
            (symbol, interval), key, symbol.encode(), interval.encode(), interval_ms
        )
        if self._native is not None:
            self._native.learn(symbol, interval, interval_ms)

    def _add_exact(
        self, r: RawRecord, tp: TopicPartitionKey, offset: int, value: bytes | None
    ) -> None:
        try:
            if value is None:
                raise UndecodableRecord("null value (tombstone)")
            event = self.codec.decode(value)
            key = r.key()
            if key is not None and key != event.key.encode():
                raise KeyMismatch(key, event.key)
            if isinstance(event, Kline):
                k = check_kline(event)
                ident = (k.key.encode(), k.open_time)
                seen = self._rows.get(ident)
                if seen is None or offset >= seen[1]:
                    row = (k.symbol, k.interval, k.open_time, kline_line(k))
                    ingested = encode_long(k.ingested_at)
                    self._rows[ident] = (tp, offset, ingested, row, key, value)
                if key is not None and key not in self._pairs:
                    self._learn_pair(k.symbol, k.interval)
            else:
                check_empty_range(event)
                ident_r = (event.symbol, event.interval, event.start_time)
                have = self._ranges.get(ident_r)
                if have is None or event.end_time >= have[1].end_time:
                    self._ranges[ident_r] = (tp, event, (tp, offset, key, value))
                self._drop_covered(event, offset)
        except (UndecodableRecord, InvalidKline, KeyMismatch, ValueError) as exc:
            self._dlq.append(_dlq(r, exc))

    def _drop_covered(self, event: EmptyRange, offset: int) -> None:
        """Forget staged candles of the range's pair inside it that came before it: the
        exchange has since confirmed those open times empty (a corrected archive file)."""
        key = event.key.encode()
        if not isinstance(self._rows, dict):
            self._rows.drop_covered(key, event.start_time, event.end_time, offset)
            return
        doomed = [
            ident
            for ident, staged in self._rows.items()
            if ident[0] == key
            and event.start_time <= ident[1] < event.end_time
            and staged[1] < offset  # the offset it was staged from
        ]
        for ident in doomed:
            del self._rows[ident]

    def drop_partitions(self, partitions: Iterable[TopicPartitionKey]) -> int:
        """Forget records of partitions we no longer own; return how many were dropped."""
        gone = set(partitions) & set(self._held)
        if not gone:
            return 0
        dropped = sum(self._held.pop(tp) for tp in gone)
        if isinstance(self._rows, dict):
            self._rows = {i: v for i, v in self._rows.items() if v[0] not in gone}
        else:
            if self._rows.frozen:
                self._rows = self._rows.copy()
            self._rows.drop_partitions(gone)
        self._ranges = {i: v for i, v in self._ranges.items() if v[0] not in gone}
        self._dlq = [e for e in self._dlq if (e.topic, e.partition) not in gone]
        for tp in gone:
            self._offsets.pop(tp, None)
            self._firsts.pop(tp, None)
        self._count -= dropped
        if not self._count:
            self.clear()
        return dropped

    def split(self) -> Split:
        """What one transaction and the offset commit after it need. Never raises for bad
        input: every record is a row, an empty range or a DLQ entry, and every one is covered
        by the offsets."""
        if not isinstance(self._rows, dict):
            text, view, partitions, pair_spans, newest_raw, binary = self._rows.split()
            return self._split(
                CandleBatch(view, pair_spans, text, binary),
                partitions,
                [(close_time(interval, t), _long(raw)) for interval, t, raw in newest_raw],
            )
        rows: list[CandleRow] = []
        row_partitions: list[TopicPartitionKey] = []
        spans: dict[PairKey, tuple[int, int]] = {}
        newest: dict[PairKey, tuple[int, bytes]] = {}
        append = rows.append
        append_tp = row_partitions.append
        for tp, _offset, ingested, row, _key, _value in self._rows.values():
            append(row)
            append_tp(tp)
            pair = (row[0], row[1])
            t = row[2]
            span = spans.get(pair)
            if span is None:
                spans[pair] = (t, t)
                newest[pair] = (t, ingested)
            elif t > span[1]:
                spans[pair] = (span[0], t)
                newest[pair] = (t, ingested)
            elif t < span[0]:
                spans[pair] = (t, span[1])
        return self._split(
            CandleBatch(rows, spans),
            row_partitions,
            [(close_time(p[1], t), _long(raw)) for p, (t, raw) in newest.items()],
        )

    def _split(
        self,
        batch: CandleBatch,
        row_partitions: list[TopicPartitionKey],
        newest: list[tuple[int, int]],
    ) -> Split:
        return Split(
            batch=batch,
            empty_ranges=[e for _, e, _ in self._ranges.values()],
            range_partitions=[tp for tp, _, _ in self._ranges.values()],
            dlq=list(self._dlq),
            offsets=dict(self._offsets),
            records=self._count,
            newest=newest,
            first_offsets=dict(self._firsts),
            row_partitions=row_partitions,
            origins=_Origins(self._rows, {e: o for _, e, o in self._ranges.values()}),
        )


_UNSEEN: Any = object()


def _month_close(open_ms: int) -> int:
    return close_time("1M", open_ms)


def _long(raw: bytes) -> int:
    n = 0
    for i, b in enumerate(raw):
        n |= (b & 0x7F) << (7 * i)
    return (n >> 1) ^ -(n & 1)


def split_batch(
    records: Sequence[RawRecord], codec: KlineCodec, *, fast: bool = True, native: bool = True
) -> Split:
    """Stage and split one batch at once (tools and tests; the loop stages as it consumes)."""
    staged = StagedBatch(codec, fast=fast, native=native)
    staged.add(records, 0)
    return staged.split()


def rejected_values(key: bytes, values: Sequence[bytes], codec: KlineCodec) -> list[DlqEntry]:
    """The sink's DLQ verdicts on ``values`` keyed ``key`` (offsets: their indices), as
    ``split_batch`` gives them. The compiled core's fast path takes most candles whole, and
    what it takes the exact path accepts: only its misses are staged as records (the
    backfiller checks every archive and REST candle before publishing)."""
    staged = StagedBatch(codec)
    native = staged._native  # noqa: SLF001 - the stager this batch would use
    if native is None or not values:
        return split_batch([Record("", 0, i, key, v) for i, v in enumerate(values)], codec).dlq
    # The first through the exact path, which teaches the stager a valid pair.
    staged.add([Record("", 0, 0, key, values[0])], 0)
    misses = native.fast_misses(key, values if isinstance(values, list) else list(values), 1)
    if misses:
        staged.add([Record("", 0, i, key, values[i]) for i in misses], 0)
    return staged.split().dlq


W = TypeVar("W")


def write_bisecting(
    write: Callable[[CandleBatch, Sequence[EmptyRange]], W],
    batch: CandleBatch,
    empty_ranges: Sequence[EmptyRange],
    is_limit_error: Callable[[BaseException], bool],
    record_sqlstate: Callable[[BaseException], str | None],
) -> tuple[list[W], list[Rejected]]:
    """Write in one transaction; split it when the database refuses it for something smaller
    parts can pass, recursively:

    - a per-transaction limit (TimescaleDB's tuple decompression limit on compressed chunks):
      the candles in two halves by (pair, time);
    - a data error that one record causes (``record_sqlstate`` gives its SQLSTATE, else None):
      empty ranges apart from candles, then halves, until the one record fails alone; it is
      returned as Rejected (for the DLQ) and every other record is written.

    Any other error propagates (the caller retries the whole batch). The caller commits Kafka
    offsets only after every part returned, so a crash between parts re-delivers the batch and
    the parts already written are rewritten as no-ops.
    """
    results: list[W] = []
    rejected: list[Rejected] = []

    def attempt(part: CandleBatch, ranges: Sequence[EmptyRange]) -> None:
        try:
            results.append(write(part, ranges))
            return
        except Exception as exc:
            sqlstate = record_sqlstate(exc)
            if sqlstate is None:
                if not is_limit_error(exc) or len(part) <= 1:
                    raise
                first, second = part.halves()
                attempt(first, ranges)
                attempt(second, ())
                return
            if len(part) + len(ranges) == 1:
                row = part.rows[0] if part.rows else None
                rng = ranges[0] if ranges else None
                rejected.append(Rejected(row, rng, sqlstate, _first_line(exc)))
                return
        if part.rows and ranges:
            attempt(CandleBatch.of([]), ranges)
            attempt(part, ())
        elif ranges:
            half = len(ranges) // 2
            attempt(part, ranges[:half])
            attempt(part, ranges[half:])
        else:
            first, second = part.halves()
            attempt(first, ())
            attempt(second, ())

    attempt(batch, empty_ranges)
    return results, rejected


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
