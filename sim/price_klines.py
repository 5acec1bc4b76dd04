"""Mark-price, index-price and premium-index klines, reproduced (REST, archive, truth).

Each kind is a fixed, monotonic transform of the symbol's trade candles, so every interval
aggregates exactly like the trade klines and a candle exists exactly when the trade candle
does (before listing, after delisting and inside maintenance there is none):

- ``mark``: price × 1.0001 (rounded down, the symbol's price precision);
- ``index``: price × 0.9998 (rounded down);
- ``premium``: (price − base price) / base price × 0.01, 8 decimals (can be negative).

Rows are the 12 REST columns with the volumes ``"0"`` and column 8 the count of price samples
(one per second: 300 for a closed 5m candle; the seconds so far for the open one), as on the
exchange (docs/futures.md). REST: ``/fapi/v1/markPriceKlines`` and ``premiumIndexKlines`` by
``symbol``, ``/fapi/v1/indexPriceKlines`` by ``pair`` (the symbol here), ``interval``,
``startTime``, ``endTime``, ``limit`` (500, max 1500); weight by limit as for klines; the
still-open candle is the last row. Archive: ``/data/futures/um/{monthly,daily}/{markPriceKlines,
indexPriceKlines,premiumIndexKlines}/SYM/IVL/SYM-IVL-DATE.zip[.CHECKSUM]``, the kline archive's
periods, publication times, header rule and fault flags. Truth:
``GET /sim/truth/price?kind&symbol&interval&start&end`` (closed candles, rows as REST).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from sim.archive import build_zip, corrupt, parse_archive_path
from sim.bars import KlineColumns, SymbolSpec
from sim.funding import _e8
from sim.grid import INTERVALS, close_time
from sim.wire import decimal_formatter

if TYPE_CHECKING:
    from sim.state import SimState

#: kind → (archive dataset, REST path, the REST parameter naming the instrument)
KINDS: dict[str, tuple[str, str, str]] = {
    "mark": ("markPriceKlines", "/fapi/v1/markPriceKlines", "symbol"),
    "index": ("indexPriceKlines", "/fapi/v1/indexPriceKlines", "pair"),
    "premium": ("premiumIndexKlines", "/fapi/v1/premiumIndexKlines", "symbol"),
}
REST_PATHS = frozenset(path for _, path, _ in KINDS.values())


def price_formatter(kind: str, spec: SymbolSpec) -> Callable[[int], str]:
    """Trade price (integer units of the symbol's precision) → this kind's decimal string."""
    fmt = decimal_formatter(spec.price_precision)
    if kind == "mark":
        return lambda p: fmt(p * 10001 // 10000)
    if kind == "index":
        return lambda p: fmt(p * 9998 // 10000)
    base = round(spec.base_price * 10**spec.price_precision)
    return lambda p: _e8((p - base) * 1_000_000 // base)


def rows(
    kind: str, spec: SymbolSpec, cols: KlineColumns, now_ms: int | None = None
) -> list[list[object]]:
    fmt = price_formatter(kind, spec)
    out: list[list[object]] = []
    for i, ot in enumerate(cols.open_time):
        ct = close_time(cols.interval, ot)
        end = ct + 1 if now_ms is None else min(ct + 1, now_ms)
        samples = max(0, (end - ot) // 1000)
        out.append([
            ot, fmt(cols.open[i]), fmt(cols.high[i]), fmt(cols.low[i]), fmt(cols.close[i]),
            "0", ct, "0", samples, "0", "0", "0",
        ])  # fmt: skip
    return out


def _csv_lines(table: list[list[object]]) -> list[str]:
    return [",".join(str(v) for v in row) for row in table]


def add_price_kline_routes(app: web.Application, state: SimState) -> None:
    """Register the three REST endpoints, their archive paths and the truth endpoint; call
    before the catch-all ``/data/`` route."""

    def rest_handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        param = KINDS[kind][2]

        async def handle(request: web.Request) -> web.Response:
            from sim.rest import BinanceError, _int_param, _page_limit

            start = _int_param(request, "startTime")
            end = _int_param(request, "endTime")
            limit = _int_param(request, "limit")
            spec = state.symbols.get(request.query.get(param, ""))
            if spec is None:
                raise BinanceError(-1121, "Invalid symbol.")
            interval = request.query.get("interval", "")
            if interval not in INTERVALS:
                raise BinanceError(-1120, "Invalid interval.")
            limit = _page_limit(start, end, limit)
            now = state.clock.now_ms()
            avail = state.availability(spec)

            def page() -> str:
                cols = state.market.select(spec, interval, start, end, limit, avail, now)
                return json.dumps(rows(kind, spec, cols, now), separators=(",", ":"))

            body = await asyncio.get_running_loop().run_in_executor(None, page)
            return web.Response(text=body, content_type="application/json")

        return handle

    async def handle_archive(request: web.Request) -> web.Response:
        dataset = request.match_info["dataset"]
        kind = next((k for k, v in KINDS.items() if v[0] == dataset), None)
        key = request.path.lstrip("/")
        file = parse_archive_path(request.path.replace(f"/{dataset}/", "/klines/", 1))

        from sim.rest import _archive_not_found, _archive_unpublished

        if kind is None or file is None or _archive_unpublished(state, file):
            return _archive_not_found(state, key)
        spec = state.symbols[file.symbol]
        avail = state.availability(spec)

        def make() -> list[str]:
            cols = state.market.closed_klines(
                spec, file.interval, file.start_ms, file.end_ms - 1, avail
            )
            return _csv_lines(rows(kind, spec, cols))

        lines = await asyncio.get_running_loop().run_in_executor(None, make)
        if not lines:
            return _archive_not_found(state, key)
        built = build_zip(file, lines)
        state.stats.archive_files_served += 1
        if file.checksum:
            return web.Response(body=built.checksum_text(file.zip_name).encode())
        body = built.zip_bytes
        if state.faults.is_archive_corrupt(file.zip_name):
            body = corrupt(body)
        return web.Response(body=body, content_type="application/zip")

    async def handle_truth(request: web.Request) -> web.Response:
        kind = request.query.get("kind", "")
        spec = state.symbols.get(request.query.get("symbol", ""))
        interval = request.query.get("interval", "")
        if kind not in KINDS or spec is None or interval not in INTERVALS:
            return web.json_response({"error": "unknown kind, symbol or interval"}, status=400)
        try:
            now = state.clock.now_ms()
            start = int(request.query.get("start", "0"))
            end = int(request.query.get("end", str(now)))
        except ValueError:
            return web.json_response({"error": "start and end must be integers"}, status=400)
        avail = state.availability(spec)

        def compute() -> str:
            cols = state.market.closed_klines(spec, interval, start, end - 1, avail, now)
            return json.dumps(rows(kind, spec, cols))

        text = await asyncio.get_running_loop().run_in_executor(None, compute)
        return web.Response(text=text, content_type="application/json")

    for kind, (_dataset, path, _param) in KINDS.items():
        app.router.add_get(path, rest_handler(kind))
    app.router.add_get(
        "/data/futures/um/{period:monthly|daily}/{dataset:markPriceKlines|indexPriceKlines|"
        "premiumIndexKlines}/{tail:.*}",
        handle_archive,
    )
    app.router.add_get("/sim/truth/price", handle_truth)
