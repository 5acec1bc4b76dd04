"""The producer's WebSocket connections: one *slot* per planned connection group (≤
``ws.max_streams_per_connection`` streams) opens ``<endpoint>/market/stream?streams=…``
(attempts paced), reads frames, reconnects with jittered backoff, replaces a silent connection
and rotates before the 24 h cut (replacement first; the old one closes once the replacement
delivered). What a frame means is decided elsewhere: the frames read go to ``on_messages`` in
batches — the first frame and every complete one the socket had already buffered with it, so a
batch never waits for more — and every (re)connect to ``on_connected`` (the REST gap fill)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI

from qryptify.binance.ws import MAX_QUEUED_FRAMES, ConnectPacer, connect_options
from qryptify.config import WsConfig
from qryptify.errors import IngestorError
from qryptify.pairs import Pair
from qryptify.retry import backoff
from services.producer.clock import StreamClock
from services.producer.rotation import Handover, RotationPolicy
from services.producer.stats import RunStats

logger = logging.getLogger(__name__)

TICK_S = 0.05

RECONNECTS = Counter("qryptify_producer_reconnects_total", "WebSocket reconnects", ["reason"])
ROTATIONS = Counter("qryptify_producer_rotations_total", "Connections replaced before the cut")
CONNECTIONS = Gauge("qryptify_producer_connections", "Open WebSocket connections")


class Conn:
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
class Group:
    index: int
    pairs: tuple[Pair, ...]
    url: str
    current: Conn | None = None


class Connections:
    """Every connection slot of one producer. ``stopping`` ends them (set at shutdown)."""

    def __init__(
        self,
        ws: WsConfig,
        clock: StreamClock,
        stats: RunStats,
        *,
        on_messages: Callable[[Conn, list[str | bytes]], None],
        on_connected: Callable[[Sequence[Pair]], None],
    ) -> None:
        self.ws = ws
        self.clock = clock
        self.stats = stats
        self.on_messages = on_messages
        self.on_connected = on_connected
        self.rotation = RotationPolicy(
            rotate_after_ms=int(ws.rotate_after_s * 1000),
            stagger_ms=int(ws.rotate_stagger_s * 1000),
            handover_timeout_s=ws.handover_timeout_s,
        )
        self.pacer = ConnectPacer(min_spacing_ms=ws.connect_spacing_ms)
        self._next_cid = 0
        self._open_conns: set[Conn] = set()
        self.stopping = False

    async def open(self, group: Group) -> Conn | None:
        """One paced connection attempt; None when it failed (logged)."""
        while True:
            wait_ms = self.pacer.delay(time.monotonic_ns() // 1_000_000)
            if wait_ms <= 0:
                break
            await asyncio.sleep(wait_ms / 1000)
        self.pacer.record(time.monotonic_ns() // 1_000_000)
        ping = self.ws.ping_interval_s or None
        try:
            ws = await connect(group.url, **connect_options(ping))
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            logger.warning("connection %d: connect failed: %s", group.index, exc)
            return None
        self._next_cid += 1
        conn = Conn(self._next_cid, ws, self.clock.now_ms())
        conn.reader = asyncio.create_task(self._read(conn), name=f"ws-{conn.cid}")
        self._open_conns.add(conn)
        CONNECTIONS.set(len(self._open_conns))
        return conn

    async def run_group(self, group: Group) -> None:
        delays = self._reconnect_delays()
        first = True
        while not self.stopping:
            conn = await self.open(group)
            if conn is None:
                self._count_reconnect("connect_failed")
                await asyncio.sleep(next(delays))
                continue
            group.current = conn
            if not first:
                logger.debug("connection %d: reconnected", group.index)
            first = False
            self.on_connected(group.pairs)
            reason = await self._supervise(group)
            if self.stopping:
                return
            self._count_reconnect(reason)
            if group.current is not None and group.current.delivered:
                delays = self._reconnect_delays()
            group.current = None
            await asyncio.sleep(next(delays))

    def _reconnect_delays(self) -> Iterator[float]:
        """Equal-jitter backoff between reconnects; restarted after a connection that
        delivered (many connections dropped at once do not come back in step)."""
        return backoff(self.ws.reconnect_initial_s, self.ws.reconnect_max_s, jitter=0.5)

    def _count_reconnect(self, reason: str) -> None:
        self.stats.reconnects += 1
        RECONNECTS.labels(reason).inc()

    async def _supervise(self, group: Group) -> str:
        """Watch the group's connection until it is gone; returns why. Rotates in between."""
        replacement: Conn | None = None
        handover_started = 0.0
        retry_rotation_at = 0
        while True:
            conn = group.current
            if conn is None:  # pragma: no cover - set by the caller
                return "closed"
            await asyncio.sleep(TICK_S)
            if self.stopping:
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
                    replacement = await self.open(group)
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

    def _silent(self, conn: Conn) -> bool:
        stale_ms = int(self.ws.stale_after_s * 1000)
        return (
            self.clock.now_ms() - conn.last_ex >= stale_ms
            and time.monotonic() - conn.last_wall >= self.ws.stale_min_wall_s
        )

    def _rotated(self, group: Group, old: Conn) -> None:
        self.stats.rotations += 1
        ROTATIONS.inc()
        logger.info("connection %d rotated (old one opened at %d)", group.index, old.opened_ex)

    def _note_close(self, conn: Conn) -> None:
        self.stats.server_closes[conn.close_reason] = (
            self.stats.server_closes.get(conn.close_reason, 0) + 1
        )

    async def _discard(self, conn: Conn) -> None:
        if conn.reader is not None and not conn.reader.done():
            conn.reader.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(), timeout=2)
        if conn.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.reader
        self._open_conns.discard(conn)
        CONNECTIONS.set(len(self._open_conns))

    async def close_all(self) -> None:
        for conn in list(self._open_conns):
            await self._discard(conn)

    async def _read(self, conn: Conn) -> None:
        ws = conn.ws
        try:
            while True:
                try:
                    batch = [await ws.recv()]
                except ConnectionClosedOK:
                    break
                while len(batch) < MAX_QUEUED_FRAMES and _message_buffered(ws):
                    batch.append(await ws.recv())  # returns at once: already received
                try:
                    self.on_messages(conn, batch)
                except IngestorError:
                    raise
                except Exception:
                    # Never let a batch take the stream down; the watchdog refetches.
                    logger.exception("connection %d: frame handling failed", conn.cid)
            code = ws.close_code
            conn.close_reason = f"server_close_{code}" if code is not None else "closed"
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            conn.close_reason = f"server_close_{rcvd.code}" if rcvd is not None else "dropped"


def _message_buffered(ws: ClientConnection) -> bool:
    """True when a whole message already sits in the connection's receive buffer, so ``recv``
    returns it without waiting. websockets has no public call for this: its buffer is read
    (never changed) here, and if that ever moves, every batch is one frame, never wrong."""
    queue: Any = getattr(getattr(getattr(ws, "recv_messages", None), "frames", None), "queue", ())
    return bool(queue) and getattr(queue[0], "fin", False) is True
