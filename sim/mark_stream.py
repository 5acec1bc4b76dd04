"""``<symbol>@markPrice`` / ``<symbol>@markPrice@1s`` on the routed combined path
``/market/stream?streams=…`` (only connections whose streams are all mark-price streams are
served here; the raw ``/market/ws/…`` form is not simulated for them).

Payload (Binance "Mark Price Stream", docs/futures.md): ``{"e":"markPriceUpdate","E","s","p"
mark price,"i" index price,"P" estimated settle price,"r" funding rate,"T" next funding time}``,
wrapped as ``{"stream","data"}``; every 3 s (1 s for ``@1s``) of wall time. ``p``/``i`` are
the current 1m price through the mark/index transforms of ``sim/price_klines.py``; ``r`` and
``T`` are the next funding's from the funding schedule. Fault flags: ``ws_stall`` (nothing is
sent), ``ws_drop_every_s`` (the connection is aborted, counted in ``ws_drops``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from sim.funding import BOOK_KEY
from sim.price_klines import price_formatter

if TYPE_CHECKING:
    from sim.server import SimState

_STREAM_RE = re.compile(r"^([a-z0-9_]+)@markPrice(@1s)?$")
MINUTE_MS = 60_000


def mark_streams(text: str) -> list[tuple[str, str, float]] | None:
    """``btcusdt@markPrice@1s/ethusdt@markPrice`` → [(stream, SYMBOL, period s)]; None unless
    every stream is a mark-price stream."""
    names = [s for s in text.split("/") if s]
    out: list[tuple[str, str, float]] = []
    for name in names:
        match = _STREAM_RE.match(name)
        if match is None:
            return None
        out.append((name, match.group(1).upper(), 1.0 if match.group(2) else 3.0))
    return out or None


def update(state: SimState, book_app: web.Application, symbol: str, now_ms: int) -> str | None:
    spec = state.symbols.get(symbol)
    if spec is None:
        return None
    book = book_app[BOOK_KEY]
    minute = now_ms // MINUTE_MS
    if not state.availability(spec).contains(minute):
        return None
    bar = state.market.partial_minute(spec, minute, now_ms % MINUTE_MS)
    mark = price_formatter("mark", spec)(bar.close)
    index = price_formatter("index", spec)(bar.close)
    upcoming = book.between(spec, now_ms + 1, now_ms + 25 * 3_600_000)
    nxt = upcoming[0] if upcoming else None
    return json.dumps(
        {
            "e": "markPriceUpdate",
            "E": now_ms,
            "s": symbol,
            "p": mark,
            "i": index,
            "P": mark,
            "r": nxt.rate if nxt else "",
            "T": nxt.time if nxt else 0,
        },
        separators=(",", ":"),
    )


async def serve_mark_price(
    request: web.Request, state: SimState, streams: list[tuple[str, str, float]]
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    state.stats.ws_connections_total += 1
    state.stats.ws_connections_open += 1
    loop = asyncio.get_running_loop()
    opened = loop.time()

    async def send() -> None:
        due = {name: opened for name, _s, _p in streams}
        while not ws.closed:
            now_wall = loop.time()
            faults = state.faults
            if faults.ws_drop_every_s and now_wall - opened >= faults.ws_drop_every_s:
                state.stats.ws_drops += 1
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return
            if not faults.ws_stall:
                now_ms = state.clock.now_ms()
                for name, symbol, period in streams:
                    if now_wall >= due[name]:
                        due[name] = now_wall + period
                        payload = update(state, request.app, symbol, now_ms)
                        if payload is not None:
                            await ws.send_str(f'{{"stream":"{name}","data":{payload}}}')
                            state.stats.ws_frames_sent += 1
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(send())
    try:
        async for msg in ws:  # control messages are not simulated here; pings are auto-answered
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        state.stats.ws_connections_open -= 1
    return ws
