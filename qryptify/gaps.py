"""Pure gap finding: the expected candle grid minus what is stored minus what the exchange
confirmed empty gives the holes to refetch; the grid minus what a REST page returned gives
the ranges the exchange confirms empty.

Ranges are ``(start, end)`` of open times, start inclusive and end exclusive, on the grid.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from qryptify.kline import Kline
from qryptify.pairs import (
    DAY_MS,
    align_open,
    ceil_open,
    count_opens,
    interval_ms,
    is_fixed,
    next_open,
)

Range = tuple[int, int]


def find_gaps(
    stored_ts: Iterable[int],
    interval: str,
    start_ms: int,
    end_ms: int,
    empty_ranges: Sequence[Range] = (),
) -> list[Range]:
    """Holes of the grid ``[start_ms, end_ms)`` not covered by ``stored_ts`` (ascending open
    times; only the ones adjacent to holes matter) nor by ``empty_ranges``."""
    holes: list[Range] = []
    expected = ceil_open(interval, start_ms)
    for ts in stored_ts:
        if ts < expected:
            continue
        if ts >= end_ms:
            break
        if ts > expected:
            holes.append((expected, align_open(interval, ts)))
        expected = next_open(interval, align_open(interval, ts))
    if expected < end_ms:
        holes.append((expected, ceil_open(interval, end_ms)))
    return subtract(holes, empty_ranges, interval)


def subtract(holes: Sequence[Range], covered: Sequence[Range], interval: str) -> list[Range]:
    """``holes`` minus every open time inside a ``covered`` range, kept on the grid."""
    result: list[Range] = []
    spans = sorted(covered)
    for a, b in holes:
        pieces = [(a, b)]
        for ca, cb in spans:
            if cb <= a or ca >= b:
                continue
            next_pieces: list[Range] = []
            for pa, pb in pieces:
                if cb <= pa or ca >= pb:
                    next_pieces.append((pa, pb))
                    continue
                left = (pa, min(pb, ceil_open(interval, ca)))
                right = (max(pa, ceil_open(interval, cb)), pb)
                next_pieces.extend(r for r in (left, right) if r[0] < r[1])
            pieces = next_pieces
        result.extend(pieces)
    return result


def missing_runs(interval: str, start_ms: int, end_ms: int, opens: Iterable[int]) -> list[Range]:
    """Contiguous runs of grid slots in ``[start_ms, end_ms)`` absent from ``opens``."""
    ordered = sorted(opens)
    if _grid_run(interval, ordered):
        # An unbroken run of grid slots (an archive file as published): holes can only be
        # before and after it, so skip find_gaps' per-candle walk (same answer).
        expected = ceil_open(interval, start_ms)
        inside = ordered[bisect_left(ordered, expected) : bisect_left(ordered, end_ms)]
        if inside:
            holes = [(expected, inside[0])] if inside[0] > expected else []
            after = next_open(interval, inside[-1])
            if after < end_ms:
                holes.append((after, ceil_open(interval, end_ms)))
            return holes
    return find_gaps(ordered, interval, start_ms, end_ms)


def _grid_run(interval: str, ordered: list[int]) -> bool:
    """True when ``ordered`` is consecutive slots of a fixed interval's grid."""
    if not ordered or not is_fixed(interval) or align_open(interval, ordered[0]) != ordered[0]:
        return False
    step = interval_ms(interval)
    return ordered == list(range(ordered[0], ordered[0] + step * len(ordered), step))


def day_shortfalls(
    interval: str, start_ms: int, end_ms: int, opens: Iterable[int]
) -> list[tuple[int, int, int]]:
    """Per UTC day of ``[start_ms, end_ms)``: ``(day, expected, found)`` for every day whose
    row count differs from the grid's (an archive file's per-day check)."""
    found: dict[int, int] = {}
    times = opens if isinstance(opens, list) else list(opens)
    ascending = all(map(operator.le, times, times[1:]))
    day = start_ms - start_ms % DAY_MS
    if ascending:  # an archive file's rows: count each day by bisection, not row by row
        while day < end_ms:
            lo = bisect_left(times, max(day, start_ms))
            found[day] = bisect_left(times, min(day + DAY_MS, end_ms)) - lo
            day += DAY_MS
    else:
        for t in times:
            if start_ms <= t < end_ms:
                day = t - t % DAY_MS
                found[day] = found.get(day, 0) + 1
    short: list[tuple[int, int, int]] = []
    day = start_ms - start_ms % DAY_MS
    while day < end_ms:
        expected = count_opens(interval, max(day, start_ms), min(day + DAY_MS, end_ms))
        if found.get(day, 0) != expected:
            short.append((day, expected, found.get(day, 0)))
        day += DAY_MS
    return short


def confirmed_empty(
    interval: str, start_ms: int, end_ms: int, klines: Sequence[Kline]
) -> list[Range]:
    """Ranges of one REST answer for ``[start_ms, end_ms)`` that the exchange left out.

    Valid only when the request could return every slot (``slots <= limit``) and every slot
    is closed: then an absent candle does not exist on the exchange.
    """
    return missing_runs(interval, start_ms, end_ms, (k.open_time for k in klines))


def holes_from_jumps(
    interval: str,
    start_ms: int,
    end_ms: int,
    first: int | None,
    last: int | None,
    jumps: Iterable[Range],
    empty_ranges: Sequence[Range] = (),
) -> list[Range]:
    """The holes ``find_gaps`` would find, from what the gap SQL returns: the first and last
    stored open time in the range and each jump ``(a, b)`` (a stored candle ``a`` whose next
    stored candle ``b`` is later than the next grid slot)."""
    if first is None or last is None:
        return find_gaps([], interval, start_ms, end_ms, empty_ranges)
    holes: list[Range] = []
    begin = ceil_open(interval, start_ms)
    if first > begin:
        holes.append((begin, align_open(interval, first)))
    for a, b in sorted(jumps):
        holes.append((next_open(interval, align_open(interval, a)), align_open(interval, b)))
    after = next_open(interval, align_open(interval, last))
    if after < end_ms:
        holes.append((after, ceil_open(interval, end_ms)))
    return subtract([h for h in holes if h[0] < h[1]], empty_ranges, interval)


def holes_below(holes: Sequence[Range], resume_ms: int) -> list[Range]:
    """The part of the gap finder's ``holes`` before ``resume_ms``, where the pass's plan
    starts: the plan covers everything from there on, so a hole after it would publish the
    same candles twice (a pair with no stored offset resumes at its range's start)."""
    return [(a, min(b, resume_ms)) for a, b in holes if a < resume_ms]
