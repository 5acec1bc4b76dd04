"""The simulator's aiohttp application: REST, WebSocket, archive and control on ONE port.

Entry points:

* :func:`build_app` — the ``web.Application`` for a :class:`SimState`;
* :func:`run_simulator` — async context manager: binds, serves, yields a :class:`RunningSim`;
* :class:`SimulatorThread` — the same in a background thread with its own loop (for sync tests).

Time semantics (documented in sim/README.md): candles, ``serverTime``, ``E`` and the 24-hour
WebSocket cut follow SIM time; the weight window, the 418 ban, the 250 ms update spacing, ping
frames, pong timeouts and injected drops/slowness follow WALL time (they protect or exercise
the server and the network, which live in wall time).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import json
import logging
import math
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from qryptify.pairs import INTERVALS, align_open, close_time, next_open
from sim.archive import (
    BuiltArchive,
    archive_ready_ms,
    build_zip,
    corrupt,
    not_found_xml,
    parse_archive_path,
)
from sim.clock import SimClock
from sim.faults import FaultError, Faults, corrected_empty_ranges
from sim.funding import add_funding_routes
from sim.limits import BANNED, LIMITED, WeightLimiter, klines_weight
from sim.mark_stream import mark_streams, serve_mark_price
from sim.market import (
    Availability,
    Formatters,
    FormingCandle,
    LruCache,
    Market,
    SymbolSpec,
    rest_rows_json,
    stable_fraction,
    stable_string_key,
)
from sim.price_klines import REST_PATHS as PRICE_KLINE_PATHS
from sim.price_klines import add_price_kline_routes
from sim.streams import (
    corrected_bar,
    handle_control,
    kline_event,
    malformed,
    parse_kline_stream,
    wrap_combined,
)
from sim.symbols import DEFAULT_SYMBOLS

logger = logging.getLogger(__name__)

PERPETUAL_DELIVERY_MS = 4133404800000  # 2100-12-25 08:00 UTC, the perpetuals' sentinel
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulator is started with (all overridable by ``SimulatorThread(**kw)``)."""

    symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS
    speed: float = 1.0
    start_ms: int | None = None  # sim time at start; None: the real current time
    host: str = "127.0.0.1"
    port: int = 0
    weight_limit: int = 2400
    weight_window_s: float = 60.0  # wall seconds
    ban_after_429s: int = 5  # further requests tolerated while limited before the 418 ban
    ban_s: float = 120.0  # wall seconds
    ping_interval_s: float = 180.0  # wall seconds between server ping frames (0: never)
    pong_timeout_s: float = 600.0  # wall seconds without a pong before the server disconnects
    ws_max_age_ms: int = DAY_MS  # sim ms: the exchange's 24-hour cut
    max_streams: int = 200
    ws_max_incoming_per_s: int = 10
    update_interval_s: float = 0.25  # wall seconds between x:false frames of one stream
    faults: Faults = field(default_factory=Faults)
    seed: int = 7
    #: Funding interval changes, (symbol, from ms, hours): see sim/funding.py.
    funding_changes: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if not self.symbols:
            raise ValueError("at least one symbol is needed")


@dataclass(slots=True)
class Stats:
    """Counters served by ``GET /sim/stats``."""

    requests: int = 0
    weight_used: int = 0
    responses_429: int = 0
    responses_418: int = 0
    responses_5xx: int = 0
    request_errors: int = 0  # 4xx with a Binance error body (-1121, -1120, …)
    ws_connections_total: int = 0
    ws_connections_open: int = 0
    ws_frames_sent: int = 0
    ws_closed_frames_sent: int = 0
    ws_malformed_sent: int = 0
    ws_pings_sent: int = 0
    ws_drops: int = 0
    ws_sender_late_ms_max: int = 0  # worst wall delay between a stream being due and served
    ws_send_blocked_ms: int = 0  # wall time senders waited on slow clients (TCP backpressure)
    archive_files_served: int = 0
    archive_not_found: int = 0
    klines_requests: int = 0  # GET /fapi/v1/klines
    archive_checksum_requests: int = 0  # GET …zip.CHECKSUM
    archive_zip_requests: int = 0  # GET …zip

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


