"""The chaos run's checker, pure: what the observers saw in, verdicts out (chaos/run.py).

* ``SyncStateTracker`` — invariant 4: ``sync_state.last_closed_ts`` sampled every second never
  goes down for any pair.
* ``TopicIndex`` + ``CommitAudit`` — invariant 2: for every committed offset ``O`` of the sink
  group sampled on partition ``P``, every record of ``P`` below ``O`` is already in the
  database (its candle row with its value or a later record's value, its empty range, or — for
  a record the sink must reject — the DLQ). The database is read right AFTER the offsets, so a
  sink that commits before its transaction is caught in the act.
* ``audit_topic`` — invariants 1 and 8 on the log itself: every candle on the topic is the
  exchange's closed candle (only a corrected candle's WebSocket value may differ), every
  empty-range event covers only slots the exchange really has no candle for.
* ``crash_loop`` — a service that kept exiting on its own right after starts.
* ``Verdict`` rows and ``render_table`` — the report.

Values are compared as the database stores them: prices and volumes as doubles parsed from
the exchange's decimal strings, times in ms, trade counts as integers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qryptify.kline import EmptyRange, Kline

PairKey = tuple[str, str]
Ident = tuple[str, str, int]  # symbol, interval, open time (or an empty range's start)

KIND_KLINE = "kline"
KIND_EMPTY = "empty"
KIND_REJECT = "reject"  # the sink must send it to the DLQ


def value_key(
    open_: object,
    high: object,
    low: object,
    close: object,
    volume: object,
    close_time_ms: int,
    quote_volume: object,
    trades: int,
    taker_base: object,
    taker_quote: object,
) -> int:
    """One int per candle value, equal iff the database row would be equal."""
    return hash(
        (
            float(str(open_)),
            float(str(high)),
            float(str(low)),
            float(str(close)),
            float(str(volume)),
            int(close_time_ms),
            float(str(quote_volume)),
            int(trades),
            float(str(taker_base)),
            float(str(taker_quote)),
        )
    )


def kline_value(k: Kline) -> int:
    return value_key(
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        k.close_time,
        k.quote_volume,
        k.trades,
        k.taker_buy_base,
        k.taker_buy_quote,
    )


def rest_row_value(row: Sequence[Any]) -> int:
    """The value key of one ``/fapi/v1/klines`` (or ``/sim/truth``) row."""
    return value_key(
        row[1], row[2], row[3], row[4], row[5], int(row[6]), row[7], int(row[8]), row[9], row[10]
    )


# -- invariant 4 ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decrease:
    pair: PairKey
    before_ms: int
    after_ms: int
    at_s: float


@dataclass(slots=True)
class SyncStateTracker:
    """The highest ``last_closed_ts`` seen per pair; a lower later sample is a violation."""

    highest: dict[PairKey, int] = field(default_factory=dict)
    samples: int = 0
    decreases: list[Decrease] = field(default_factory=list)

    def observe(self, rows: Mapping[PairKey, int], at_s: float) -> list[Decrease]:
        self.samples += 1
        found = []
        for pair, value in rows.items():
            seen = self.highest.get(pair)
            if seen is not None and value < seen:
                found.append(Decrease(pair, seen, value, at_s))
            if seen is None or value > seen:
                self.highest[pair] = value
        for pair in self.highest.keys() - rows.keys():
            # A pair's row vanished: sync_state went backwards to "nothing".
            found.append(Decrease(pair, self.highest[pair], -1, at_s))
        self.decreases.extend(found)
        return found


# -- the topic, as read by the checker ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One record of the topic, reduced to what the checks need."""

    offset: int
    kind: str  # KIND_KLINE, KIND_EMPTY or KIND_REJECT
    ident: Ident
    value: int  # kline: value_key; empty range: its end (ms); reject: 0
    source: str = ""  # kline: rest / ws / archive


def entry_from_event(offset: int, event: Kline | EmptyRange | None) -> Entry:
    """``None`` stands for a record the sink must reject (undecodable, invalid, wrong key)."""
    if isinstance(event, Kline):
        return Entry(
            offset,
            KIND_KLINE,
            (event.symbol, event.interval, event.open_time),
            kline_value(event),
            event.source,
        )
    if isinstance(event, EmptyRange):
        return Entry(
            offset, KIND_EMPTY, (event.symbol, event.interval, event.start_time), event.end_time
        )
    return Entry(offset, KIND_REJECT, ("", "", offset), 0)


