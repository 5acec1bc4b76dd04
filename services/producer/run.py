"""The live producer's I/O: WebSocket connections, REST gap fills, Kafka, offsets. Sequencing
only; every decision is made by the pure modules (``qryptify.binance.ws``, ``stream``,
``watchdog``, ``rotation``).

Tasks on one asyncio loop:

* one *slot* per planned connection group (≤ ``ws.max_streams_per_connection`` streams): opens
  ``<endpoint>/market/stream?streams=…`` (attempts paced), reads frames, reconnects with
  jittered backoff, replaces a silent connection, rotates before the 24 h cut (replacement
  first; the old one closes once the replacement delivered);
* after every connect: a REST gap fill for each of the slot's pairs with closed candles
  missing since its frontier (its own resume point);
* the watchdog: a pair whose next candle did not arrive by close + grace is fetched by REST;
* the committer: acknowledged frontiers → the offsets topic (service ``producer``);
* the exchange-clock sync (``/fapi/v1/time``).

A Kafka poll thread serves delivery reports; acknowledgements are handed to the loop through a
queue, and the frame → ack latency is measured there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from prometheus_client import Counter, Gauge, Histogram
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from qryptify.binance.rest import BinanceRest, UnlistedPairs, is_unlisted_rejection
from qryptify.binance.ws import (
    ConnectPacer,
    KlineFrame,
    Malformed,
    connect_options,
    parse_frame,
    plan_connections,
    stream_url,
)
from qryptify.config import Config
from qryptify.errors import IngestorError
from qryptify.handoff import LIVE_START, PLAN, live_start, producer_resume_from
from qryptify.kafka import KafkaError, Message, Producer
from qryptify.kline import Kline
from qryptify.metrics import Health
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair, align_open, close_time, count_opens, next_open
from qryptify.publish import AckTracker, KlinePublisher
from qryptify.retry import backoff, until_available
from services.producer.clock import StreamClock
from services.producer.dlq import send_frame_to_dlq
from services.producer.futures import FuturesLive
from services.producer.rotation import Handover, RotationPolicy
from services.producer.stream import LiveBook, Verdict, absent_open_times, closed_rest_klines
from services.producer.watchdog import Watchdog, pairs_needing_fill

logger = logging.getLogger(__name__)

SERVICE = "producer"
#: A REST row with no newer row after it (so no exchange proof that it closed), or a hole after
#: the newest row, is trusted only this long after its close: exchange ms, and at least
#: SETTLE_WALL_S of wall time at the exchange clock's rate (an accelerated simulator).
SETTLE_MS = 60_000
SETTLE_WALL_S = 30.0
TICK_S = 0.05
#: A REST fetch (queueing included) slower than this is logged.
SLOW_FETCH_S = 5.0

FRAMES = Counter("qryptify_producer_frames_total", "WebSocket frames received, by kind", ["kind"])
PUBLISHED = Counter(
    "qryptify_producer_klines_published_total", "Closed klines sent to Kafka", ["source"]
)
DUPLICATES = Counter(
    "qryptify_producer_duplicates_total", "Closed klines already sent (dropped)", ["source"]
)
MALFORMED = Counter("qryptify_producer_malformed_frames_total", "Malformed frames", ["kind"])
RECONNECTS = Counter("qryptify_producer_reconnects_total", "WebSocket reconnects", ["reason"])
ROTATIONS = Counter("qryptify_producer_rotations_total", "Connections replaced before the cut")
WATCHDOG = Counter("qryptify_producer_watchdog_fetches_total", "REST fetches by the watchdog")
GAP_FILLS = Counter("qryptify_producer_gap_fill_fetches_total", "REST gap fills after connects")
REST_KLINES = Counter(
    "qryptify_producer_rest_klines_total", "Closed klines published from REST", ["reason"]
)
CONNECTIONS = Gauge("qryptify_producer_connections", "Open WebSocket connections")
# The per-frame series, bound once: ``labels()`` costs more than the increment itself.
FRAMES_CLOSED = FRAMES.labels("kline_closed")
FRAMES_OPEN = FRAMES.labels("kline_open")
PUBLISHED_WS = PUBLISHED.labels("ws")
DUPLICATES_WS = DUPLICATES.labels("ws")
ACK_LATENCY = Histogram(
    "qryptify_producer_frame_to_ack_seconds",
    "From receiving an x:true frame to Kafka acknowledging its record",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25,
             0.5, 1.0, 2.5),
)  # fmt: skip


class AckObserver(Protocol):
    """Optional hook (benchmarks): called on the poll thread for every acked WS candle."""

    def __call__(self, pair: Pair, open_time: int, frame_s: float, ack_s: float) -> None: ...


@dataclass(slots=True)
class RunStats:
    """Plain counters of this run (the Prometheus ones are process-wide)."""

    frames: int = 0
    published_ws: int = 0
    published_rest: int = 0
    duplicates: int = 0
    malformed: int = 0
    reconnects: int = 0
    rotations: int = 0
    abandoned_rotations: int = 0
    stale_replaced: int = 0
    watchdog_fetches: int = 0
    gap_fill_fetches: int = 0
    rest_errors: int = 0
    server_closes: dict[str, int] = field(default_factory=dict)


class _NotifyingTracker(AckTracker):
    """The publisher's tracker, also handing every delivery report to the producer's loop."""

    def __init__(self, report: Callable[[Pair, int, str | None], None]) -> None:
        super().__init__()
        self._report = report

    # ``slot`` is the publisher's private slot record; only its ``position`` is read here.
    def delivered_ok(self, pair: Pair, slot: Any) -> None:
        super().delivered_ok(pair, slot)
        self._report(pair, slot.position, None)

    def delivery_failed(self, pair: Pair, slot: Any, reason: str) -> None:
        super().delivery_failed(pair, slot, reason)
        self._report(pair, slot.position, reason)


class _TimedProducer:
    """The producer as the publisher sees it, noting librdkafka's own produce → ack latency
    (``Message.latency()``, timed in C) of the record whose delivery report is being served.
    Delivery reports are served one at a time on the poll thread, so one attribute suffices.
    Everything else is the real producer."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.last_latency_s: float | None = None

    def produce(self, topic: str, **kwargs: Any) -> None:
        on_delivery = kwargs.pop("on_delivery", None)
        if on_delivery is not None:

            def report(err: KafkaError | None, msg: Message) -> None:
                self.last_latency_s = msg.latency() if err is None else None
                on_delivery(err, msg)

            kwargs["on_delivery"] = report
        self._producer.produce(topic, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


class _Conn:
    """One open WebSocket and what the supervisor needs to know about it."""

    __slots__ = ("cid", "close_reason", "delivered", "first_frame_wall", "last_ex", "last_wall",
                 "opened_ex", "reader", "ws")  # fmt: skip

    def __init__(self, cid: int, ws: ClientConnection, opened_ex: int) -> None:
        self.cid = cid
        self.ws = ws
        self.opened_ex = opened_ex
        self.last_ex = opened_ex
        self.last_wall = time.monotonic()
        self.delivered = False
        self.first_frame_wall = 0.0
        self.close_reason = "closed"
        self.reader: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Group:
    index: int
    pairs: tuple[Pair, ...]
    url: str
    current: _Conn | None = None


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
        self.observer = observer
        self._timed = _TimedProducer(producer)
        # Duck-typed stand-in for the Producer (KlinePublisher only calls produce and poll).
        self.publisher = KlinePublisher(cast(Producer, self._timed), cfg.kafka.topic)
        self.publisher.tracker = _NotifyingTracker(self._delivery_report)
        self.stats = RunStats()
        ws = cfg.ws
        self.rotation = RotationPolicy(
            rotate_after_ms=int(ws.rotate_after_s * 1000),
            stagger_ms=int(ws.rotate_stagger_s * 1000),
            handover_timeout_s=ws.handover_timeout_s,
        )
        self.watchdog = Watchdog(grace_ms=ws.watchdog_grace_ms, retry_ms=ws.watchdog_retry_ms)
        self.pacer = ConnectPacer(min_spacing_ms=ws.connect_spacing_ms)
        self.book = LiveBook({})
        self._acks: deque[tuple[Pair, int, str | None]] = deque()
        # (symbol, interval, open time) → (frame read, produce called), perf_counter seconds
        self._frame_t: dict[tuple[str, str, int], tuple[float, float]] = {}
        #: Pairs a REST fetch is running for, and pairs the exchange does not list (never
        #: fetched: the watchdog skips busy pairs).
        self._busy: set[Pair] = set()
        self.unlisted = UnlistedPairs()
        self._fill_tasks: set[asyncio.Task[None]] = set()
        self._rest_sem: asyncio.Semaphore | None = None
        self._malformed_seen: set[str] = set()
        self._next_cid = 0
        self._open_conns: set[_Conn] = set()
        self._stopping = False
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

    def _delivery_report(self, pair: Pair, position: int, error: str | None) -> None:
        # On the poll thread: measure, then hand over to the loop. The ack time is librdkafka's
        # (produce call + its measured latency): this thread may get the GIL later than that.
        ack_s = time.perf_counter()
        times = self._frame_t.pop((pair.symbol, pair.interval, position), None)
        if times is not None and error is None:
            frame_s, produce_s = times
            latency = self._timed.last_latency_s
            if latency is not None:
                ack_s = min(ack_s, produce_s + latency)
            ACK_LATENCY.observe(ack_s - frame_s)
            if self.observer is not None:
                self.observer(pair, position, frame_s, ack_s)
        self._acks.append((pair, position, error))

    async def _main(self) -> None:
        self._rest_sem = asyncio.Semaphore(self.cfg.ws.rest_concurrency)
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
                tasks.append(asyncio.create_task(self._run_group(_Group(i, group, url))))
            logger.info(
                "streaming %d pairs over %d connections from %s",
                len(self.pairs),
                len(groups),
                self.cfg.ws.endpoint,
            )
            skipped = sorted(str(p) for p in self.unlisted.pairs)
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
            self._stopping = True
            for task in [*tasks, *self._fill_tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self._fill_tasks, return_exceptions=True)
            await self._close_all()
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
        gone, _ = self.unlisted.update(self.pairs, await self.rest.exchange_info())
        for pair in gone:
            self._report_unlisted(pair, "is not listed on the exchange (exchangeInfo)")
        self.pairs = tuple(p for p in self.pairs if p not in self.unlisted)
        self.book = LiveBook(await asyncio.to_thread(self._resume_points))
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
        self._drain_acks()
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

    # -- connections ---------------------------------------------------------------------------
    async def _open(self, group: _Group) -> _Conn | None:
        """One paced connection attempt; None when it failed (logged)."""
        while True:
            wait_ms = self.pacer.delay(time.monotonic_ns() // 1_000_000)
            if wait_ms <= 0:
                break
            await asyncio.sleep(wait_ms / 1000)
        self.pacer.record(time.monotonic_ns() // 1_000_000)
        ping = self.cfg.ws.ping_interval_s or None
        try:
            ws = await connect(group.url, **connect_options(ping))
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            logger.warning("connection %d: connect failed: %s", group.index, exc)
            return None
        self._next_cid += 1
        conn = _Conn(self._next_cid, ws, self.clock.now_ms())
        conn.reader = asyncio.create_task(self._read(conn), name=f"ws-{conn.cid}")
        self._open_conns.add(conn)
        CONNECTIONS.set(len(self._open_conns))
        return conn

    async def _run_group(self, group: _Group) -> None:
        delays = self._reconnect_delays()
        first = True
        while not self._stopping:
            conn = await self._open(group)
            if conn is None:
                self._count_reconnect("connect_failed")
                await asyncio.sleep(next(delays))
                continue
            group.current = conn
            if not first:
                logger.debug("connection %d: reconnected", group.index)
            first = False
            self._fill_after_connect(group.pairs)
            reason = await self._supervise(group)
            if self._stopping:
                return
            self._count_reconnect(reason)
            if group.current is not None and group.current.delivered:
                delays = self._reconnect_delays()
            group.current = None
            await asyncio.sleep(next(delays))

    def _reconnect_delays(self) -> Iterator[float]:
        """Equal-jitter backoff between reconnects; restarted after a connection that
        delivered (many connections dropped at once do not come back in step)."""
        return backoff(self.cfg.ws.reconnect_initial_s, self.cfg.ws.reconnect_max_s, jitter=0.5)

    def _count_reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1
        RECONNECTS.labels(reason).inc()

    async def _supervise(self, group: _Group) -> str:
        """Watch the group's connection until it is gone; returns why. Rotates in between."""
        replacement: _Conn | None = None
        handover_started = 0.0
        retry_rotation_at = 0
        while True:
            conn = group.current
            if conn is None:  # pragma: no cover - set by the caller
                return "closed"
            await asyncio.sleep(TICK_S)
            if self._stopping:
                return "stopping"
            reader_done = conn.reader is None or conn.reader.done()
            if reader_done:
                if replacement is not None and not replacement.ws.close_code:
                    # The old connection died during the overlap: the replacement, already
                    # subscribed, takes over.
                    self._note_close(conn)
                    group.current, replacement = replacement, None
                    self._rotated(group, conn)
                    continue
                self._note_close(conn)
                await self._discard(conn)
                return conn.close_reason
            if self._silent(conn):
                # A busy loop may not have let the reader take buffered frames yet: ask again
                # after giving it the chance.
                await asyncio.sleep(TICK_S)
            if self._silent(conn):
                now_wall = time.monotonic()
                logger.warning(
                    "connection %d silent for %.1f s: replacing it",
                    group.index,
                    now_wall - conn.last_wall,
                )
                self.stats.stale_replaced += 1
                conn.close_reason = "stale"
                await self._discard(conn)
                if replacement is not None:
                    await self._discard(replacement)
                return "stale"
            now_ex = self.clock.now_ms()
            if replacement is None:
                if now_ex >= retry_rotation_at and self.rotation.due(
                    conn.opened_ex, now_ex, group.index
                ):
                    logger.info("connection %d: rotating before the 24 h cut", group.index)
                    handover_started = time.monotonic()
                    replacement = await self._open(group)
                    if replacement is None:
                        retry_rotation_at = now_ex + self.rotation.retry_after_ms
                continue
            decision = self.rotation.handover(
                replacement.delivered, time.monotonic() - handover_started
            )
            if decision is Handover.CLOSE_OLD:
                logger.info(
                    "connection %d: replacement delivered %.2f s after the rotation began",
                    group.index,
                    replacement.first_frame_wall - handover_started,
                )
                group.current, replacement = replacement, None
                await self._discard(conn)
                self._rotated(group, conn)
            elif decision is Handover.ABANDON or replacement.ws.close_code is not None:
                logger.warning(
                    "connection %d: replacement never delivered; keeping the old one", group.index
                )
                self.stats.abandoned_rotations += 1
                await self._discard(replacement)
                replacement = None
                retry_rotation_at = now_ex + self.rotation.retry_after_ms

    def _silent(self, conn: _Conn) -> bool:
        stale_ms = int(self.cfg.ws.stale_after_s * 1000)
        return (
            self.clock.now_ms() - conn.last_ex >= stale_ms
            and time.monotonic() - conn.last_wall >= self.cfg.ws.stale_min_wall_s
        )

    def _rotated(self, group: _Group, old: _Conn) -> None:
        self.stats.rotations += 1
        ROTATIONS.inc()
        logger.info("connection %d rotated (old one opened at %d)", group.index, old.opened_ex)

    def _note_close(self, conn: _Conn) -> None:
        self.stats.server_closes[conn.close_reason] = (
            self.stats.server_closes.get(conn.close_reason, 0) + 1
        )

    async def _discard(self, conn: _Conn) -> None:
        if conn.reader is not None and not conn.reader.done():
            conn.reader.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(), timeout=2)
        if conn.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.reader
        self._open_conns.discard(conn)
        CONNECTIONS.set(len(self._open_conns))

    async def _close_all(self) -> None:
        for conn in list(self._open_conns):
            await self._discard(conn)

    async def _read(self, conn: _Conn) -> None:
        try:
            async for message in conn.ws:
                try:
                    self._on_message(conn, message)
                except IngestorError:
                    raise
                except Exception:
                    # Never let one frame take the stream down; the watchdog refetches.
                    logger.exception("connection %d: frame handling failed", conn.cid)
            code = conn.ws.close_code
            conn.close_reason = f"server_close_{code}" if code is not None else "closed"
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            conn.close_reason = f"server_close_{rcvd.code}" if rcvd is not None else "dropped"

    # -- frames --------------------------------------------------------------------------------
    def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        frame_s = time.perf_counter()
        conn.last_wall = time.monotonic()
        self.stats.frames += 1
        frame = parse_frame(
            message,
            time.time_ns() // 1_000_000,
            closed_only=not self.cfg.ws.check_open_frames,
        )
        if isinstance(frame, KlineFrame):
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
        elif verdict is Verdict.PUBLISH and isinstance(frame, KlineFrame) and frame.kline:
            FRAMES_CLOSED.inc()
            self._publish(frame.kline, frame_s)
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

    def _publish(self, kline: Kline, frame_s: float | None) -> None:
        if frame_s is not None:
            key = (kline.symbol, kline.interval, kline.open_time)
            self._frame_t[key] = (frame_s, time.perf_counter())
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
        send_frame_to_dlq(
            self.producer,
            self.cfg.kafka.dlq_topic,
            raw,
            kind=frame.kind,
            reason=frame.reason,
            stream=frame.stream,
        )

    # -- REST: gap fill and watchdog -------------------------------------------------------------
    def _fill_after_connect(self, pairs: Sequence[Pair]) -> None:
        now = self.clock.now_ms()
        for pair in pairs_needing_fill(self.book, pairs, now):
            if pair not in self._busy:
                self.stats.gap_fill_fetches += 1
                GAP_FILLS.inc()
                self._spawn_fetch(pair, "gap_fill")

    def _spawn_fetch(self, pair: Pair, reason: str) -> None:
        self._busy.add(pair)
        task = asyncio.create_task(self._fetch(pair, reason))
        self._fill_tasks.add(task)
        task.add_done_callback(self._fill_tasks.discard)

    async def _fetch(self, pair: Pair, reason: str) -> None:
        """REST-fetch every closed candle of ``pair`` missing since its frontier."""
        sem = self._rest_sem
        if sem is None:  # pragma: no cover - set in _main
            raise RuntimeError("not started")
        started = time.monotonic()
        try:
            async with sem:
                await self._fetch_pages(pair, reason)
        except IngestorError as exc:
            if is_unlisted_rejection(exc):
                if self.unlisted.mark(pair):
                    self._report_unlisted(pair, f"is no longer listed ({exc})")
            else:
                self.stats.rest_errors += 1
                logger.warning("REST %s of %s failed: %s", reason, pair, exc)
        finally:
            if pair not in self.unlisted:
                self._busy.discard(pair)
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
                    self._publish(kline, None)
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
                settled_before_ms=now - self.cfg.ws.watchdog_grace_ms - settle,
            )
            if holes:
                logger.info("%s: %d candles confirmed absent by REST", pair, len(holes))
                self.book.confirm_absent(pair, holes)
            if len(page) < limit or not closed:
                return
            cursor = next_open(interval, closed[-1].open_time)

    def _report_unlisted(self, pair: Pair, why: str) -> None:
        logger.error(
            "%s: symbol %s %s; not fetched again, the other pairs go on", pair, pair.symbol, why
        )
        self._busy.add(pair)

    async def _watchdog_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._drain_acks()
            now = self.clock.now_ms()
            for pair in self.watchdog.overdue(self.book, now, self._busy):
                self.stats.watchdog_fetches += 1
                WATCHDOG.inc()
                self._spawn_fetch(pair, "watchdog")

    # -- offsets and clock -------------------------------------------------------------------
    def _drain_acks(self) -> None:
        acks = self._acks
        while acks:
            pair, position, error = acks.popleft()
            if error is None:
                self.book.on_ack(pair, position)
            else:
                self.book.on_failed(pair, position)

    def _log_lagging(self, now_ms: int) -> None:
        """Pairs with closed candles missing (what the watchdog is still after)."""
        lagging = [
            (b.pair, b.first_missing(), len(b.sent), len(b.done))
            for b in self.book
            if self.book.missing_closed(b.pair, now_ms) is not None
        ]
        if lagging:
            shown = ", ".join(
                f"{p} from {t} (sent {s}, done {d}, busy {p in self._busy})"
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
            self._drain_acks()
            self._commit_offsets()

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.rest.time_sync_every_s)
            try:
                await self.rest.server_time()
            except IngestorError as exc:
                logger.warning("exchange clock sync failed: %s", exc)