ARCHIVE_CACHE_BYTES = 64 << 20


def _archive_weight(built: BuiltArchive) -> int:
    return len(built.zip_bytes) + 300


class SimState:
    """The mutable state of one running simulator. Owned by its event loop; the clock and the
    market are thread-safe and may be read from other threads."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        start = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
        self.clock = SimClock(start, config.speed)
        self.clock_jumps = 0
        self.market = Market(config.symbols)
        self.symbols = self.market.symbols
        self.formatters = {s.symbol: Formatters.for_symbol(s) for s in config.symbols}
        self.limiter = WeightLimiter(
            config.weight_limit, config.weight_window_s, config.ban_after_429s, config.ban_s
        )
        self.stats = Stats()
        self.rng = random.Random(config.seed)  # noqa: S311 - fault dice, not cryptography
        self._faults = config.faults
        self._avail: dict[tuple[str, int], Availability] = {}  # by (symbol, re-uploads done)
        self._five_xx_turn = 0
        # Built zips (a file is immutable once published): the CHECKSUM and the zip, and
        # retries, cost one build. Bounded in bytes (monthly 1m zips are ~2 MB).
        self.archives: LruCache[tuple[str, Availability], BuiltArchive] = LruCache(
            4096, _archive_weight, ARCHIVE_CACHE_BYTES
        )
        self.connections: set[Connection] = set()
        #: Archive request path → requests (GET /sim/archive-requests).
        self.archive_requests: collections.Counter[str] = collections.Counter()

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        self._faults = faults
        self._avail.clear()

    def availability(self, spec: SymbolSpec) -> Availability:
        reuploads = self._faults.reuploads_done(spec.symbol, self.clock.now_ms())
        found = self._avail.get((spec.symbol, len(reuploads)))
        if found is None:
            ranges = list(spec.maintenance) + self._faults.empty_ranges_for(spec.symbol)
            ranges = corrected_empty_ranges(ranges, reuploads)
            found = Availability.build(spec.onboard_ms, spec.delist_ms, ranges)
            self._avail[(spec.symbol, len(reuploads))] = found
        return found

    def advance(self, delta_ms: int) -> int:
        self.clock_jumps += 1
        return self.clock.advance(delta_ms)

    def take_rest_fault(self) -> str | None:
        """Consume the injected REST fault for one request: "429", "5xx" or None."""
        f = self._faults
        if f.rest_429_next > 0:
            self._faults = dataclasses.replace(f, rest_429_next=f.rest_429_next - 1)
            return "429"
        if f.rest_5xx_next > 0:
            self._faults = dataclasses.replace(f, rest_5xx_next=f.rest_5xx_next - 1)
            return "5xx"
        if f.rest_429_rate and self.rng.random() < f.rest_429_rate:
            return "429"
        if f.rest_5xx_rate and self.rng.random() < f.rest_5xx_rate:
            return "5xx"
        return None

    def next_5xx(self) -> int:
        self._five_xx_turn += 1
        return (503, 500, 502)[self._five_xx_turn % 3 - 1]


# ---------------------------------------------------------------------------------------------
# HTTP helpers
# ---------------------------------------------------------------------------------------------

STATE_KEY = web.AppKey("sim_state", SimState)

_ERR_MANDATORY = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
_ERR_ILLEGAL = "Illegal characters found in parameter '{}'; legal range is '^[0-9]{{1,20}}$'."


class BinanceError(Exception):
    """A request error answered with Binance's body ``{"code": …, "msg": …}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def _json(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _binance_error(code: int, msg: str, status: int, headers: Mapping[str, str]) -> web.Response:
    return _json({"code": code, "msg": msg}, status, headers)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise BinanceError(-1100, _ERR_ILLEGAL.format(name))
    return int(raw)


def _request_weight(request: web.Request) -> int:
    if request.path == "/fapi/v1/klines" or request.path in PRICE_KLINE_PATHS:
        raw = request.query.get("limit", "500")
        return klines_weight(int(raw)) if raw.isdigit() and len(raw) < 10 else klines_weight(500)
    return 1


