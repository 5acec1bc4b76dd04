"""Health of the pipeline as plain data: coverage, gaps, pointers, staleness, consumer lag.

Pure functions only (facts in, report and verdict out); ``qryptify status`` gathers the facts
from PostgreSQL and Kafka and renders what these functions return.

Definitions, per configured pair (``now`` is the exchange's time when known, else local):

- *window*: open times from ``window_start`` = the first grid open at or after
  ``max(backfill.start_date, first stored candle)`` (a symbol listed later than the start date
  is measured from its first candle) up to and including the newest candle closed at ``now``.
- *expected*: grid opens in the window minus those the exchange confirmed empty
  (``empty_ranges``); *coverage* = stored candles in the window / expected.
- *gap*: a run of missing opens inside the window that lies before the newest stored candle
  and is not confirmed empty, and that closed more than the *arrival budget* before ``now``.
  Missing candles after the newest stored one are not gaps: they are *behind* (the tail still
  to arrive), measured by *staleness*; nor are missing candles that closed within the arrival
  budget (*arriving*, counted in *behind* too): one of them may still be on its way while a
  newer one, published by the other service, is already stored.
- *arrival budget*: how long a correctly working pipeline may take from a candle's close to
  its row, from the configuration (``arrival_budget_ms``).
- *staleness*: ``now`` minus the close of the newest stored candle (``close_time + 1``). Fully
  caught up it is below one interval plus the ingest latency.
- *pointer*: ``sync_state.last_closed_ts``; healthy when it equals the newest stored candle.
- *lag*: per partition of the sink's group, high watermark minus committed offset (the whole
  partition when the group never committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from qryptify.gaps import holes_before_newest
from qryptify.pairs import (
    DAY_MS,
    FIXED_INTERVAL_MS,
    Pair,
    align_open,
    ceil_open,
    count_opens,
    last_closed_open,
    next_open,
)

#: Exit status of ``qryptify status`` when a threshold is breached or a component is down.
EXIT_UNHEALTHY = 3

DEFAULT_MAX_GAPS = 0
DEFAULT_MAX_LAG = 10_000
#: Added to two intervals for the default staleness limit (ingest latency, clock skew).
STALE_SLACK_MS = 60_000
#: Nominal length of ``1M`` for limits (the longest month).
MONTH_NOMINAL_MS = 31 * DAY_MS
#: Gaps listed per pair in the human table (all of them are counted; JSON lists all).
GAPS_SHOWN = 5

Jump = tuple[int, int]  # (open time, next stored open time) where next != the grid's next


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing opens in ``[start_ms, end_ms)``; ``missing`` of them are on the grid."""

    start_ms: int
    end_ms: int
    missing: int


@dataclass(frozen=True, slots=True)
class PairFacts:
    """What the database says about one pair (all times are open times in ms)."""

    pair: Pair
    first_ms: int | None
    last_ms: int | None
    rows_total: int
    rows_in_window: int
    #: First stored open at or after the window start (None: nothing stored there).
    first_in_window_ms: int | None
    jumps: tuple[Jump, ...]
    empty_ranges: tuple[tuple[int, int], ...]
    pointer_ms: int | None


PointerState = Literal["ok", "behind", "ahead", "missing", "no data"]


@dataclass(frozen=True, slots=True)
class PairHealth:
    pair: Pair
    first_ms: int | None
    last_ms: int | None
    rows_total: int
    window_start_ms: int
    window_end_ms: int  # exclusive: the open after the newest closed candle
    expected: int
    present: int
    coverage: float  # 0..1
    gaps: tuple[Gap, ...]
    missing_in_gaps: int
    behind: int  # closed candles not stored, not in gaps (the tail, and the arriving ones)
    arriving: int  # of ``behind``: missing before the newest stored, closed within the budget
    pointer_ms: int | None
    pointer: PointerState
    stale_ms: int | None  # None when nothing is stored
    max_stale_ms: int


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed on this partition
    high: int
    lag: int


