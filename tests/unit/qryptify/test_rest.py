"""BinanceRest over httpx.MockTransport: the real httpx stack with canned exchange answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from qryptify import native
from qryptify.avro import KlineCodec, kline_encoder
from qryptify.binance.rest import (
    PERPETUAL_DELIVERY_MS,
    BinanceRest,
    page_values,
    parse_exchange_info,
)
from qryptify.binance.weights import WeightBudget
from qryptify.clock import ExchangeClock, FixedClock
from qryptify.config import RestConfig
from qryptify.errors import ExchangeRejected, ExchangeUnavailable, MalformedPayload
from qryptify.kline import Kline, closed_klines
from qryptify.pairs import Pair

T = TypeVar("T")
W0 = 1_704_067_200_000
BTC1M = Pair("BTCUSDT", "1m")


def row(open_time: int, interval_ms: int = 60_000) -> list[object]:
    return [open_time, "1.0", "2.0", "0.5", "1.5", "10", open_time + interval_ms - 1,
            "15", 7, "5", "7.5", "0"]  # fmt: skip


class Harness:
    """A fake exchange: ``handler`` answers requests; time only moves by sleeps."""

    def __init__(
        self,
        handler: Callable[[httpx.Request], httpx.Response],
        cfg: RestConfig | None = None,
        server_offset_ms: int = 0,
    ) -> None:
        self.local = FixedClock(W0 + 1_000)
        self.clock = ExchangeClock(self.local)
        self.clock.observe(self.local.now_ms(), self.local.now_ms(), W0 + 1_000 + server_offset_ms)
        self.sleeps: list[float] = []
        self.requests: list[httpx.Request] = []
        self.budget = WeightBudget(limit=2400, safety_margin=0.02)

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            self.local.advance(int(seconds * 1000))
            await asyncio.sleep(0)

        self.rest = BinanceRest(
            cfg or RestConfig(endpoint="http://exchange.test"),
            budget=self.budget,
            clock=self.clock,
            transport=httpx.MockTransport(record),
            sleep=sleep,
            budget_clock=self.local,
        )

    def run(self, coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
        async def go() -> T:
            try:
                return await coro()
            finally:
                await self.rest.aclose()

        return asyncio.run(go())


def ok(body: object, used: int | None = 2) -> httpx.Response:
    headers = {} if used is None else {"X-MBX-USED-WEIGHT-1M": str(used)}
    return httpx.Response(200, json=body, headers=headers)


def err(status: int, code: int, msg: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg}, headers=headers)


def test_klines_sends_weight_optimal_page_and_parses_rows() -> None:
    h = Harness(lambda r: ok([row(W0), row(W0 + 60_000)], used=42))
    klines = h.run(lambda: h.rest.klines(BTC1M, W0, W0 + 10 * 60_000))
    params = dict(h.requests[0].url.params)
    assert h.requests[0].url.path == "/fapi/v1/klines"
    assert params == {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "startTime": str(W0),
        "endTime": str(W0 + 600_000),
        "limit": "499",
    }
    assert [k.open_time for k in klines] == [W0, W0 + 60_000]
    assert klines[0].source == "rest" and klines[0].close == "1.5"
    assert h.budget.used(h.clock.now_ms()) == 42  # header synced
    assert h.budget.pending == 0


def test_server_time_measures_the_exchange_clock_offset() -> None:
    h = Harness(lambda r: ok({"serverTime": W0 + 1_000 + 3_600_000}))
    server = h.run(h.rest.server_time)
    assert server == W0 + 1_000 + 3_600_000
    assert h.clock.offset_ms == 3_600_000
    assert h.clock.now_ms() == server


def test_exchange_info_symbols_and_weight_limit() -> None:
    body = {
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL",
             "onboardDate": 1569398400000, "deliveryDate": PERPETUAL_DELIVERY_MS},
            {"symbol": "OLDUSDT", "status": "SETTLING", "contractType": "PERPETUAL",
             "onboardDate": 1600000000000, "deliveryDate": 1700000000000},
        ],
    }  # fmt: skip
    h = Harness(lambda r: ok(body))
    info = h.run(h.rest.exchange_info)
    assert info.weight_limit == 1200 and h.budget.limit == 1200
    btc, old = info.symbols["BTCUSDT"], info.symbols["OLDUSDT"]
    assert btc.trading and btc.settles_at is None and btc.onboard_date == 1569398400000
    assert not old.trading and old.settles_at == 1700000000000


def test_exchange_info_malformed() -> None:
    with pytest.raises(MalformedPayload, match="symbols"):
        parse_exchange_info({"rateLimits": []})


def test_429_pauses_for_retry_after_and_resends() -> None:
    answers = iter([err(429, -1003, "Too many requests", **{"Retry-After": "7"}), ok([row(W0)])])
    h = Harness(lambda r: next(answers))
    klines = h.run(lambda: h.rest.klines(BTC1M, W0, W0))
    assert len(klines) == 1 and len(h.requests) == 2
    assert sum(h.sleeps) >= 7.0
    assert h.budget.stats.rate_limited == 1


def test_429_pause_applies_to_every_concurrent_request() -> None:
    calls: list[int] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(h.local.now_ms())
        if len(calls) == 1:
            return err(429, -1003, "Too many requests", **{"Retry-After": "5"})
        return ok([])

    h = Harness(handler)

    async def both() -> None:
        await h.rest.klines(BTC1M, W0, W0)
        await asyncio.gather(h.rest.klines(BTC1M, W0, W0), h.rest.klines(BTC1M, W0, W0))

    h.run(both)
    first = calls[0]
    assert all(t >= first + 5_000 for t in calls[1:])


def test_a_request_admitted_before_a_429_landed_waits_out_the_pause_too() -> None:
    """Between the budget admitting a request and httpx sending it, another request's 429 may
    pause everything: the request must not go out inside that Retry-After."""
    sent_at: list[int] = []

    def handler(r: httpx.Request) -> httpx.Response:
        sent_at.append(h.local.now_ms())
        return ok([])

    h = Harness(handler)
    admit = h.rest._acquire
    paused_until: list[int] = []

    async def admitted_then_paused(weight: int) -> int:
        sent_ms = await admit(weight)
        paused_until.append(h.budget.on_429(5.0, h.local.now_ms()))  # another request's 429
        return sent_ms

    h.rest._acquire = admitted_then_paused  # type: ignore[method-assign]
    h.run(lambda: h.rest.klines(BTC1M, W0, W0))
    assert len(sent_at) == 1 and sent_at[0] >= paused_until[0]


def test_418_stops_all_requests_until_the_ban_ends() -> None:
    answers = iter(
        [err(418, -1003, "Way too many requests; IP banned until 1704067500000."), ok([row(W0)])]
    )
    h = Harness(lambda r: next(answers))
    h.run(lambda: h.rest.klines(BTC1M, W0, W0))
    assert h.budget.stats.banned == 1
    assert h.local.now_ms() >= 1704067500000  # waited for the ban's end from the message
    assert len(h.requests) == 2


def test_418_with_retry_after() -> None:
    answers = iter([err(418, -1003, "banned", **{"Retry-After": "120"}), ok([])])
    h = Harness(lambda r: next(answers))
    h.run(lambda: h.rest.klines(BTC1M, W0, W0))
    assert sum(h.sleeps) >= 120


def test_5xx_and_timeouts_are_retried_with_backoff() -> None:
    state = {"n": 0}

    def handler(r: httpx.Request) -> httpx.Response:
        state["n"] += 1
        if state["n"] == 1:
            return httpx.Response(503, text="busy")
        if state["n"] == 2:
            raise httpx.ReadTimeout("slow", request=r)
        if state["n"] == 3:
            raise httpx.ConnectError("refused", request=r)
        return ok([row(W0)])

    h = Harness(handler)
    klines = h.run(lambda: h.rest.klines(BTC1M, W0, W0))
    assert len(klines) == 1 and state["n"] == 4
    assert h.rest.stats.retries == 3
    assert len(h.sleeps) == 3 and all(s > 0 for s in h.sleeps)
    assert h.budget.pending == 0


def test_5xx_gives_up_after_retry_attempts() -> None:
    h = Harness(
        lambda r: httpx.Response(502, text="bad gateway"),
        RestConfig(endpoint="http://exchange.test", retry_attempts=3),
    )
    with pytest.raises(ExchangeUnavailable, match="HTTP 502"):
        h.run(lambda: h.rest.klines(BTC1M, W0, W0))
    assert len(h.requests) == 3


def test_4xx_binance_error_is_rejected_at_once() -> None:
    h = Harness(lambda r: err(400, -1121, "Invalid symbol."))
    with pytest.raises(ExchangeRejected) as info:
        h.run(lambda: h.rest.klines(Pair("NOPEUSDT", "1m"), W0, W0))
    assert info.value.code == -1121 and info.value.status == 400
    assert len(h.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"not": "a list"},
        [[W0, 1.0, "2", "0.5", "1.5", "10", W0 + 59_999, "15", 7, "5", "7.5", "0"]],
        [row(W0 + 60_000), row(W0)],
        [row(W0 - 60_000)],
    ],
)
def test_malformed_klines_body(body: object) -> None:
    h = Harness(lambda r: ok(body))
    with pytest.raises(MalformedPayload):
        h.run(lambda: h.rest.klines(BTC1M, W0, W0 + 600_000))


def test_non_json_body() -> None:
    h = Harness(lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(MalformedPayload, match="not JSON"):
        h.run(lambda: h.rest.klines(BTC1M, W0, W0))


def test_closed_klines_between_pages_and_drops_the_open_candle() -> None:
    # exchange now: W0 + 10 min + 30 s -> candles opening up to W0 + 9 min are closed
    now = W0 + 10 * 60_000 + 30_000

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/fapi/v1/time":
            return ok({"serverTime": h.local.now_ms() + (now - (W0 + 1_000))})
        start, end = int(r.url.params["startTime"]), int(r.url.params["endTime"])
        limit = int(r.url.params["limit"])
        opens = [t for t in range(W0, now, 60_000) if start <= t <= end][:limit]
        return ok([row(t) for t in opens])

    h = Harness(handler, RestConfig(endpoint="http://exchange.test", klines_limit=4))
    klines = h.run(lambda: h.rest.closed_klines_between(BTC1M, W0, W0 + 3_600_000))
    assert [k.open_time for k in klines] == list(range(W0, W0 + 10 * 60_000, 60_000))
    assert all(k.close_time < h.clock.now_ms() for k in klines)
    pages = [r for r in h.requests if r.url.path == "/fapi/v1/klines"]
    assert [int(r.url.params["startTime"]) for r in pages] == [
        W0,
        W0 + 4 * 60_000,
        W0 + 8 * 60_000,
    ]


def test_requests_wait_when_the_budget_is_spent() -> None:
    h = Harness(lambda r: ok([], used=None))
    h.budget.set_limit(10)  # usable 9 with the 2 % margin -> four weight-2 pages per minute

    async def many() -> None:
        for _ in range(6):
            await h.rest.klines(BTC1M, W0, W0)

    h.run(many)
    assert len(h.requests) == 6
    assert h.sleeps and sum(h.sleeps) >= 50  # waited for the next window


def test_json_body_helper_roundtrip() -> None:
    assert json.loads(ok([1]).content) == [1]


def test_page_values_keeps_closed_candles_encoded_as_the_codec_writes_them() -> None:
    codec = KlineCodec()
    assert kline_encoder(codec) is not None  # the compiled core takes the page (when active)
    pair, t0 = Pair("BTCUSDT", "1m"), 1_704_067_200_000
    rows = [[t0 + 60_000 * i, "1", "2", "0.5", "1.5", "10", t0 + 60_000 * i + 59_999, "15", 3,
             "5", "7.5", "0"] for i in range(3)]  # fmt: skip
    now = t0 + 2 * 60_000 + 59_999  # the third candle is still open
    for native_ok in (True, False):
        got = page_values(pair, json.dumps(rows).encode(), 7, now, codec, native_ok=native_ok)
        assert got.open_times == [t0, t0 + 60_000]
        assert got.values == [
            codec.encode(
                Kline(
                    "BTCUSDT",
                    "1m",
                    t,
                    t + 59_999,
                    "1",
                    "2",
                    "0.5",
                    "1.5",
                    "10",
                    "15",
                    3,
                    "5",
                    "7.5",
                    "rest",
                    7,
                )
            )  # fmt: skip
            for t in (t0, t0 + 60_000)
        ]
        with pytest.raises(MalformedPayload, match="GET /fapi/v1/klines: body is not JSON"):
            page_values(pair, b"[[1,", 7, now, codec, native_ok=native_ok)
        with pytest.raises(MalformedPayload, match="not ascending"):
            page_values(pair, json.dumps(rows[::-1]).encode(), 7, now, codec)


def _verdict(call: Callable[[], Coroutine[Any, Any, list[bytes]]], h: Harness) -> Any:
    try:
        return h.run(call)
    except MalformedPayload as exc:
        return type(exc).__name__, str(exc)


M = 60_000
_OPEN = W0  # the harness's exchange clock is W0 + 1 s: the W0 candle is still open
_PAGES = {
    "not JSON": (b"<html>", (W0 - 3 * M, W0)),
    "cut": (b"[[1,", (W0 - 3 * M, W0)),
    "not ascending": (json.dumps([row(W0 - 2 * M), row(W0 - 3 * M)]).encode(), (W0 - 3 * M, W0)),
    "open candle outside": (
        json.dumps([row(W0 - 2 * M), row(W0 - M), row(_OPEN)]).encode(),
        (W0 - 3 * M, W0 - M),
    ),
    "closed candle outside": (
        json.dumps([row(W0 - 5 * M), row(W0 - 2 * M)]).encode(),
        (W0 - 3 * M, W0),
    ),
    "open candle inside": (
        json.dumps([row(W0 - 3 * M), row(W0 - 2 * M), row(W0 - M), row(_OPEN)]).encode(),
        (W0 - 3 * M, W0),
    ),
}


@pytest.mark.parametrize("core", ["active", "python"])
@pytest.mark.parametrize("case", sorted(_PAGES))
def test_klines_and_klines_values_give_one_verdict(core: str, case: str, monkeypatch: Any) -> None:
    """The Kline path (recheck, the producer's gap fill) and the raw-page path (the
    backfiller's REST units) accept and refuse the same pages with the same message, on the
    compiled core and on the Python path; the open candle is checked against the range too."""
    if core == "python":
        monkeypatch.setattr(native, "MODULE", None)
    body, (start, end) = _PAGES[case]
    codec = KlineCodec()

    def harness() -> Harness:
        return Harness(lambda r: httpx.Response(200, content=body))

    h = harness()

    async def as_klines() -> list[bytes]:
        page = await h.rest.klines(BTC1M, start, end, 499)
        return [codec.encode(k) for k in closed_klines(page, h.clock.now_ms())]

    g = harness()

    async def as_values() -> list[bytes]:
        rows = await g.rest.klines_values(
            BTC1M, start, end, 499, codec=codec, exchange_now_ms=g.clock.now_ms()
        )
        return rows.values

    expected = _verdict(as_klines, h)
    assert _verdict(as_values, g) == expected
    if case == "open candle inside":
        assert len(expected) == 3  # the three closed candles
    else:
        assert expected[0] == "MalformedPayload"
    if case == "not JSON":
        assert expected[1].endswith("GET /fapi/v1/klines: body is not JSON: '<html>'")