# ---------------------------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def fapi_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Weight, 429/418, injected faults and latency for /fapi; latency for /data."""
    state = request.app[STATE_KEY]
    path = request.path
    if path.startswith("/data/"):
        if state.faults.slow_ms:
            await asyncio.sleep(state.faults.slow_ms / 1000)
        return await handler(request)
    if not path.startswith("/fapi/"):
        return await handler(request)
    state.stats.requests += 1
    if state.faults.slow_ms:
        await asyncio.sleep(state.faults.slow_ms / 1000)
    client = request.remote or "unknown"
    decision = state.limiter.admit(client, _request_weight(request), time.monotonic())
    headers = {"X-MBX-USED-WEIGHT-1M": str(decision.used_weight)}
    if decision.outcome == BANNED:
        state.stats.responses_418 += 1
        until = state.clock.now_ms() + int(decision.retry_after_s * 1000 * state.clock.speed)
        headers["Retry-After"] = str(decision.retry_after_s)
        msg = (
            f"Way too many requests; IP({client}) banned until {until}. "
            "Please use the websocket for live updates to avoid bans."
        )
        return _binance_error(-1003, msg, 418, headers)
    if decision.outcome == LIMITED:
        state.stats.responses_429 += 1
        headers["Retry-After"] = str(decision.retry_after_s)
        return _binance_error(-1003, _too_many(client, state.config.weight_limit), 429, headers)
    state.stats.weight_used += _request_weight(request)
    injected = state.take_rest_fault()
    if injected == "429":
        state.stats.responses_429 += 1
        headers["Retry-After"] = str(state.faults.rest_retry_after_s)
        return _binance_error(-1003, _too_many(client, state.config.weight_limit), 429, headers)
    if injected == "5xx":
        state.stats.responses_5xx += 1
        status = state.next_5xx()
        if status == 502:
            return web.Response(
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                status=502,
                content_type="text/html",
                headers=headers,
            )
        if status == 503:
            msg = "Internal error; unable to process your request. Please try again."
            return _binance_error(-1001, msg, 503, headers)
        return _binance_error(
            -1000, "An unknown error occured while processing the request.", 500, headers
        )
    try:
        response = await handler(request)
    except BinanceError as exc:
        state.stats.request_errors += 1
        return _binance_error(exc.code, exc.msg, exc.status, headers)
    except web.HTTPException as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response


def _too_many(client: str, limit: int) -> str:
    return (
        f"Too many requests; current limit of IP({client}) is {limit} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API."
    )


async def handle_time(request: web.Request) -> web.Response:
    return _json({"serverTime": request.app[STATE_KEY].clock.now_ms()})


async def handle_ping(request: web.Request) -> web.Response:
    return _json({})


def symbol_status(spec: SymbolSpec, now_ms: int) -> str:
    if now_ms < spec.onboard_ms:
        return "PENDING_TRADING"
    if spec.delist_ms is not None and now_ms < spec.delist_ms:
        return "TRADING"
    return spec.status


def exchange_info(state: SimState) -> dict[str, Any]:
    now = state.clock.now_ms()
    assets = sorted({s.quote_asset for s in state.symbols.values()})
    symbols = []
    for spec in state.symbols.values():
        tick = f"{10**-spec.price_precision:.{spec.price_precision}f}"
        step = f"{10**-spec.quantity_precision:.{spec.quantity_precision}f}"
        symbols.append(
            {
                "symbol": spec.symbol,
                "pair": spec.symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": spec.delist_ms or PERPETUAL_DELIVERY_MS,
                "onboardDate": spec.onboard_ms,
                "status": symbol_status(spec, now),
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": spec.base_asset,
                "quoteAsset": spec.quote_asset,
                "marginAsset": spec.quote_asset,
                "pricePrecision": spec.price_precision,
                "quantityPrecision": spec.quantity_precision,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": tick,
                        "maxPrice": "1000000",
                        "tickSize": tick,
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": step,
                        "maxQty": "1000000",
                        "stepSize": step,
                    },
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": state.config.weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [
            {"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"} for a in assets
        ],
        "symbols": symbols,
    }