@dataclass(frozen=True, slots=True)
class KafkaHealth:
    bootstrap: str
    topic: str
    group: str
    dlq_topic: str
    error: str | None = None  # set when the cluster could not be read
    partitions: tuple[PartitionLag, ...] = ()
    dlq_records: int | None = None
    dlq_error: str | None = None
    audit: AuditFacts | None = None
    audit_error: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True, slots=True)
class AuditFacts:
    """The archive audit as the ledger (``kafka.offsets_topic``) records it."""

    ledger_files: int  # archive files published from
    finished_at: int | None = None  # ms when the last audit finished; None: never audited
    files_checked: int = 0  # by the last audit
    files_reingested: int = 0
    candles_corrected: int = 0
    total_files_reingested: int = 0  # by every audit so far
    total_candles_corrected: int = 0


@dataclass(frozen=True, slots=True)
class Hypertable:
    name: str
    chunk_interval: str
    num_chunks: int
    compression_enabled: bool
    compressed_chunks: int
    compress_after: str | None
    segment_by: str
    order_by: str


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    target: str  # redacted DSN
    error: str | None = None
    server_version: str | None = None
    timescale_version: str | None = None
    hypertables: tuple[Hypertable, ...] = ()
    timescale_error: str | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_gaps: int = DEFAULT_MAX_GAPS
    #: One limit for every pair; None: 2 intervals + 60 s per pair.
    max_stale_ms: int | None = None
    max_lag: int = DEFAULT_MAX_LAG
    #: None: the DLQ is reported, not checked.
    max_dlq: int | None = None
    #: Missing candles that closed less than this long ago are arriving, not gaps.
    arrival_budget_ms: int = 0


