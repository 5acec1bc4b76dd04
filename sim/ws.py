"""The WebSocket market streams (``/market/stream``, ``/market/ws``, and the legacy URLs that
connect but send nothing): per-connection schedules of updates and closes."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time

from aiohttp import WSMsgType, web

from sim.bars import SymbolSpec
from sim.faults import Faults
from sim.grid import align_open, close_time, next_open
from sim.mark_stream import mark_streams, serve_mark_price
from sim.market import FormingCandle
from sim.noise import stable_fraction, stable_string_key
from sim.state import STATE_KEY, SimState
from sim.streams import (
    corrected_bar,
    handle_control,
    kline_event,
    malformed,
    parse_kline_stream,
    wrap_combined,
)

# ---------------------------------------------------------------------------------------------
# WebSocket
# ---------------------------------------------------------------------------------------------


class _Stream:
    """Per-stream progress inside one connection."""

    __slots__ = (
        "name",
        "spec",
        "interval",
        "pending_open",
        "last_sig",
        "gen",
        "forming",
        "delay_key",
    )

    def __init__(self, name: str, spec: SymbolSpec, interval: str, now_ms: int, gen: int) -> None:
        self.name = name
        self.spec = spec
        self.interval = interval
        self.pending_open = align_open(interval, now_ms)  # oldest candle still owed an x:true
        self.last_sig: tuple[int, int, int, int, int] | None = None
        self.gen = gen
        self.forming = FormingCandle()
        self.delay_key = close_delay_key(spec.symbol, interval)


def close_delay_key(symbol: str, interval: str) -> int:
    return stable_string_key(f"{symbol}|{interval}")


def close_delay_ms(delay_key: int, open_ms: int) -> int:
    """Deterministic 200–2000 ms (sim) between a candle's close and its x:true frame."""
    return 200 + int(stable_fraction(delay_key, open_ms) * 1800)


# x:false updates are due on a coarse wall grid so that the streams of a connection wake the
# sender together (a few wake-ups per second instead of one per stream and update).
_UPDATE_GRID_S = 0.05
_UPDATE_PHASES = 5
# Updates are built in slices; between slices the sender yields and serves due closes.
_UPDATE_SLICE = 24