@dataclass(slots=True)
class TopicIndex:
    """Per partition: entries in offset order; per candle: every value it was given."""

    partitions: dict[int, list[Entry]] = field(default_factory=dict)
    offsets: dict[int, list[int]] = field(default_factory=dict)
    history: dict[Ident, list[tuple[int, int]]] = field(default_factory=dict)
    next_offset: dict[int, int] = field(default_factory=dict)

    def add(self, partition: int, entry: Entry) -> None:
        self.partitions.setdefault(partition, []).append(entry)
        self.offsets.setdefault(partition, []).append(entry.offset)
        self.next_offset[partition] = entry.offset + 1
        if entry.kind == KIND_KLINE:
            self.history.setdefault(entry.ident, []).append((entry.offset, entry.value))

    def read_up_to(self, partition: int) -> int:
        """The next offset of ``partition`` the index has not seen (0 when none)."""
        return self.next_offset.get(partition, 0)

    def between(self, partition: int, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= offset < hi``."""
        offsets = self.offsets.get(partition, [])
        a = bisect.bisect_left(offsets, lo)
        b = bisect.bisect_left(offsets, hi)
        return self.partitions.get(partition, [])[a:b]

    def values_from(self, ident: Ident, offset: int) -> set[int]:
        """Every value the candle was given at or after ``offset``."""
        return {v for o, v in self.history.get(ident, ()) if o >= offset}

    def entries(self) -> Iterable[tuple[int, Entry]]:
        for partition, entries in sorted(self.partitions.items()):
            for entry in entries:
                yield partition, entry

    def __len__(self) -> int:
        return sum(len(v) for v in self.partitions.values())


# -- invariant 2 ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AheadOfDb:
    """A committed offset covering a record that was not in the database."""

    partition: int
    committed: int
    offset: int
    ident: Ident
    why: str
    at_s: float


@dataclass(slots=True)
class CommitAudit:
    """Checks each sampled (partition, committed offset) against the database rows read after.

    ``checked[p]`` is how far partition ``p`` has been verified; each sample checks the new
    range only. A row whose value differs from the record's is kept in ``pending`` and settled
    at the end, when every later record of that candle is known (a later value may have
    replaced it).
    """

    checked: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    records: int = 0
    violations: list[AheadOfDb] = field(default_factory=list)
    pending: list[tuple[int, int, Ident, int, int, float]] = field(default_factory=list)
    rejects: set[tuple[int, int]] = field(default_factory=set)

    def wanted(self, index: TopicIndex, committed: Mapping[int, int]) -> dict[int, list[Entry]]:
        """Per partition, the entries a sample must look up (only those the index has)."""
        out: dict[int, list[Entry]] = {}
        for p, o in committed.items():
            lo = self.checked.get(p, 0)
            hi = min(o, index.read_up_to(p))
            if hi > lo:
                out[p] = index.between(p, lo, hi)
        return out

    def settle(
        self,
        committed: Mapping[int, int],
        wanted: Mapping[int, list[Entry]],
        rows: Mapping[Ident, int],
        ranges: Mapping[Ident, int],
        at_s: float,
    ) -> list[AheadOfDb]:
        """``rows``: candle → value key found in the DB; ``ranges``: empty range start → end."""
        self.samples += 1
        found: list[AheadOfDb] = []
        for p, entries in wanted.items():
            o = committed[p]
            for e in entries:
                self.records += 1
                if e.kind == KIND_KLINE:
                    got = rows.get(e.ident)
                    if got is None:
                        found.append(AheadOfDb(p, o, e.offset, e.ident, "no row", at_s))
                    elif got != e.value:
                        self.pending.append((p, o, e.ident, e.offset, got, at_s))
                elif e.kind == KIND_EMPTY:
                    end = ranges.get(e.ident)
                    if end is None or end < e.value:
                        found.append(AheadOfDb(p, o, e.offset, e.ident, "no empty range", at_s))
                else:
                    self.rejects.add((p, e.offset))
            if entries:
                self.checked[p] = max(self.checked.get(p, 0), entries[-1].offset + 1)
        self.violations.extend(found)
        return found

    def finish(self, index: TopicIndex, dlq: set[tuple[int, int]]) -> list[AheadOfDb]:
        """Settle differing rows with the full topic; rejected records must be in the DLQ."""
        found: list[AheadOfDb] = []
        for p, o, ident, offset, got, at_s in self.pending:
            if got not in index.values_from(ident, offset):
                found.append(AheadOfDb(p, o, offset, ident, "older value", at_s))
        for p, offset in sorted(self.rejects - dlq):
            found.append(AheadOfDb(p, -1, offset, ("", "", offset), "not in DLQ", 0.0))
        self.violations.extend(found)
        return found


# -- invariants 1 and 8 on the topic --------------------------------------------------------


@dataclass(slots=True)
class TopicAudit:
    klines: int = 0
    empty_ranges: int = 0
    corrected_ws: int = 0
    corrected_seen: set[Ident] = field(default_factory=set)  # had a WS record with the old value
    not_in_truth: list[tuple[Ident, str]] = field(default_factory=list)  # fabricated / open
    wrong_value: list[tuple[Ident, str]] = field(default_factory=list)
    bad_empty: list[tuple[Ident, int]] = field(default_factory=list)


def audit_topic(
    index: TopicIndex,
    truth: Mapping[PairKey, Mapping[int, int]],
    corrected: frozenset[Ident],
) -> TopicAudit:
    """``truth``: per pair, open time → value key of every closed candle the exchange has."""
    audit = TopicAudit()
    for _p, e in index.entries():
        pair = (e.ident[0], e.ident[1])
        if e.kind == KIND_KLINE:
            audit.klines += 1
            want = truth.get(pair, {}).get(e.ident[2])
            if want is None:
                audit.not_in_truth.append((e.ident, e.source))
            elif want != e.value:
                if e.ident in corrected and e.source == "ws":
                    audit.corrected_ws += 1
                    audit.corrected_seen.add(e.ident)
                else:
                    audit.wrong_value.append((e.ident, e.source))
        elif e.kind == KIND_EMPTY:
            audit.empty_ranges += 1
            opens = truth.get(pair, {})
            if any(e.ident[2] <= t < e.value for t in opens):
                audit.bad_empty.append((e.ident, e.value))
    return audit


# -- services -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exit:
    """A service process ended. ``expected``: we killed or stopped it."""

    service: str
    at_s: float
    code: int | None
    uptime_s: float
    expected: bool


def crash_loop(exits: Sequence[Exit], threshold: int = 5, quick_s: float = 10.0) -> bool:
    """True when a service exited on its own ``threshold`` times in a row, each soon after
    it started (supervisord would call it FATAL)."""
    run = 0
    for e in exits:
        if e.expected:
            run = 0
        elif e.uptime_s < quick_s:
            run += 1
            if run >= threshold:
                return True
        else:
            run = 0
    return False


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    ok: bool
    detail: str


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(str(h) for h in header) + " |"]
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        return "\n".join(lines)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(c) for c in r)) for r in rows]
    return "\n".join(lines)