async def handle_exchange_info(request: web.Request) -> web.Response:
    return _json(exchange_info(request.app[STATE_KEY]))


def _symbol_and_interval(state: SimState, request: web.Request) -> tuple[SymbolSpec, str]:
    symbol = request.query.get("symbol")
    if not symbol:
        raise BinanceError(-1102, _ERR_MANDATORY.format("symbol"))
    interval = request.query.get("interval")
    if not interval:
        raise BinanceError(-1102, _ERR_MANDATORY.format("interval"))
    spec = state.symbols.get(symbol)
    if spec is None:
        raise BinanceError(-1121, "Invalid symbol.")
    if interval not in INTERVALS:
        raise BinanceError(-1120, "Invalid interval.")
    return spec, interval


async def handle_klines(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    start = _int_param(request, "startTime")
    end = _int_param(request, "endTime")
    limit = _int_param(request, "limit")
    spec, interval = _symbol_and_interval(state, request)
    state.stats.klines_requests += 1
    if limit is None:
        limit = 500
    if not 1 <= limit <= 1500:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    if start is not None and end is not None and start > end:
        raise BinanceError(-1023, "Start time is greater than end time.")
    now = state.clock.now_ms()
    avail = state.availability(spec)

    def page() -> bytes:
        return state.market.select_json(spec, interval, start, end, limit, avail, now)

    # Pages are built off the event loop so that a backfill hammering REST does not hold up
    # WebSocket close frames (the market is thread-safe).
    body = await asyncio.get_running_loop().run_in_executor(None, page)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


# ---------------------------------------------------------------------------------------------
# Archive
# ---------------------------------------------------------------------------------------------


async def handle_archive(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    file = parse_archive_path(request.path)
    key = request.path.lstrip("/")
    state.archive_requests[key] += 1
    if key.endswith(".CHECKSUM"):
        state.stats.archive_checksum_requests += 1
    else:
        state.stats.archive_zip_requests += 1

    def missing() -> web.Response:
        state.stats.archive_not_found += 1
        return web.Response(text=not_found_xml(key), status=404, content_type="application/xml")

    if file is None or file.symbol not in state.symbols:
        return missing()
    if state.clock.now_ms() < archive_ready_ms(file) or state.faults.is_archive_missing(
        file.zip_name
    ):
        return missing()
    spec = state.symbols[file.symbol]
    avail = state.availability(spec)
    cache_key = (file.zip_name, avail)

    def make() -> BuiltArchive:
        body = state.market.closed_csv(spec, file.interval, file.start_ms, file.end_ms - 1, avail)
        if not body:
            return _NO_FILE  # a period without any candle (before listing, after settlement)
        return build_zip(file, body)

    built = await asyncio.get_running_loop().run_in_executor(
        None, state.archives.get_or_make, cache_key, make
    )
    if built is _NO_FILE:
        return missing()
    state.stats.archive_files_served += 1
    if file.checksum:
        return web.Response(
            body=built.checksum_text(file.zip_name).encode(),
            content_type="application/octet-stream",
        )
    body = built.zip_bytes
    if state.faults.is_archive_corrupt(file.zip_name):
        body = corrupt(body)
    return web.Response(body=body, content_type="application/zip")


_NO_FILE = BuiltArchive(b"", "")


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


# ---------------------------------------------------------------------------------------------
# Application and runners
# ---------------------------------------------------------------------------------------------


def build_app(state: SimState) -> web.Application:
    app = web.Application(middlewares=[fapi_middleware])
    app[STATE_KEY] = state
    app.router.add_get("/fapi/v1/time", handle_time)
    app.router.add_get("/fapi/v1/ping", handle_ping)
    app.router.add_get("/fapi/v1/exchangeInfo", handle_exchange_info)
    app.router.add_get("/fapi/v1/klines", handle_klines)
    app.router.add_get("/market/stream", handle_market_stream)
    app.router.add_get("/market/ws", handle_market_ws)
    app.router.add_get("/market/ws/{streams:.*}", handle_market_ws)
    app.router.add_get("/stream", handle_legacy_stream)
    app.router.add_get("/ws", handle_legacy_ws)
    app.router.add_get("/ws/{streams:.*}", handle_legacy_ws)
    add_funding_routes(app, state)  # before the catch-all /data/ route
    add_price_kline_routes(app, state)
    app.router.add_get("/data/{tail:.*}", handle_archive)
    app.router.add_get("/sim/faults", handle_get_faults)
    app.router.add_post("/sim/faults", handle_post_faults)
    app.router.add_delete("/sim/faults", handle_delete_faults)
    app.router.add_get("/sim/clock", handle_get_clock)
    app.router.add_post("/sim/clock", handle_post_clock)
    app.router.add_get("/sim/truth", handle_truth)
    app.router.add_get("/sim/archive-requests", handle_archive_requests)
    app.router.add_get("/sim/availability", handle_availability)
    app.router.add_get("/sim/stats", handle_stats)

    async def close_connections(app: web.Application) -> None:
        for conn in list(state.connections):
            await conn.close(1001, "server shutdown")

    app.on_shutdown.append(close_connections)
    return app


@dataclass(frozen=True, slots=True)
class RunningSim:
    """A started simulator: where to reach it and its state (owned by the serving loop)."""

    state: SimState
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def run_simulator(config: SimConfig | None = None) -> AsyncIterator[RunningSim]:
    """Serve the simulator on the running loop until the block exits."""
    cfg = config or SimConfig()
    state = SimState(cfg)
    runner = web.AppRunner(
        build_app(state), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        site = web.SockSite(runner, sock)
        await site.start()
        port = sock.getsockname()[1]
        yield RunningSim(state, cfg.host, port)
    finally:
        await runner.cleanup()
        sock.close()


class SimulatorThread:
    """The simulator in a background thread with its own event loop (port 0 by default).

    >>> with SimulatorThread(speed=60, start_ms=1_700_000_000_000) as sim:
    ...     sim.url, sim.ws_url
    """

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        base = config or SimConfig()
        if isinstance(overrides.get("faults"), Mapping):
            overrides["faults"] = Faults().updated(overrides["faults"])
        if "symbols" in overrides:
            overrides["symbols"] = tuple(overrides["symbols"])
        self.config = dataclasses.replace(base, **overrides)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._running: RunningSim | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="qryptify-sim", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        if self._running is None:
            raise RuntimeError("simulator did not start within 30 s")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=30)
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with run_simulator(self.config) as running:
            self._running = running
            self._ready.set()
            await self._stop.wait()

    # -- accessors -----------------------------------------------------------------------------

    @property
    def running(self) -> RunningSim:
        if self._running is None:
            raise RuntimeError("simulator not started")
        return self._running

    @property
    def state(self) -> SimState:
        return self.running.state

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def ws_url(self) -> str:
        return self.running.ws_url

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def clock(self) -> SimClock:
        return self.state.clock

    def now_ms(self) -> int:
        return self.state.clock.now_ms()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the simulator's loop (its state is owned there) and return its result."""
        if self._loop is None:
            raise RuntimeError("simulator not started")

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)

    def set_faults(self, **patch: Any) -> Faults:
        """Patch fault flags (same keys as ``POST /sim/faults``); returns the new flags."""
        state = self.state

        def apply() -> Faults:
            state.set_faults(state.faults.updated(patch))
            return state.faults

        faults: Faults = self._call(apply)
        return faults

    def reset_faults(self) -> None:
        state = self.state
        self._call(lambda: state.set_faults(Faults(seed=state.faults.seed)))

    def advance(self, delta_ms: int) -> int:
        state = self.state
        return int(self._call(lambda: state.advance(delta_ms)))

    def set_speed(self, speed: float) -> None:
        self.state.clock.set_speed(speed)

    def stats(self) -> dict[str, int]:
        state = self.state
        return dict(self._call(lambda: state.stats.to_json()))

    def archive_requests(self) -> dict[str, int]:
        """Requests per archive path (zips and CHECKSUMs) since start."""
        state = self.state
        return dict(self._call(lambda: dict(state.archive_requests)))