class Connection:
    """One client WebSocket: a reader (control messages, pings) and ONE sender task that serves
    every stream of the connection from two heaps of due times (x:true closes, x:false
    updates), so 200 streams cost one task. Closes go first: their timing is what clients
    measure, while an update a few ms late is indistinguishable from a quiet market."""

    def __init__(
        self,
        state: SimState,
        request: web.Request,
        ws: web.WebSocketResponse,
        routed: bool,
        combined: bool,
        streams: tuple[str, ...],
    ) -> None:
        self.state = state
        self.request = request
        self.ws = ws
        self.routed = routed
        self.combined = combined
        self.streams: tuple[str, ...] = ()
        self.active: dict[str, _Stream] = {}
        self.close_heap: list[tuple[float, int, str, int]] = []
        self.update_heap: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._gen = 0
        loop = asyncio.get_running_loop()
        self.opened_wall = loop.time()
        self.opened_sim = state.clock.now_ms()
        self.last_pong_wall = self.opened_wall
        self.seen_jumps = state.clock_jumps
        self._msg_window = 0
        self._msg_count = 0
        self._closing = False
        self.set_streams(streams)

    # -- subscriptions -------------------------------------------------------------------------

    def set_streams(self, streams: tuple[str, ...]) -> None:
        self.streams = streams
        now_ms = self.state.clock.now_ms()
        wanted = set(streams)
        for name in list(self.active):
            if name not in wanted:
                del self.active[name]
        for name in streams:
            if name in self.active:
                continue
            parsed = parse_kline_stream(name)
            spec = self.state.symbols.get(parsed[0]) if parsed else None
            if parsed is None or spec is None:
                continue  # accepted and listed, but nothing is ever pushed on it
            self._gen += 1
            st = _Stream(name, spec, parsed[1], now_ms, self._gen)
            self.active[name] = st
            now_wall = asyncio.get_running_loop().time()
            self._push(self.close_heap, now_wall, st)
            # Stagger update phases over the grid so a connection's streams do not all fall due
            # on the same tick.
            self._push(
                self.update_heap, now_wall + (self._gen % _UPDATE_PHASES) * _UPDATE_GRID_S, st
            )

    def _push(self, heap: list[tuple[float, int, str, int]], due_wall: float, st: _Stream) -> None:
        self._seq += 1
        heapq.heappush(heap, (due_wall, self._seq, st.name, st.gen))

    # -- reader --------------------------------------------------------------------------------

    async def read_loop(self) -> None:
        cfg = self.state.config
        loop = asyncio.get_running_loop()
        async for msg in self.ws:
            if msg.type == WSMsgType.PING:
                if not self.state.faults.ws_stall:
                    await self.ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                self.last_pong_wall = loop.time()
            elif msg.type == WSMsgType.TEXT:
                second = int(loop.time())
                if second != self._msg_window:
                    self._msg_window, self._msg_count = second, 0
                self._msg_count += 1
                if self._msg_count > cfg.ws_max_incoming_per_s:
                    await self.close(1008, "Too many requests")
                    return
                if self.state.faults.ws_stall:
                    continue
                result = handle_control(msg.data, self.streams, self.combined, cfg.max_streams)
                self.combined = result.combined
                if result.too_many_streams:
                    await self.close(1008, "subscribed channels exceeds limit")
                    return
                self.set_streams(result.streams)
                await self.ws.send_str(result.reply)
            elif msg.type in (WSMsgType.BINARY,):
                continue

    async def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        """A network drop: the TCP connection vanishes without a close frame."""
        self._closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    # -- sender --------------------------------------------------------------------------------

    async def send_loop(self) -> None:
        state = self.state
        cfg = state.config
        loop = asyncio.get_running_loop()
        next_ping = (
            self.opened_wall + cfg.ping_interval_s if cfg.ping_interval_s > 0 else float("inf")
        )
        while not self.ws.closed and not self._closing:
            now_wall = loop.time()
            faults = state.faults
            if faults.ws_drop_every_s and now_wall - self.opened_wall >= faults.ws_drop_every_s:
                state.stats.ws_drops += 1
                self.abort()
                return
            now_sim = state.clock.now_ms()
            if now_sim - self.opened_sim >= cfg.ws_max_age_ms:
                await self.close(1001, "24 hour connection limit reached")
                return
            if cfg.ping_interval_s > 0 and now_wall - self.last_pong_wall > cfg.pong_timeout_s:
                await self.close(1008, "pong timeout")
                return
            stalled = faults.ws_stall
            if not stalled:
                if now_wall >= next_ping:
                    await self.ws.ping(b"")
                    state.stats.ws_pings_sent += 1
                    next_ping = now_wall + cfg.ping_interval_s
                if self.routed:
                    if state.clock_jumps != self.seen_jumps:
                        self._resync(now_sim)
                    await self._serve_due(faults)
            wait = 0.25
            if not stalled:
                for heap in (self.close_heap, self.update_heap):
                    if heap:
                        wait = min(wait, heap[0][0] - loop.time())
            wait = min(wait, next_ping - loop.time())
            if faults.ws_drop_every_s:
                wait = min(wait, self.opened_wall + faults.ws_drop_every_s - loop.time())
            await asyncio.sleep(max(wait, 0.001))

    def _resync(self, now_sim: int) -> None:
        # The clock jumped: like a network gap, what happened in between is not replayed.
        self.seen_jumps = self.state.clock_jumps
        for st in self.active.values():
            st.pending_open = align_open(st.interval, now_sim)
            st.last_sig = None

    async def _serve_due(self, faults: Faults) -> None:
        loop = asyncio.get_running_loop()
        stats = self.state.stats
        now_wall = loop.time()
        for heap in (self.close_heap, self.update_heap):
            if heap and heap[0][0] <= now_wall:
                late_ms = int((now_wall - heap[0][0]) * 1000)
                stats.ws_sender_late_ms_max = max(stats.ws_sender_late_ms_max, late_ms)
        await self._send(self._due_closes(loop.time(), self.state.clock.now_ms(), faults))
        heap = self.update_heap
        while heap and heap[0][0] <= loop.time():
            now_wall, now_sim = loop.time(), self.state.clock.now_ms()
            frames: list[str] = []
            for _ in range(_UPDATE_SLICE):
                if not heap or heap[0][0] > now_wall:
                    break
                slot, _, name, gen = heapq.heappop(heap)
                st = self.active.get(name)
                if st is None or st.gen != gen:
                    continue  # unsubscribed since
                next_slot = self._serve_update(st, now_wall, now_sim, faults, frames)
                if next_slot < 0:  # regular case: one update interval after this slot
                    next_slot = slot + self.state.config.update_interval_s
                    if next_slot <= now_wall:  # far behind: rejoin the grid, do not burst
                        next_slot = math.ceil(now_wall / _UPDATE_GRID_S) * _UPDATE_GRID_S
                self._push(heap, next_slot, st)
            await self._send(frames)
            if self.ws.closed or self._closing:
                return
            await asyncio.sleep(0)  # let other connections and the reader run
            await self._send(self._due_closes(loop.time(), self.state.clock.now_ms(), faults))

    async def _send(self, frames: list[str]) -> None:
        if not frames:
            return
        stats = self.state.stats
        started = time.monotonic()
        for text in frames:
            if self.ws.closed:
                return
            await self.ws.send_str(text)
        stats.ws_send_blocked_ms += int((time.monotonic() - started) * 1000)
        stats.ws_frames_sent += len(frames)

    def _due_closes(self, now_wall: float, now_sim: int, faults: Faults) -> list[str]:
        frames: list[str] = []
        heap = self.close_heap
        while heap and heap[0][0] <= now_wall:
            _, _, name, gen = heapq.heappop(heap)
            st = self.active.get(name)
            if st is None or st.gen != gen:
                continue
            self._push(heap, self._serve_closes(st, now_wall, now_sim, faults, frames), st)
        return frames

    def _serve_closes(
        self, st: _Stream, now_wall: float, now_sim: int, faults: Faults, frames: list[str]
    ) -> float:
        """x:true for every candle that closed at least its delay ago, oldest first; returns
        the wall time the next close falls due."""
        state = self.state
        spec, interval = st.spec, st.interval
        avail = state.availability(spec)
        fmt = state.formatters[spec.symbol]
        for _ in range(10_000):
            c_open = st.pending_open
            due_sim = close_time(interval, c_open) + 1 + close_delay_ms(st.delay_key, c_open)
            if now_sim < due_sim:
                if avail.end_minute is not None and c_open >= avail.end_minute * 60_000:
                    return now_wall + 1.0  # settled symbol: nothing will ever come
                # Re-check at least every 250 ms: speed changes and clock jumps move due times.
                wall = (due_sim - now_sim) / 1000.0 / state.clock.speed
                return now_wall + min(max(wall, 0.0), 0.25)
            bar = state.market.closing_bar(spec, interval, c_open, avail, st.forming)
            if bar is not None:
                if faults.is_corrected(spec.symbol, interval, c_open):
                    bar = corrected_bar(bar)
                payload = kline_event(spec, interval, c_open, bar, True, now_sim, fmt)
                copies = 1
                if faults.ws_skip_close_rate and state.rng.random() < faults.ws_skip_close_rate:
                    copies = 0
                elif (
                    faults.ws_duplicate_close_rate
                    and state.rng.random() < faults.ws_duplicate_close_rate
                ):
                    copies = 2
                for _copy in range(copies):
                    frames.append(self._frame(st.name, payload, faults))
                state.stats.ws_closed_frames_sent += copies
            st.pending_open = next_open(interval, c_open)
            st.last_sig = None
        return now_wall

    def _serve_update(
        self, st: _Stream, now_wall: float, now_sim: int, faults: Faults, frames: list[str]
    ) -> float:
        """x:false while the candle forms: every update_interval_s and only when it changed.
        Returns the wall time to look again, or -1 for "the next regular slot"."""
        state = self.state
        spec, interval = st.spec, st.interval
        current_open = align_open(interval, now_sim)
        next_slot = -1.0
        if st.pending_open != current_open:
            return next_slot  # the previous candle's x:true is still owed: it goes first
        avail = state.availability(spec)
        if avail.end_minute is not None and current_open >= avail.end_minute * 60_000:
            return now_wall + 1.0
        current = state.market.current_bar(spec, interval, now_sim, avail, st.forming)
        if current is None or current[1].trades == 0:
            return next_slot
        bar = current[1]
        sig = (bar.trades, bar.close, bar.high, bar.low, bar.volume)
        if sig != st.last_sig:
            st.last_sig = sig
            if faults.is_corrected(spec.symbol, interval, current_open):
                bar = corrected_bar(bar)
            payload = kline_event(
                spec, interval, current_open, bar, False, now_sim, state.formatters[spec.symbol]
            )
            frames.append(self._frame(st.name, payload, faults))
        return next_slot

    def _frame(self, stream: str, payload: str, faults: Faults) -> str:
        if faults.ws_malformed_rate and self.state.rng.random() < faults.ws_malformed_rate:
            kind = self.state.rng.choice(faults.ws_malformed_kinds)
            self.state.stats.ws_malformed_sent += 1
            if kind == "bad_json":
                text = wrap_combined(stream, payload) if self.combined else payload
                return malformed(text, kind)
            payload = malformed(payload, kind)
        return wrap_combined(stream, payload) if self.combined else payload


