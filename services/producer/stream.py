"""The producer's bookkeeping, pure: which closed candles to publish, which are duplicates,
where each pair's resume point (source offset) stands, and what is still missing.

Per pair the book keeps a *frontier*: the open time of the newest candle such that it and every
candle before it (since the pair's start) is done — published and acknowledged by Kafka, or
confirmed by the exchange's REST answer not to exist. Candles newer than the frontier are
tracked one by one until the frontier catches up. The frontier is the resume point written to
the offsets topic; after a restart or reconnect everything after it is fetched by REST.

A candle is offered at most once to Kafka per process: a second ``x:true`` frame (a duplicated
frame, the overlap of a rotation, a REST gap fill racing the stream) is a counted duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from qryptify.binance.frames import Close
from qryptify.binance.ws import ControlReply, Frame, KlineFrame, Malformed
from qryptify.errors import InvalidKline
from qryptify.kline import Kline, closed_at, validate_kline
from qryptify.pairs import Pair, close_time, next_open

logger = logging.getLogger(__name__)


class Verdict(Enum):
    PUBLISH = "publish"  # new closed candle: send it
    DUPLICATE = "duplicate"  # already sent (or done): drop, count
    OPEN = "open"  # a snapshot of a candle still open: nothing to do
    CONTROL = "control"  # a reply to a control message
    MALFORMED = "malformed"  # to the DLQ
    FOREIGN = "foreign"  # a valid kline of a stream this book does not track


@dataclass(slots=True)
class PairBook:
    """One pair's state. ``frontier`` is an open time; see the module docstring."""

    pair: Pair
    frontier: int
    committed: int  # the frontier last written to the offsets topic
    sent: set[int] = field(default_factory=set)  # > frontier: offered to Kafka, not failed
    done: set[int] = field(default_factory=set)  # > frontier: acked or confirmed absent
    newest: int = -1  # newest open time sent (or done), for metrics and gap checks

    def is_known(self, open_time: int) -> bool:
        return open_time <= self.frontier or open_time in self.sent or open_time in self.done

    def first_missing(self) -> int:
        """The oldest open time after the frontier not yet sent nor done."""
        t = next_open(self.pair.interval, self.frontier)
        while t in self.sent or t in self.done:
            t = next_open(self.pair.interval, t)
        return t

    def advance(self) -> bool:
        """Move the frontier over done candles; True if it moved."""
        moved = False
        interval = self.pair.interval
        t = next_open(interval, self.frontier)
        while t in self.done:
            self.done.discard(t)
            self.sent.discard(t)
            self.frontier = t
            moved = True
            t = next_open(interval, t)
        return moved


@dataclass(slots=True)
class BookStats:
    published: int = 0
    duplicates: int = 0
    acked: int = 0
    failed: int = 0
    confirmed_absent: int = 0


