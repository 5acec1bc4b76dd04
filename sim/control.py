"""The simulator's own endpoints (``/sim/*``): faults, clock, ground truth, availability,
stats."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from sim.faults import FaultError, Faults
from sim.grid import INTERVALS
from sim.rest import _json
from sim.state import STATE_KEY
from sim.wire import rest_rows_json

# ---------------------------------------------------------------------------------------------
# Control endpoints (/sim/*)
# ---------------------------------------------------------------------------------------------


async def _read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type="application/json"
        ) from exc


async def handle_get_faults(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].faults.to_json())


async def handle_post_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    patch = await _read_json(request)
    try:
        state.set_faults(state.faults.updated(patch))
    except FaultError as exc:
        return _json({"error": str(exc)}, 400)
    return _json(state.faults.to_json())


async def handle_delete_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.set_faults(Faults(seed=state.faults.seed))
    return _json(state.faults.to_json())


async def handle_get_clock(request: web.Request) -> web.Response:
    clock = request.app[STATE_KEY].clock
    return _json({"now": clock.now_ms(), "speed": clock.speed})


async def handle_post_clock(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await _read_json(request)
    if not isinstance(body, dict) or set(body) - {"speed", "advance_ms", "set_ms"}:
        return _json({"error": "expected {speed?, advance_ms?, set_ms?}"}, 400)
    try:
        if "speed" in body:
            speed = body["speed"]
            if isinstance(speed, bool) or not isinstance(speed, int | float):
                raise ValueError(f"speed must be a number, got {speed!r}")
            state.clock.set_speed(float(speed))
        if "advance_ms" in body:
            state.advance(_nonneg_int(body["advance_ms"], "advance_ms"))
        if "set_ms" in body:
            target = _nonneg_int(body["set_ms"], "set_ms")
            now = state.clock.now_ms()
            if target < now:
                raise ValueError(
                    f"set_ms {target} is before now {now}; the clock only moves forward"
                )
            state.advance(target - now)
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    return _json({"now": state.clock.now_ms(), "speed": state.clock.speed})


def _nonneg_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _query_int(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"missing {name}"}))
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be an integer"})) from None


async def handle_truth(request: web.Request) -> web.Response:
    """Closed candles with ``start <= open_time < end`` exactly as REST would send them."""
    state = request.app[STATE_KEY]
    spec = state.symbols.get(request.query.get("symbol", ""))
    interval = request.query.get("interval", "")
    if spec is None or interval not in INTERVALS:
        return _json({"error": "unknown symbol or interval"}, 400)
    now = state.clock.now_ms()
    start = _query_int(request, "start", 0)
    end = _query_int(request, "end", now)
    avail = state.availability(spec)

    def compute() -> str:
        cols = state.market.closed_klines(spec, interval, start, end - 1, avail, now)
        return rest_rows_json(spec, cols)

    text = await asyncio.get_running_loop().run_in_executor(None, compute)
    return web.Response(text=text, content_type="application/json")


async def handle_availability(request: web.Request) -> web.Response:
    """Where a symbol has no 1m candles: listing bounds and empty (maintenance) ranges."""
    state = request.app[STATE_KEY]
    spec = state.symbols.get(request.query.get("symbol", ""))
    if spec is None:
        return _json({"error": "unknown symbol"}, 400)
    avail = state.availability(spec)
    return _json(
        {
            "symbol": spec.symbol,
            "first_open": avail.first_minute * 60_000,
            "end": None if avail.end_minute is None else avail.end_minute * 60_000,
            "empty_ranges": [list(r) for r in avail.empty_spans_ms()],
        }
    )


async def handle_archive_requests(request: web.Request) -> web.Response:
    """Requests per archive path (zips and CHECKSUMs) since start."""
    return _json(dict(request.app[STATE_KEY].archive_requests))


async def handle_stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body: dict[str, object] = dict(state.stats.to_json())
    body["now"] = state.clock.now_ms()
    body["speed"] = state.clock.speed
    return _json(body)
