"""The producer's REST fetches: after every connect a gap fill for each of the connection's pairs
with closed candles missing since its frontier (its own resume point), and the watchdog's
fetch of a pair whose next candle did not arrive by close + grace. At most
``ws.rest_concurrency`` run at once; a pair is fetched by one task at a time (``busy``), and a
pair the exchange does not list is never fetched again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client import Counter

from qryptify.binance.rest import BinanceRest, UnlistedPairs, is_unlisted_rejection
from qryptify.config import WsConfig
from qryptify.errors import IngestorError
from qryptify.kline import Kline
from qryptify.pairs import Pair, align_open, close_time, count_opens, next_open
from services.producer.clock import StreamClock
from services.producer.stats import RunStats
from services.producer.stream import LiveBook, Verdict, absent_open_times, closed_rest_klines
from services.producer.watchdog import Watchdog, pairs_needing_fill

logger = logging.getLogger(__name__)

#: A REST row with no newer row after it (so no exchange proof that it closed), or a hole after
#: the newest row, is trusted only this long after its close: exchange ms, and at least
#: SETTLE_WALL_S of wall time at the exchange clock's rate (an accelerated simulator).
SETTLE_MS = 60_000
SETTLE_WALL_S = 30.0
#: A REST fetch (queueing included) slower than this is logged.
SLOW_FETCH_S = 5.0

PUBLISHED = Counter(
    "qryptify_producer_klines_published_total", "Closed klines sent to Kafka", ["source"]
)
DUPLICATES = Counter(
    "qryptify_producer_duplicates_total", "Closed klines already sent (dropped)", ["source"]
)
WATCHDOG = Counter("qryptify_producer_watchdog_fetches_total", "REST fetches by the watchdog")
GAP_FILLS = Counter("qryptify_producer_gap_fill_fetches_total", "REST gap fills after connects")
REST_KLINES = Counter(
    "qryptify_producer_rest_klines_total", "Closed klines published from REST", ["reason"]
)


class RestFills:
    """Gap fills and watchdog fetches. ``book`` is the producer's (set once it is loaded)."""

    def __init__(
        self,
        ws: WsConfig,
        rest: BinanceRest,
        clock: StreamClock,
        book: LiveBook,
        stats: RunStats,
        publish: Callable[[Kline], None],
    ) -> None:
        self.ws = ws
        self.rest = rest
        self.clock = clock
        self.book = book
        self.stats = stats
        self.publish = publish
        self.watchdog = Watchdog(grace_ms=ws.watchdog_grace_ms, retry_ms=ws.watchdog_retry_ms)
        #: Pairs a REST fetch is running for, and pairs the exchange does not list (never
        #: fetched: the watchdog skips busy pairs).
        self.busy: set[Pair] = set()
        self.unlisted = UnlistedPairs()
        self.tasks: set[asyncio.Task[None]] = set()
        self._rest_sem: asyncio.Semaphore | None = None

    def start(self) -> None:
        """On the loop, before the first fetch."""
        self._rest_sem = asyncio.Semaphore(self.ws.rest_concurrency)

    def after_connect(self, pairs: Sequence[Pair]) -> None:
        now = self.clock.now_ms()
        for pair in pairs_needing_fill(self.book, pairs, now):
            if pair not in self.busy:
                self.stats.gap_fill_fetches += 1
                GAP_FILLS.inc()
                self._spawn_fetch(pair, "gap_fill")

    def watch(self, now_ms: int) -> None:
        """The watchdog's tick: fetch every pair whose next candle is overdue."""
        for pair in self.watchdog.overdue(self.book, now_ms, self.busy):
            self.stats.watchdog_fetches += 1
            WATCHDOG.inc()
            self._spawn_fetch(pair, "watchdog")

    def _spawn_fetch(self, pair: Pair, reason: str) -> None:
        self.busy.add(pair)
        task = asyncio.create_task(self._fetch(pair, reason))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _fetch(self, pair: Pair, reason: str) -> None:
        """REST-fetch every closed candle of ``pair`` missing since its frontier."""
        sem = self._rest_sem
        if sem is None:  # pragma: no cover - set in start
            raise RuntimeError("not started")
        started = time.monotonic()
        try:
            async with sem:
                await self._fetch_pages(pair, reason)
        except IngestorError as exc:
            if is_unlisted_rejection(exc):
                if self.unlisted.mark(pair):
                    self.report_unlisted(pair, f"is no longer listed ({exc})")
            else:
                self.stats.rest_errors += 1
                logger.warning("REST %s of %s failed: %s", reason, pair, exc)
        finally:
            if pair not in self.unlisted:
                self.busy.discard(pair)
            self.watchdog.fetched(pair, self.clock.now_ms())
            took = time.monotonic() - started
            if took > SLOW_FETCH_S:
                logger.warning("REST %s of %s took %.1f s", reason, pair, took)

    async def _fetch_pages(self, pair: Pair, reason: str) -> None:
        interval = pair.interval
        cursor = self.book.book(pair).first_missing()
        for _ in range(10_000):  # a bound, not a limit reached in practice
            now = self.clock.now_ms()
            if close_time(interval, cursor) >= now:
                return
            # Ask up to (and past) the candle open now: it proves every earlier row closed.
            end = next_open(interval, align_open(interval, now))
            wanted = count_opens(interval, cursor, next_open(interval, end))
            limit = max(1, min(self.rest.page_limit, wanted))
            page = await self.rest.klines(pair, cursor, end, limit)
            now = self.clock.now_ms()
            settle = max(SETTLE_MS, int(SETTLE_WALL_S * 1000 * self.clock.rate))
            settle += self.clock.uncertainty_ms
            closed = closed_rest_klines(page, now, settle)
            published = 0
            for kline in closed:
                if self.book.offer(kline) is Verdict.PUBLISH:
                    self.publish(kline)
                    published += 1
                else:
                    self.stats.duplicates += 1
                    DUPLICATES.labels("rest").inc()
            if published:
                self.stats.published_rest += published
                PUBLISHED.labels("rest").inc(published)
                REST_KLINES.labels(reason).inc(published)
            checked_end = next_open(interval, closed[-1].open_time) if closed else cursor
            if len(page) < limit:
                checked_end = max(checked_end, align_open(interval, now))
            holes = absent_open_times(
                pair,
                cursor,
                checked_end,
                (k.open_time for k in page),
                settled_before_ms=now - self.ws.watchdog_grace_ms - settle,
            )
            if holes:
                logger.info("%s: %d candles confirmed absent by REST", pair, len(holes))
                self.book.confirm_absent(pair, holes)
            if len(page) < limit or not closed:
                return
            cursor = next_open(interval, closed[-1].open_time)

    def report_unlisted(self, pair: Pair, why: str) -> None:
        logger.error(
            "%s: symbol %s %s; not fetched again, the other pairs go on", pair, pair.symbol, why
        )
        self.busy.add(pair)
