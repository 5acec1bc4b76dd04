"""Backfiller correctness against a fake exchange: each candle published once when the gap
finder and the plan overlap, invalid REST candles never published (nor recorded empty), an
empty answer confirmed by a second one before it becomes an empty range, and a 429 pause that
holds requests already waiting for a connection."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from qryptify.binance.rest import BinanceRest
from qryptify.binance.weights import WeightBudget
from qryptify.clock import ExchangeClock, FixedClock
from qryptify.config import RestConfig
from qryptify.kline import EmptyRange, Kline
from qryptify.pairs import MINUTE_MS, Pair
from tests.unit.services.backfiller.test_run import START, Exchange, events, make

BTC = Pair("BTCUSDT", "1m")


def test_no_stored_offset_and_rows_in_the_database_publish_each_candle_once() -> None:
    bf, producer, _ = make(Exchange(), ["BTCUSDT/1m"])
    # The gap finder found holes below what the sink wrote (170 of the 180 candles), and the
    # pair has no stored source offset: the plan starts at the range's start as well.
    holes = {
        BTC: [(START, START + 100 * MINUTE_MS), (START + 110 * MINUTE_MS, START + 180 * MINUTE_MS)]
    }
    bf.connect_db = lambda: None  # type: ignore[assignment]
    bf._find_db_holes = lambda: holes  # type: ignore[method-assign]
    assert bf.run() == 0
    opens = Counter(e.open_time for e in events(producer) if isinstance(e, Kline))
    assert sorted(opens) == [START + i * MINUTE_MS for i in range(180)]
    assert max(opens.values()) == 1, [t for t, n in opens.items() if n > 1][:5]


def test_invalid_rest_candles_are_not_published_nor_recorded_empty() -> None:
    bad = START + 42 * MINUTE_MS
    ex = Exchange(close_override={("BTCUSDT", bad): "9.0"})  # close above high "2.0"
    bf, producer, _ = make(ex, ["BTCUSDT/1m"])
    assert bf.run() == 0
    got = events(producer)
    opens = [e.open_time for e in got if isinstance(e, Kline)]
    assert bad not in opens and len(opens) == 179
    assert not [e for e in got if isinstance(e, EmptyRange)]


class FlakyExchange(Exchange):
    """Answers the first request of each page without some candles (a lagging replica)."""

    def __init__(self, gaps: set[int], **kw: Any) -> None:
        super().__init__(**kw)
        self.gaps = gaps
        self.seen: set[str] = set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path != "/fapi/v1/klines":
            return super().handler(request)
        query = str(request.url.query)
        first = query not in self.seen
        self.seen.add(query)
        self.missing = {("BTCUSDT", t) for t in self.gaps} if first else set()
        return super().handler(request)


def test_one_empty_answer_is_confirmed_before_it_becomes_an_empty_range() -> None:
    gaps = {START + i * MINUTE_MS for i in range(20, 25)}
    ex = FlakyExchange(gaps)
    bf, producer, _ = make(ex, ["BTCUSDT/1m"])
    assert bf.run() == 0
    got = events(producer)
    assert not [e for e in got if isinstance(e, EmptyRange)]
    opens = [e.open_time for e in got if isinstance(e, Kline)]
    assert opens == [START + i * MINUTE_MS for i in range(180)]


def test_a_429_pause_holds_requests_already_waiting_for_a_connection() -> None:
    """One connection; three requests: the first gets a 429 (Retry-After 5 s) while the other
    two wait for the connection. Neither may be sent before the pause ends."""
    w0 = 1_704_067_200_000
    local = FixedClock(w0)
    clock = ExchangeClock(local)
    clock.observe(local.now_ms(), local.now_ms(), w0)
    sent_at: list[int] = []

    class OneConnection(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.lock = asyncio.Lock()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            async with self.lock:  # what a pool of one connection does
                sent_at.append(local.now_ms())
                for _ in range(5):
                    await asyncio.sleep(0)  # let the others queue up behind us
                if len(sent_at) == 1:
                    body = {"code": -1003, "msg": "Too many requests"}
                    return httpx.Response(429, json=body, headers={"Retry-After": "5"})
                return httpx.Response(200, json=[], headers={"X-MBX-USED-WEIGHT-1M": "3"})

    async def sleep(seconds: float) -> None:
        local.advance(int(seconds * 1000))
        await asyncio.sleep(0)

    rest = BinanceRest(
        RestConfig(endpoint="http://exchange.test", max_connections=1),
        budget=WeightBudget(limit=2400, safety_margin=0.02),
        clock=clock,
        transport=OneConnection(),
        sleep=sleep,
        budget_clock=local,
    )

    # When the budget let each request go (a fake sleep moves the clock at once, so the send
    # times alone cannot tell a held request from one let go before the 429).
    granted: list[int] = []
    budget_check = rest._acquire

    async def acquire(weight: int) -> int:
        allowed = await budget_check(weight)
        granted.append(local.now_ms())
        return allowed

    rest._acquire = acquire  # type: ignore[method-assign]

    async def go() -> None:
        try:
            await asyncio.gather(*(rest.klines(BTC, w0, w0) for _ in range(3)))
        finally:
            await rest.aclose()

    asyncio.run(go())
    assert len(sent_at) == 4  # the refused one is re-sent after the pause
    assert granted[0] == w0
    assert all(t >= w0 + 5_000 for t in granted[1:]), granted


def test_invalid_archive_rows_are_left_out_before_publishing() -> None:
    from qryptify.avro import EncodedKlines, KlineCodec
    from services.backfiller.units import valid_rows
    from tests.conftest import make_kline

    codec = KlineCodec()
    klines = [make_kline(open_time=START + i * MINUTE_MS, source="archive") for i in range(5)]
    klines[2] = make_kline(open_time=START + 2 * MINUTE_MS, high="1.0", low="2.0")  # low > high
    rows = EncodedKlines(
        "BTCUSDT",
        "1m",
        [k.open_time for k in klines],
        [k.close_time for k in klines],
        [codec.encode(k) for k in klines],
    )
    kept = valid_rows(rows, codec, "archive", "BTCUSDT-1m-2024-01.zip")
    assert kept.open_times == [START + i * MINUTE_MS for i in (0, 1, 3, 4)]
    assert kept.values == [codec.encode(klines[i]) for i in (0, 1, 3, 4)]