class LiveBook:
    """Every tracked pair's ``PairBook``; decides publish vs duplicate. Not thread-safe: one
    event loop owns it (delivery reports are handed over to that loop)."""

    def __init__(self, resume: Mapping[Pair, int]) -> None:
        """``resume``: pair → frontier open time (stored offset, or on a fresh start the live
        start or the backfiller's plan: ``qryptify.handoff``)."""
        self._pairs: dict[Pair, PairBook] = {
            pair: PairBook(pair, frontier, frontier) for pair, frontier in resume.items()
        }
        self._by_key: dict[tuple[str, str], PairBook] = {
            (p.symbol, p.interval): b for p, b in self._pairs.items()
        }
        self.stats = BookStats()
        #: Times a candle was taken back (a failed delivery): the only change that can make an
        #: older candle missing again (watchdogs that remember a scan look at this).
        self.regressions = 0

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return tuple(self._pairs)

    def book(self, pair: Pair) -> PairBook:
        return self._pairs[pair]

    def __iter__(self) -> Iterator[PairBook]:
        return iter(self._pairs.values())

    def frontier(self, pair: Pair) -> int:
        return self._pairs[pair].frontier

    # -- deciding -------------------------------------------------------------------------
    def offer(self, kline: Kline) -> Verdict:
        """A closed candle from any source: PUBLISH (now marked sent) or DUPLICATE."""
        return self.offer_candle(kline.symbol, kline.interval, kline.open_time)

    def offer_candle(self, symbol: str, interval: str, open_time: int) -> Verdict:
        """``offer`` by the candle's key."""
        book = self._by_key.get((symbol, interval))
        if book is None:
            return Verdict.FOREIGN
        if book.is_known(open_time):
            self.stats.duplicates += 1
            return Verdict.DUPLICATE
        book.sent.add(open_time)
        book.newest = max(book.newest, open_time)
        self.stats.published += 1
        return Verdict.PUBLISH

    def on_frame(self, frame: Frame | Close) -> Verdict:
        """Classify a parsed WS frame; closed candles go through ``offer``."""
        if type(frame) is Close:
            return self.offer_candle(frame.symbol, frame.interval, frame.open_time)
        if isinstance(frame, Malformed):
            return Verdict.MALFORMED
        if isinstance(frame, ControlReply):
            return Verdict.CONTROL
        if isinstance(frame, KlineFrame):
            if not frame.closed or frame.kline is None:
                return Verdict.OPEN
            return self.offer(frame.kline)
        raise TypeError(f"not a frame: {frame!r}")  # pragma: no cover

    # -- outcomes ---------------------------------------------------------------------------
    def on_ack(self, pair: Pair, open_time: int) -> bool:
        """Kafka acknowledged the candle; True if the frontier moved."""
        book = self._pairs.get(pair)
        if book is None or open_time <= book.frontier:
            return False
        self.stats.acked += 1
        book.done.add(open_time)
        return book.advance()

    def on_failed(self, pair: Pair, open_time: int) -> None:
        """Kafka gave up on the candle: forget it was sent, so it is fetched again."""
        book = self._pairs.get(pair)
        if book is None or open_time <= book.frontier:
            return
        self.stats.failed += 1
        self.regressions += 1
        book.sent.discard(open_time)

    def confirm_absent(self, pair: Pair, open_times: Iterable[int]) -> bool:
        """The exchange confirmed these candles do not exist; True if the frontier moved."""
        book = self._pairs[pair]
        for t in open_times:
            if t > book.frontier and t not in book.sent and t not in book.done:
                book.done.add(t)
                self.stats.confirmed_absent += 1
        return book.advance()

    # -- what is missing ---------------------------------------------------------------------
    def missing_closed(self, pair: Pair, now_ms: int) -> int | None:
        """The open time from which closed candles are missing at ``now_ms``, or None."""
        first = self._pairs[pair].first_missing()
        return first if close_time(pair.interval, first) < now_ms else None

    def dirty(self) -> list[tuple[Pair, int]]:
        """Pairs whose frontier moved since the last ``committed`` call."""
        return [(b.pair, b.frontier) for b in self._pairs.values() if b.frontier != b.committed]

    def committed(self, offsets: Iterable[tuple[Pair, int]]) -> None:
        for pair, frontier in offsets:
            book = self._pairs[pair]
            book.committed = max(book.committed, min(frontier, book.frontier))


def absent_open_times(
    pair: Pair, start_ms: int, end_ms: int, found: Iterable[int], settled_before_ms: int
) -> list[int]:
    """Open times in ``[start_ms, end_ms)`` that a REST answer proves do not exist.

    ``found`` are the open times the answer returned. A hole counts as confirmed when the
    exchange returned a newer candle, or when the hole closed before ``settled_before_ms``
    (long enough ago that a lagging REST view cannot explain it). Nothing is fabricated: a
    confirmed hole is only skipped, never published as a candle.
    """
    present = sorted(set(found))
    newest = present[-1] if present else None
    holes: list[int] = []
    present_set = set(present)
    t = start_ms
    interval = pair.interval
    while t < end_ms:
        if t not in present_set:
            if (newest is not None and t < newest) or close_time(interval, t) < settled_before_ms:
                holes.append(t)
            else:
                break
        t = next_open(interval, t)
    return holes


def closed_rest_klines(page: Sequence[Kline], now_ms: int, settle_ms: int) -> list[Kline]:
    """The candles of one ascending REST page that are certainly closed, validated.

    A row followed by a newer row is closed: the exchange only returns candles that have
    opened, so it had moved past it (the exchange decides, not a local estimate). The last row
    (normally the still-open candle) counts only when it closed more than ``settle_ms`` before
    ``now_ms`` — long enough that no clock error explains it (a symbol with no newer candle,
    e.g. in maintenance). Rows failing the kline rules are logged and left out (the watchdog
    asks again later).
    """
    closed = list(page[:-1])
    if page and closed_at(page[-1].close_time, now_ms - settle_ms):
        closed.append(page[-1])
    valid: list[Kline] = []
    for kline in closed:
        try:
            valid.append(validate_kline(kline))
        except InvalidKline as exc:
            logger.warning("REST returned an invalid candle, not published: %s", exc.reason)
    return valid
