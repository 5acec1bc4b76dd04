"""The live producer: Binance WebSocket kline streams → Kafka, with its resume points.

Sequencing only; every decision is made by the pure modules (``qryptify.binance.ws``,
``stream``, ``watchdog``, ``rotation``). Tasks on one asyncio loop:

* the connections (``connections``): one slot per planned group of streams, reconnecting and
  rotating; the frames read come back here in batches (``_on_messages``: decided in one call,
  ``qryptify.binance.frames``, then book, publish or DLQ frame by frame);
* the REST fetches (``fills``): a gap fill after every connect, and the watchdog's;
* the committer: acknowledged frontiers → the offsets topic (service ``producer``);
* the exchange-clock sync (``/fapi/v1/time``).

A Kafka poll thread serves delivery reports; acknowledgements are handed to the loop through
``acks.Acks``, which also measures the frame → ack latency (and calls the one optional
benchmark hook, ``AckObserver``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import cast

from prometheus_client import Counter

from qryptify.binance.frames import Close, kline_frames
from qryptify.binance.rest import BinanceRest
from qryptify.binance.ws import Frame, KlineFrame, Malformed, plan_connections, stream_url
from qryptify.config import Config
from qryptify.dlq import DlqWriter, FrameLetter
from qryptify.errors import IngestorError
from qryptify.handoff import LIVE_START, PLAN, live_start, producer_resume_from
from qryptify.kafka import Producer
from qryptify.kline import Kline
from qryptify.metrics import Health
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair
from qryptify.publish import KlinePublisher
from qryptify.retry import until_available
from services.producer.acks import AckObserver, Acks, NotifyingTracker, TimedProducer
from services.producer.clock import StreamClock
from services.producer.connections import TICK_S, Conn, Connections, Group
from services.producer.fills import DUPLICATES, PUBLISHED, RestFills
from services.producer.futures import FuturesLive
from services.producer.stats import RunStats
from services.producer.stream import LiveBook, Verdict

logger = logging.getLogger(__name__)

SERVICE = "producer"

FRAMES = Counter("qryptify_producer_frames_total", "WebSocket frames received, by kind", ["kind"])
MALFORMED = Counter("qryptify_producer_malformed_frames_total", "Malformed frames", ["kind"])
# The per-frame series, bound once: ``labels()`` costs more than the increment itself.
FRAMES_CLOSED = FRAMES.labels("kline_closed")
FRAMES_OPEN = FRAMES.labels("kline_open")
PUBLISHED_WS = PUBLISHED.labels("ws")
DUPLICATES_WS = DUPLICATES.labels("ws")

__all__ = ["SERVICE", "AckObserver", "ProducerRunner", "RunStats"]


class ProducerRunner:
    """Runs until ``stop`` is set; ``run()`` returns 0 after a clean shutdown."""

    def __init__(
        self,
        cfg: Config,
        stop: threading.Event,
        health: Health,
        *,
        producer: Producer,
        rest: BinanceRest,
        clock: StreamClock,
        offsets: SourceOffsetStore,
        pairs: Sequence[Pair] | None = None,
        observer: AckObserver | None = None,
        futures: FuturesLive | None = None,
    ) -> None:
        self.cfg = cfg
        #: The live futures path (``futures`` config), run beside the kline streams.
        self.futures = futures
        self.stop = stop
        self.health = health
        self.producer = producer
        self.rest = rest
        self.clock = clock
        self.offsets = offsets
        self.pairs = tuple(pairs if pairs is not None else cfg.pairs)
        timed = TimedProducer(producer)
        self.acks = Acks(timed, observer)
        # Duck-typed stand-in for the Producer (KlinePublisher only calls produce and poll).
        self.publisher = KlinePublisher(cast(Producer, timed), cfg.kafka.topic)
        self.publisher.tracker = NotifyingTracker(self.acks.report)
        self.stats = RunStats()
        self.book = LiveBook({})
        self.fills = RestFills(cfg.ws, rest, clock, self.book, self.stats, self._publish_rest)
        self.connections = Connections(
            cfg.ws,
            clock,
            self.stats,
            on_messages=self._on_messages,
            on_connected=self.fills.after_connect,
        )
        self.dlq = DlqWriter(producer, cfg.kafka.dlq_topic)
        self._malformed_seen: set[str] = set()
        self._poll_done = threading.Event()

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> int:
        poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        poller.start()
        try:
            asyncio.run(self._main())
        finally:
            self._poll_done.set()
            poller.join(timeout=5)
        return 0

    def _poll_loop(self) -> None:
        while not self._poll_done.is_set():
            self.producer.poll(0.05)

    async def _main(self) -> None:
        self.fills.start()
        try:
            started = await until_available(
                self._start, self.stop, what="exchange clock sync", health=self.health
            )
            if not started:  # stop requested before the exchange answered
                return
            tasks = [
                asyncio.create_task(self._clock_loop(), name="clock"),
                asyncio.create_task(self._watchdog_loop(), name="watchdog"),
                asyncio.create_task(self._commit_loop(), name="offsets"),
            ]
            if self.futures is not None:
                tasks.append(asyncio.create_task(self.futures.run(), name="futures"))
            groups = plan_connections(self.pairs, self.cfg.ws.max_streams_per_connection)
            for i, group in enumerate(groups):
                url = stream_url(self.cfg.ws.endpoint, [p.stream for p in group])
                tasks.append(asyncio.create_task(self.connections.run_group(Group(i, group, url))))
            logger.info(
                "streaming %d pairs over %d connections from %s",
                len(self.pairs),
                len(groups),
                self.cfg.ws.endpoint,
            )
            skipped = sorted(str(p) for p in self.fills.unlisted.pairs)
            self.health.set(
                True,
                f"streaming {len(self.pairs)} pairs"
                + (f"; not listed (skipped): {', '.join(skipped)}" if skipped else ""),
            )
            while not self.stop.is_set():
                for task in tasks:
                    if task.done() and not task.cancelled():
                        failure = task.exception()
                        if failure is not None:
                            raise failure
                await asyncio.sleep(0.1)
            logger.info("stopping: closing connections, flushing Kafka")
            self.health.set(False, "stopping")
            self.connections.stopping = True
            for task in [*tasks, *self.fills.tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self.fills.tasks, return_exceptions=True)
            await self.connections.close_all()
        finally:
            await self.rest.aclose()
            await asyncio.to_thread(self._final_flush)

    async def _start(self) -> bool:
        # Three syncs over 1.2 s: the offset, and the clock's rate (1 against Binance; the
        # speed of an accelerated simulator, whatever rest.time_sync_every_s is).
        for i in range(3):
            if i:
                await asyncio.sleep(0.6)
            await self.rest.server_time()
        unlisted = self.fills.unlisted
        gone, _ = unlisted.update(self.pairs, await self.rest.exchange_info())
        for pair in gone:
            self.fills.report_unlisted(pair, "is not listed on the exchange (exchangeInfo)")
        self.pairs = tuple(p for p in self.pairs if p not in unlisted)
        self.book = self.fills.book = LiveBook(await asyncio.to_thread(self._resume_points))
        return True

    def _resume_points(self) -> dict[Pair, int]:
        """Each pair's frontier: its stored offset, or for a pair never streamed its live start
        (now); then lowered to the backfiller's plan where that ends before the live start
        (``qryptify.handoff``: the live start is acknowledged before the plans are read)."""
        loaded = self.offsets.load_services((SERVICE, LIVE_START))
        stored, starts = loaded[SERVICE], loaded[LIVE_START]
        now = self.clock.now_ms()
        resume: dict[Pair, int] = {}
        fresh: list[Pair] = []
        for pair in self.pairs:
            if pair in stored:
                resume[pair] = stored[pair]
            else:
                resume[pair] = live_start(pair.interval, now, self.clock.uncertainty_ms)
                starts[pair] = resume[pair]
                fresh.append(pair)
                self.offsets.commit(SERVICE, pair, resume[pair])
                self.offsets.commit(LIVE_START, pair, resume[pair])
        if fresh:
            self.offsets.acknowledge()
            logger.info("%d pairs start live from now (no stored offset)", len(fresh))
        if len(fresh) < len(self.pairs):
            logger.info("%d pairs resume from their stored offsets", len(self.pairs) - len(fresh))
        plans = self.offsets.load(PLAN)
        for pair in self.pairs:
            plan = producer_resume_from(starts.get(pair), plans.get(pair))
            if plan is None:
                continue
            # The backfiller's pass ends before this producer's live start: the candles in
            # between are this producer's, fetched by the REST gap fill after connecting.
            logger.info(
                "%s: backfiller's pass ends at %d, before the live start %d: filling from there",
                pair,
                plan,
                starts[pair],
            )
            resume[pair] = min(resume[pair], plan)
            self.offsets.commit(SERVICE, pair, resume[pair])
            self.offsets.commit(LIVE_START, pair, plan)
        return resume

    def _final_flush(self) -> None:
        remaining = self.producer.flush(30)
        self.acks.drain(self.book)
        self._commit_offsets()
        self._log_lagging(self.clock.now_ms())
        remaining += self.offsets.producer.flush(30)
        if remaining:
            logger.error("%d Kafka records still unacknowledged at exit", remaining)
        else:
            logger.info(
                "stopped: %d klines from WS, %d from REST, %d duplicates, %d malformed frames",
                self.stats.published_ws,
                self.stats.published_rest,
                self.stats.duplicates,
                self.stats.malformed,
            )

    # -- frames --------------------------------------------------------------------------------
    def _on_messages(self, conn: Conn, messages: list[str | bytes]) -> None:
        """A batch of frames read together (``connections``): decided in one call (the
        compiled core when active), then acted on frame by frame, in order."""
        frame_s = time.perf_counter()
        conn.last_wall = time.monotonic()
        self.stats.frames += len(messages)
        ingested_at = time.time_ns() // 1_000_000
        closed_only = not self.cfg.ws.check_open_frames
        codec = self.publisher.codec
        verdicts: list[Frame | Close | None]
        try:
            verdicts = list(kline_frames(messages, ingested_at, codec, closed_only=closed_only))
        except Exception:
            # One frame the decision cannot take must not cost the batch: frame by frame, as
            # the Python path, each failure logged (the watchdog refetches).
            logger.exception("connection %d: frame batch failed; deciding frame by frame", conn.cid)
            verdicts = []
            for message in messages:
                try:
                    verdicts += kline_frames(
                        [message], ingested_at, codec, closed_only=closed_only, native_ok=False
                    )
                except Exception:
                    logger.exception("connection %d: frame handling failed", conn.cid)
                    verdicts.append(None)
        closes: list[tuple[str, str, int, bytes]] = []
        for message, frame in zip(messages, verdicts, strict=True):
            if frame is None:
                continue
            try:
                self._on_frame(conn, message, frame, frame_s, closes)
            except IngestorError:
                raise
            except Exception:
                # Never let one frame take the stream down; the watchdog refetches.
                logger.exception("connection %d: frame handling failed", conn.cid)
        if closes:
            try:
                self.publisher.publish_values(closes)
            except Exception:
                # A close librdkafka refused gets no delivery report, so it would stay "sent"
                # and hold its pair's frontier forever: forget the batch's closes, so the gap
                # fill fetches them again (one already queued comes twice; the sink is idempotent).
                for symbol, interval, open_time, _value in closes:
                    self.book.on_failed(Pair(symbol, interval), open_time)
                raise

    def _on_frame(
        self,
        conn: Conn,
        message: str | bytes,
        frame: Frame | Close,
        frame_s: float,
        closes: list[tuple[str, str, int, bytes]],
    ) -> None:
        """One frame's verdict acted on; a new close joins ``closes`` (published after the
        batch, in order)."""
        if type(frame) is Close or type(frame) is KlineFrame:
            self.clock.observe_event(frame.event_time)
            conn.last_ex = frame.event_time
            if not conn.delivered:
                conn.delivered = True
                conn.first_frame_wall = conn.last_wall
        else:
            conn.last_ex = self.clock.now_ms()
        verdict = self.book.on_frame(frame)
        if verdict is Verdict.OPEN:  # the common case: most frames are open snapshots
            FRAMES_OPEN.inc()
        elif verdict is Verdict.PUBLISH and type(frame) is Close:
            FRAMES_CLOSED.inc()
            self.acks.sending(frame.symbol, frame.interval, frame.open_time, frame_s)
            closes.append((frame.symbol, frame.interval, frame.open_time, frame.value))
            self.stats.published_ws += 1
            PUBLISHED_WS.inc()
        elif verdict is Verdict.DUPLICATE:
            FRAMES_CLOSED.inc()
            self.stats.duplicates += 1
            DUPLICATES_WS.inc()
        elif verdict is Verdict.MALFORMED and isinstance(frame, Malformed):
            self._malformed(frame, message)
        elif verdict is Verdict.CONTROL:
            FRAMES.labels("control").inc()
        else:
            FRAMES.labels("foreign").inc()

    def _publish_rest(self, kline: Kline) -> None:
        self.publisher.publish(kline)

    def _malformed(self, frame: Malformed, message: str | bytes) -> None:
        self.stats.malformed += 1
        FRAMES.labels("malformed").inc()
        MALFORMED.labels(frame.kind).inc()
        raw = message.encode() if isinstance(message, str) else bytes(message)
        if frame.kind not in self._malformed_seen:
            self._malformed_seen.add(frame.kind)
            logger.warning(
                "malformed frame (%s) on %s: %s; frame %r (further ones of this kind are counted "
                "in qryptify_producer_malformed_frames_total and sent to %s)",
                frame.kind,
                frame.stream or "?",
                frame.reason,
                raw[:200],
                self.cfg.kafka.dlq_topic,
            )
        self.dlq.post(FrameLetter(raw, frame.kind, frame.reason, frame.stream))

    # -- watchdog, offsets and clock ----------------------------------------------------------
    async def _watchdog_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.acks.drain(self.book)
            self.fills.watch(self.clock.now_ms())

    def _log_lagging(self, now_ms: int) -> None:
        """Pairs with closed candles missing (what the watchdog is still after)."""
        lagging = [
            (b.pair, b.first_missing(), len(b.sent), len(b.done))
            for b in self.book
            if self.book.missing_closed(b.pair, now_ms) is not None
        ]
        if lagging:
            shown = ", ".join(
                f"{p} from {t} (sent {s}, done {d}, busy {p in self.fills.busy})"
                for p, t, s, d in lagging[:10]
            )
            logger.info("%d pairs with closed candles missing: %s", len(lagging), shown)

    def _commit_offsets(self) -> int:
        dirty = self.book.dirty()
        for pair, frontier in dirty:
            self.offsets.commit(SERVICE, pair, frontier)
        self.book.committed(dirty)
        return len(dirty)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.ws.offset_commit_every_s)
            self.acks.drain(self.book)
            self._commit_offsets()

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.rest.time_sync_every_s)
            try:
                await self.rest.server_time()
            except IngestorError as exc:
                logger.warning("exchange clock sync failed: %s", exc)