@dataclass(frozen=True, slots=True)
class Breach:
    check: Literal["database", "kafka", "unlisted", "gaps", "stale", "pointer", "lag", "dlq"]
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class StatusReport:
    now_ms: int
    clock: str  # where now came from: "local clock" or the exchange URL
    backfill_start_ms: int
    database: DatabaseHealth
    pairs: tuple[PairHealth, ...]
    kafka: KafkaHealth
    thresholds: Thresholds
    breaches: tuple[Breach, ...] = field(default=())
    #: Which per-record core this installation runs (``qryptify.native.CORE``).
    core: str = ""
    #: Configured pairs whose symbol the exchange's exchangeInfo does not list.
    unlisted: tuple[Pair, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.breaches


# --------------------------------------------------------------------------------------------
# grid arithmetic
# --------------------------------------------------------------------------------------------


def nominal_interval_ms(interval: str) -> int:
    return FIXED_INTERVAL_MS.get(interval, MONTH_NOMINAL_MS)


def arrival_budget_ms(watchdog_grace_ms: int, watchdog_retry_ms: int, sink_latency_ms: int) -> int:
    """From a candle's close to its row, at the latest, on a working pipeline: the producer
    waits ``ws.watchdog_grace_ms`` for the stream's close before fetching it by REST, asks REST
    again after ``ws.watchdog_retry_ms`` when REST did not have it yet, and the sink writes
    within ``sink.max_latency_ms`` of receiving it."""
    return watchdog_grace_ms + watchdog_retry_ms + sink_latency_ms


def default_max_stale_ms(interval: str) -> int:
    """Two intervals plus a minute: one late candle is tolerated, two are not."""
    return 2 * nominal_interval_ms(interval) + STALE_SLACK_MS


def window(
    interval: str, backfill_start_ms: int, first_ms: int | None, now_ms: int
) -> tuple[int, int]:
    """``[start, end)`` of the open times a pair should have at ``now_ms``."""
    start = ceil_open(interval, max(backfill_start_ms, first_ms or backfill_start_ms))
    end = next_open(interval, last_closed_open(interval, now_ms))
    return start, max(start, end)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def count_empty(interval: str, start_ms: int, end_ms: int, empty: Sequence[tuple[int, int]]) -> int:
    """Grid opens in ``[start_ms, end_ms)`` that the exchange confirmed empty."""
    return sum(
        count_opens(interval, max(a, start_ms), min(b, end_ms))
        for a, b in merge_ranges(empty)
        if b > start_ms and a < end_ms
    )


def subtract_empty(
    interval: str, start_ms: int, end_ms: int, empty: Sequence[tuple[int, int]]
) -> list[Gap]:
    """The parts of ``[start_ms, end_ms)`` not confirmed empty, as gaps with opens in them."""
    gaps: list[Gap] = []
    cursor = start_ms
    for a, b in merge_ranges(empty):
        if b <= cursor or a >= end_ms:
            continue
        if a > cursor:
            gaps.append(Gap(cursor, a, count_opens(interval, cursor, a)))
        cursor = max(cursor, b)
    if cursor < end_ms:
        gaps.append(Gap(cursor, end_ms, count_opens(interval, cursor, end_ms)))
    return [g for g in gaps if g.missing > 0]


def gaps_from_jumps(
    interval: str,
    window_start_ms: int,
    window_end_ms: int,
    first_in_window_ms: int | None,
    found: Iterable[Jump],
    empty: Sequence[tuple[int, int]],
) -> list[Gap]:
    """Holes inside the window before the newest stored candle, minus confirmed-empty opens
    (``qryptify.gaps``, the finder the backfiller refetches from), with their counts."""
    holes = holes_before_newest(
        interval, window_start_ms, window_end_ms, first_in_window_ms, found, empty
    )
    gaps = (Gap(a, b, count_opens(interval, a, b)) for a, b in holes)
    return [g for g in gaps if g.missing > 0]


def coverage(present: int, expected: int) -> float:
    if expected <= 0:
        return 1.0
    return min(1.0, present / expected)


def pointer_state(pointer_ms: int | None, last_ms: int | None) -> PointerState:
    if last_ms is None:
        return "no data" if pointer_ms is None else "ahead"
    if pointer_ms is None:
        return "missing"
    if pointer_ms == last_ms:
        return "ok"
    return "behind" if pointer_ms < last_ms else "ahead"


def assess_pair(
    facts: PairFacts,
    backfill_start_ms: int,
    now_ms: int,
    max_stale_ms: int | None = None,
    arrival_budget_ms: int = 0,
) -> PairHealth:
    interval = facts.pair.interval
    start, end = window(interval, backfill_start_ms, facts.first_ms, now_ms)
    empty = merge_ranges(facts.empty_ranges)
    expected = count_opens(interval, start, end) - count_empty(interval, start, end, empty)
    missing = gaps_from_jumps(interval, start, end, facts.first_in_window_ms, facts.jumps, empty)
    # Gaps end where the candles still within the arrival budget begin.
    settled = max(
        start, next_open(interval, last_closed_open(interval, now_ms - arrival_budget_ms))
    )
    gaps = gaps_from_jumps(interval, start, settled, facts.first_in_window_ms, facts.jumps, empty)
    arriving = sum(g.missing for g in missing) - sum(g.missing for g in gaps)
    behind = arriving
    stale_ms: int | None = None
    if facts.last_ms is not None:
        tail_start = max(next_open(interval, facts.last_ms), start)
        behind += sum(g.missing for g in subtract_empty(interval, tail_start, end, empty))
        stale_ms = max(0, now_ms - next_open(interval, facts.last_ms))
    return PairHealth(
        pair=facts.pair,
        first_ms=facts.first_ms,
        last_ms=facts.last_ms,
        rows_total=facts.rows_total,
        window_start_ms=start,
        window_end_ms=end,
        expected=max(expected, 0),
        present=facts.rows_in_window,
        coverage=coverage(facts.rows_in_window, expected),
        gaps=tuple(gaps),
        missing_in_gaps=sum(g.missing for g in gaps),
        behind=behind,
        arriving=arriving,
        pointer_ms=facts.pointer_ms,
        pointer=pointer_state(facts.pointer_ms, facts.last_ms),
        stale_ms=stale_ms,
        max_stale_ms=max_stale_ms if max_stale_ms is not None else default_max_stale_ms(interval),
    )


def partition_lags(highs: Mapping[int, int], committed: Mapping[int, int]) -> list[PartitionLag]:
    """Lag per partition; a negative committed offset (librdkafka's INVALID) means none."""
    lags: list[PartitionLag] = []
    for partition in sorted(highs):
        high = highs[partition]
        offset = committed.get(partition)
        done = offset if offset is not None and offset >= 0 else None
        lags.append(PartitionLag(partition, done, high, max(0, high - (done or 0))))
    return lags


# --------------------------------------------------------------------------------------------
# verdict
# --------------------------------------------------------------------------------------------


def judge(report: StatusReport) -> list[Breach]:
    """Every threshold the report breaches; empty means healthy."""
    t = report.thresholds
    found: list[Breach] = []
    if report.database.error is not None:
        found.append(Breach("database", report.database.target, report.database.error))
    for pair in report.unlisted:
        found.append(
            Breach(
                "unlisted",
                str(pair),
                f"symbol {pair.symbol} is not listed on the exchange (exchangeInfo of "
                f"{report.clock}): check the spelling, or remove the pair",
            )
        )
    for p in report.pairs:
        name = str(p.pair)
        if p.pair in report.unlisted:
            continue  # no data is expected; the breach above says why
        if len(p.gaps) > t.max_gaps:
            found.append(
                Breach(
                    "gaps",
                    name,
                    f"{len(p.gaps)} gaps ({p.missing_in_gaps} candles) > --max-gaps {t.max_gaps}",
                )
            )
        if p.stale_ms is None:
            found.append(Breach("stale", name, "no candles stored"))
        elif p.stale_ms > p.max_stale_ms:
            found.append(
                Breach(
                    "stale",
                    name,
                    f"newest candle closed {format_duration(p.stale_ms)} ago "
                    f"> --max-stale {format_duration(p.max_stale_ms)}",
                )
            )
        if p.pointer in ("behind", "ahead", "missing"):
            found.append(
                Breach(
                    "pointer",
                    name,
                    f"sync_state {fmt_ts(p.pointer_ms)} is {p.pointer} of the newest candle "
                    f"{fmt_ts(p.last_ms)}",
                )
            )
    k = report.kafka
    if k.error is not None:
        found.append(Breach("kafka", k.bootstrap, k.error))
    else:
        if k.total_lag > t.max_lag:
            found.append(
                Breach("lag", k.group, f"{k.total_lag} records behind > --max-lag {t.max_lag}")
            )
        if t.max_dlq is not None:
            if k.dlq_records is None:
                found.append(Breach("dlq", k.dlq_topic, k.dlq_error or "unreadable"))
            elif k.dlq_records > t.max_dlq:
                found.append(
                    Breach("dlq", k.dlq_topic, f"{k.dlq_records} records > --max-dlq {t.max_dlq}")
                )
    return found


# --------------------------------------------------------------------------------------------
# parsing and formatting
# --------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}


def parse_duration_ms(text: str) -> int:
    """``90`` / ``90s`` / ``15m`` / ``2h`` / ``1d`` / ``500ms`` → ms (plain numbers are seconds)."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 2h, 1d")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])


def format_duration(ms: int) -> str:
    seconds = ms // 1000
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def fmt_ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        cells = zip(row, widths, strict=True)
        lines.append(indent + "  ".join(c.ljust(w) for c, w in cells).rstrip())
    return lines


def _candles(n: int) -> str:
    return f"{n} candle" if n == 1 else f"{n} candles"


def render_text(report: StatusReport) -> str:
    """The human table ``qryptify status`` prints."""
    out: list[str] = [
        f"qryptify status at {fmt_ts(report.now_ms)} UTC (now from {report.clock})",
        *([f"core      {report.core}"] if report.core else []),
        "",
    ]
    d = report.database
    out.append(f"database  {d.target}")
    if d.error is not None:
        out.append(f"  UNREACHABLE: {d.error}")
    else:
        version = " ".join((d.server_version or "?").split()[:2])
        ts = f"timescaledb {d.timescale_version}" if d.timescale_version else "plain PostgreSQL"
        out.append(f"  {version}; {ts}")
        if d.timescale_error:
            out.append(f"  timescaledb details unavailable: {d.timescale_error}")
        if d.hypertables:
            out += _table(
                (
                    "HYPERTABLE",
                    "CHUNK",
                    "CHUNKS",
                    "COMPRESSION",
                    "COMPRESSED",
                    "POLICY",
                    "SEGMENT BY",
                    "ORDER BY",
                ),
                [
                    (
                        h.name,
                        h.chunk_interval,
                        str(h.num_chunks),
                        "on" if h.compression_enabled else "off",
                        str(h.compressed_chunks),
                        f"after {h.compress_after}" if h.compress_after else "-",
                        h.segment_by or "-",
                        h.order_by or "-",
                    )
                    for h in d.hypertables
                ],
            )
        elif d.timescale_version:
            out.append("  no hypertables")
    if report.pairs:
        out.append("")
        start_date = fmt_ts(report.backfill_start_ms).removesuffix(" 00:00")
        out.append(f"pairs  (expected grid from backfill.start_date {start_date}")
        out.append("        or the pair's first candle if later, to the newest closed candle;")
        budget = format_duration(report.thresholds.arrival_budget_ms)
        out.append(f"        a missing candle counts as a gap once it closed {budget} ago)")
        out += _table(
            (
                "PAIR",
                "FIRST",
                "LAST",
                "ROWS",
                "COVERAGE",
                "GAPS",
                "MISSING",
                "BEHIND",
                "POINTER",
                "STALE",
            ),
            [
                (
                    str(p.pair),
                    fmt_ts(p.first_ms),
                    fmt_ts(p.last_ms),
                    str(p.rows_total),
                    f"{p.coverage * 100:.2f}%",
                    str(len(p.gaps)),
                    str(p.missing_in_gaps),
                    str(p.behind),
                    p.pointer,
                    "-" if p.stale_ms is None else format_duration(p.stale_ms),
                )
                for p in report.pairs
            ],
        )
        for p in report.pairs:
            if not p.gaps:
                continue
            out.append(f"  gaps {p.pair}:")
            for g in p.gaps[:GAPS_SHOWN]:
                last_missing = align_open(p.pair.interval, g.end_ms - 1)
                out.append(
                    f"    {fmt_ts(g.start_ms)} .. {fmt_ts(last_missing)}  ({_candles(g.missing)})"
                )
            if len(p.gaps) > GAPS_SHOWN:
                out.append(f"    … and {len(p.gaps) - GAPS_SHOWN} more (--json lists all)")
    k = report.kafka
    out.append("")
    out.append(f"kafka  {k.bootstrap}  topic {k.topic}  group {k.group}")
    if k.error is not None:
        out.append(f"  UNREACHABLE: {k.error}")
    else:
        out += _table(
            ("PARTITION", "COMMITTED", "HIGH", "LAG"),
            [
                (
                    str(p.partition),
                    "-" if p.committed is None else str(p.committed),
                    str(p.high),
                    str(p.lag),
                )
                for p in k.partitions
            ],
        )
        out.append(f"  total lag {k.total_lag}")
        dlq = str(k.dlq_records) if k.dlq_records is not None else f"unreadable ({k.dlq_error})"
        out.append(f"  dlq {k.dlq_topic}: {dlq} records")
        out.append(f"  archive audit: {_audit_text(k)}")
    out.append("")
    if report.healthy:
        out.append("HEALTHY")
    else:
        out.append(f"UNHEALTHY: {len(report.breaches)} check(s) failed")
        out += [f"  {b.check:<8} {b.subject}: {b.detail}" for b in report.breaches]
    return "\n".join(out)


def _audit_text(k: KafkaHealth) -> str:
    a = k.audit
    if a is None:
        return f"unreadable ({k.audit_error})"
    if a.finished_at is None:
        return f"never run; {a.ledger_files} archive files in the ledger"
    return (
        f"last {fmt_ts(a.finished_at)} UTC: {a.files_checked} files checked, "
        f"{a.files_reingested} re-ingested, {a.candles_corrected} candles corrected; "
        f"all audits: {a.total_files_reingested} files re-ingested, "
        f"{a.total_candles_corrected} candles corrected; {a.ledger_files} files in the ledger"
    )


def to_json(report: StatusReport) -> dict[str, Any]:
    """The machine form (``--json``): times in ms and ISO-8601, every gap listed."""
    d = report.database
    k = report.kafka
    return {
        "healthy": report.healthy,
        "now_ms": report.now_ms,
        "now": _iso(report.now_ms),
        "clock": report.clock,
        "core": report.core,
        "backfill_start_ms": report.backfill_start_ms,
        "unlisted": [str(p) for p in report.unlisted],
        "thresholds": {
            "max_gaps": report.thresholds.max_gaps,
            "max_stale_ms": report.thresholds.max_stale_ms,
            "max_lag": report.thresholds.max_lag,
            "max_dlq": report.thresholds.max_dlq,
            "arrival_budget_ms": report.thresholds.arrival_budget_ms,
        },
        "database": {
            "target": d.target,
            "error": d.error,
            "server_version": d.server_version,
            "timescaledb": d.timescale_version,
            "timescaledb_error": d.timescale_error,
            "hypertables": [
                {
                    "name": h.name,
                    "chunk_interval": h.chunk_interval,
                    "chunks": h.num_chunks,
                    "compression_enabled": h.compression_enabled,
                    "compressed_chunks": h.compressed_chunks,
                    "compress_after": h.compress_after,
                    "segment_by": h.segment_by,
                    "order_by": h.order_by,
                }
                for h in d.hypertables
            ],
        },
        "pairs": [
            {
                "pair": str(p.pair),
                "symbol": p.pair.symbol,
                "interval": p.pair.interval,
                "first_ms": p.first_ms,
                "first": _iso(p.first_ms),
                "last_ms": p.last_ms,
                "last": _iso(p.last_ms),
                "rows": p.rows_total,
                "window_start_ms": p.window_start_ms,
                "window_end_ms": p.window_end_ms,
                "expected": p.expected,
                "present": p.present,
                "coverage": p.coverage,
                "gap_count": len(p.gaps),
                "missing_in_gaps": p.missing_in_gaps,
                "gaps": [
                    {"start_ms": g.start_ms, "end_ms": g.end_ms, "missing": g.missing}
                    for g in p.gaps
                ],
                "behind": p.behind,
                "arriving": p.arriving,
                "pointer_ms": p.pointer_ms,
                "pointer": p.pointer,
                "stale_ms": p.stale_ms,
                "max_stale_ms": p.max_stale_ms,
            }
            for p in report.pairs
        ],
        "kafka": {
            "bootstrap": k.bootstrap,
            "topic": k.topic,
            "group": k.group,
            "error": k.error,
            "partitions": [
                {"partition": p.partition, "committed": p.committed, "high": p.high, "lag": p.lag}
                for p in k.partitions
            ],
            "total_lag": k.total_lag if k.error is None else None,
            "dlq_topic": k.dlq_topic,
            "dlq_records": k.dlq_records,
            "dlq_error": k.dlq_error,
            "archive_audit": None
            if k.audit is None
            else {
                "ledger_files": k.audit.ledger_files,
                "last_finished_ms": k.audit.finished_at,
                "last_finished": _iso(k.audit.finished_at),
                "files_checked": k.audit.files_checked,
                "files_reingested": k.audit.files_reingested,
                "candles_corrected": k.audit.candles_corrected,
                "total_files_reingested": k.audit.total_files_reingested,
                "total_candles_corrected": k.audit.total_candles_corrected,
            },
            "archive_audit_error": k.audit_error,
        },
        "breaches": [
            {"check": b.check, "subject": b.subject, "detail": b.detail} for b in report.breaches
        ],
    }
