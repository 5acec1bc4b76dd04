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

    def __post_init__(self) -> None:
        if self.grace_ms < 0 or self.retry_ms < 1:
            raise ValueError("need grace_ms >= 0 and retry_ms >= 1")

    def overdue(self, book: LiveBook, now_ms: int, busy: Collection[Pair] = ()) -> list[Pair]:
        """Pairs whose oldest missing candle closed more than ``grace_ms`` before ``now_ms``
        (exchange time), not already being fetched, and not fetched within ``retry_ms``."""
        due: list[Pair] = []
        for pb in book:
            pair = pb.pair
            if pair in busy or now_ms < self._not_before.get(pair, 0):
                continue
            if close_time(pair.interval, pb.first_missing()) + self.grace_ms < now_ms:
                due.append(pair)
        return due

    def fetched(self, pair: Pair, now_ms: int) -> None:
        """A REST fetch for ``pair`` finished at ``now_ms``: give the exchange time to catch up
        before asking again for whatever is still missing."""
        self._not_before[pair] = now_ms + self.retry_ms


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