async def _serve_ws(
    request: web.Request, routed: bool, combined: bool, streams: tuple[str, ...]
) -> web.WebSocketResponse:
    state = request.app[STATE_KEY]
    # autoping off: pongs are answered by hand so a stalled connection can stay silent.
    ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    conn = Connection(state, request, ws, routed, combined, ())
    state.stats.ws_connections_total += 1
    state.stats.ws_connections_open += 1
    state.connections.add(conn)
    sender: asyncio.Task[None] | None = None
    try:
        if len(streams) > state.config.max_streams:
            await conn.close(1008, "subscribed channels exceeds limit")
            return ws
        conn.set_streams(streams)
        sender = asyncio.create_task(conn.send_loop())
        await conn.read_loop()
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        state.connections.discard(conn)
        state.stats.ws_connections_open -= 1
    return ws


def _stream_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s in text.split("/") if s))


async def handle_market_stream(request: web.Request) -> web.StreamResponse:
    marks = mark_streams(request.query.get("streams", ""))
    if marks is not None:  # <symbol>@markPrice streams: sim/mark_stream.py
        return await serve_mark_price(request, request.app[STATE_KEY], marks)
    streams = _stream_list(request.query.get("streams", ""))
    return await _serve_ws(request, routed=True, combined=True, streams=streams)


async def handle_market_ws(request: web.Request) -> web.StreamResponse:
    streams = _stream_list(request.match_info.get("streams", ""))
    return await _serve_ws(request, routed=True, combined=False, streams=streams)


async def handle_legacy_stream(request: web.Request) -> web.StreamResponse:
    # Unrouted URLs still complete the handshake but push no kline frames (since 2026-04-23).
    streams = _stream_list(request.query.get("streams", ""))
    return await _serve_ws(request, routed=False, combined=True, streams=streams)


async def handle_legacy_ws(request: web.Request) -> web.StreamResponse:
    streams = _stream_list(request.match_info.get("streams", ""))
    return await _serve_ws(request, routed=False, combined=False, streams=streams)
