"""The exchange's HTTP side: the ``/fapi`` middleware (weights, 429/418, injected faults),
``/fapi/v1/time|ping|exchangeInfo|klines`` and the bulk archive (``/data/futures/um/...``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from sim.archive import (
    ArchiveFile,
    BuiltArchive,
    archive_ready_ms,
    build_zip,
    corrupt,
    not_found_xml,
    parse_archive_path,
)
from sim.bars import SymbolSpec
from sim.grid import INTERVALS
from sim.limits import BANNED, LIMITED, klines_weight
from sim.price_klines import REST_PATHS as PRICE_KLINE_PATHS
from sim.state import PERPETUAL_DELIVERY_MS, STATE_KEY, SimState

# ---------------------------------------------------------------------------------------------
# HTTP helpers
# ---------------------------------------------------------------------------------------------

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


def _page_limit(start: int | None, end: int | None, limit: int | None) -> int:
    """The page size of a klines request (500 when not sent, 1..1500), after the time-range
    check: the rules every klines endpoint applies once symbol and interval are valid."""
    limit = 500 if limit is None else limit
    if not 1 <= limit <= 1500:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    if start is not None and end is not None and start > end:
        raise BinanceError(-1023, "Start time is greater than end time.")
    return limit


async def handle_klines(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    start = _int_param(request, "startTime")
    end = _int_param(request, "endTime")
    limit = _int_param(request, "limit")
    spec, interval = _symbol_and_interval(state, request)
    state.stats.klines_requests += 1
    limit = _page_limit(start, end, limit)
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


def _archive_unpublished(state: SimState, file: ArchiveFile) -> bool:
    """No such file on the archive: an unknown symbol, a period not yet published, or one the
    fault plan leaves out."""
    return (
        file.symbol not in state.symbols
        or state.clock.now_ms() < archive_ready_ms(file)
        or state.faults.is_archive_missing(file.zip_name)
    )


def _archive_not_found(state: SimState, key: str) -> web.Response:
    """The bucket's 404 (an XML NoSuchKey body), counted."""
    state.stats.archive_not_found += 1
    return web.Response(text=not_found_xml(key), status=404, content_type="application/xml")


async def handle_archive(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    file = parse_archive_path(request.path)
    key = request.path.lstrip("/")
    state.archive_requests[key] += 1
    if key.endswith(".CHECKSUM"):
        state.stats.archive_checksum_requests += 1
    else:
        state.stats.archive_zip_requests += 1

    if file is None or _archive_unpublished(state, file):
        return _archive_not_found(state, key)
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
        return _archive_not_found(state, key)
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
