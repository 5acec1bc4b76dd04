"""Watchdogs, pure: which pairs are overdue for a REST fetch, which connections went silent.

A pair's next candle is expected (its ``x:true`` frame) by ``close_time + grace``. When it has
not arrived by then — a skipped frame, a malformed one, a stalled or dead connection — the
pair is fetched by REST. After a fetch the pair is not asked again before ``retry_ms`` (REST may
lag the stream by a few seconds), so an unreachable candle cannot cause a request storm.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from qryptify.pairs import Pair, close_time
from services.producer.stream import LiveBook


@dataclass(slots=True)
class Watchdog:
    grace_ms: int
    retry_ms: int
    _not_before: dict[Pair, int] = field(default_factory=dict)
    _quiet: _QuietSpan | None = None

    def __post_init__(self) -> None:
        if self.grace_ms < 0 or self.retry_ms < 1:
            raise ValueError("need grace_ms >= 0 and retry_ms >= 1")

    def overdue(self, book: LiveBook, now_ms: int, busy: Collection[Pair] = ()) -> list[Pair]:
        """Pairs whose oldest missing candle closed more than ``grace_ms`` before ``now_ms``
        (exchange time), not already being fetched, and not fetched within ``retry_ms``.

        Asked many times a second over every pair, so a scan also notes the earliest time any
        pair could become due; until then, with the book not set back and every pair it skipped
        as busy still busy, nothing can be due and the answer is known without a scan.
        """
        not_before = self._not_before
        quiet = self._quiet
        if (
            quiet is not None
            and quiet.book is book
            and quiet.regressions == book.regressions
            and quiet.since_ms <= now_ms < quiet.until_ms
            # A pair skipped as busy is still busy, or was fetched since and must wait.
            and all(pair in busy or now_ms < not_before.get(pair, 0) for pair in quiet.busy)
        ):
            return []
        due: list[Pair] = []
        skipped: list[Pair] = []
        until = _NEVER
        grace = self.grace_ms
        for pb in book:
            pair = pb.pair
            if pair in busy:
                skipped.append(pair)
                continue
            # Due once close + grace < now and now >= not_before.
            at = max(
                close_time(pair.interval, pb.first_missing()) + grace + 1, not_before.get(pair, 0)
            )
            if now_ms >= at:
                due.append(pair)
            elif at < until:
                until = at
        # A due pair stays due until it is fetched: the next call scans again.
        self._quiet = _QuietSpan(
            book, book.regressions, now_ms, now_ms if due else until, tuple(skipped)
        )
        return due

    def fetched(self, pair: Pair, now_ms: int) -> None:
        """A REST fetch for ``pair`` finished at ``now_ms``: give the exchange time to catch up
        before asking again for whatever is still missing."""
        not_before = now_ms + self.retry_ms
        if not_before < self._not_before.get(pair, 0):
            self._quiet = None  # moved earlier (a clock that went back): scan again
        self._not_before[pair] = not_before


#: Later than any exchange time.
_NEVER = 2**63


@dataclass(frozen=True, slots=True)
class _QuietSpan:
    """What a scan of ``book`` at ``since_ms`` proved: no pair is due before ``until_ms``.

    It holds while the book's candles only move forward (sends, acks, confirmed absences) and
    ``not_before`` only grows. A failed delivery (``book.regressions``) can make an older candle
    missing again, so it ends the span; so does a pair skipped as busy (it was not looked at)
    once it is neither busy nor waiting for its ``not_before``.
    """

    book: LiveBook
    regressions: int
    since_ms: int
    until_ms: int
    busy: tuple[Pair, ...]


def stale_connections(
    last_frame: Mapping[int, tuple[int, float]],
    exchange_now_ms: int,
    wall_now_s: float,
    stale_after_ms: int,
    min_wall_s: float,
) -> list[int]:
    """Connections silent for ``stale_after_ms`` of exchange time *and* ``min_wall_s`` of wall
    time. ``last_frame`` maps a connection id to (exchange ms, wall s) of its last frame (or of
    its opening). Two clocks, because against an accelerated exchange (the simulator) a few
    milliseconds of scheduling jitter are many exchange seconds.
    """
    return [
        conn
        for conn, (ex_ms, wall_s) in last_frame.items()
        if exchange_now_ms - ex_ms >= stale_after_ms and wall_now_s - wall_s >= min_wall_s
    ]


def pairs_needing_fill(book: LiveBook, pairs: Iterable[Pair], now_ms: int) -> list[Pair]:
    """After a (re)connect: the pairs with closed candles missing since their frontier. The
    others need no REST call (nothing closed that the new connection cannot deliver)."""
    return [p for p in pairs if book.missing_closed(p, now_ms) is not None]
