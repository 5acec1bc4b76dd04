"""The backfiller's run loop against a fake exchange (httpx.MockTransport) and a fake
producer: symbol validation, the closed rule, empty ranges, ordering, offsets, rechecks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest

from qryptify.archive_ledger import IngestedFile
from qryptify.avro import EncodedKlines, KlineCodec
from qryptify.binance.archive import ArchiveFile, ArchiveStats
from qryptify.binance.rest import PERPETUAL_DELIVERY_MS, BinanceRest
from qryptify.clock import ExchangeClock
from qryptify.config import Config, build_config
from qryptify.errors import DeliveryFailed, MalformedPayload
from qryptify.handoff import LIVE_START, PLAN
from qryptify.kline import EmptyRange, Event, Kline
from qryptify.pairs import MINUTE_MS, Pair, interval_ms
from qryptify.publish import KlinePublisher
from services.backfiller.fetch import ordered_map
from services.backfiller.run import Backfiller
from sim.symbols import parse_time_ms

START = parse_time_ms("2024-01-01")
NOW = START + 3 * 60 * MINUTE_MS + 30_000  # 03:00:30 -> 180 closed 1m candles


@dataclass
class Exchange:
    now: int = NOW
    symbols: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "BTCUSDT": {"status": "TRADING", "deliveryDate": PERPETUAL_DELIVERY_MS},
            "OLDUSDT": {"status": "SETTLING", "deliveryDate": START + 90 * MINUTE_MS},
        }
    )
    missing: set[tuple[str, int]] = field(default_factory=set)
    close_override: dict[tuple[str, int], str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    #: Exchange ms the clock moves on after each /fapi/v1/time answer (one entry per answer).
    time_steps: list[int] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/fapi/v1/time":
            answered = self.now
            if self.time_steps:
                self.now += self.time_steps.pop(0)
            return httpx.Response(200, json={"serverTime": answered})
        if path == "/fapi/v1/exchangeInfo":
            return httpx.Response(
                200,
                json={
                    "rateLimits": [],
                    "symbols": [
                        {"symbol": s, "onboardDate": START - 10 * MINUTE_MS, **v}
                        for s, v in self.symbols.items()
                    ],
                },
            )
        params = request.url.params
        symbol, interval = params["symbol"], params["interval"]
        if symbol not in self.symbols:
            return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})
        step = interval_ms(interval)
        limit = int(params["limit"])
        delivery = self.symbols[symbol]["deliveryDate"]
        last_data = self.symbols[symbol].get("lastData", delivery)
        if "startTime" not in params:  # the most recent `limit` candles
            newest = min(self.now, last_data) - 1
            newest -= newest % step
            start, end = newest - (limit - 1) * step, newest
        else:
            start, end = int(params["startTime"]), int(params["endTime"])
        stop = min(end, self.now)
        delivery = min(delivery, last_data)
        rows: list[list[object]] = []
        t = start - start % step
        t = t if t >= start else t + step
        while t <= stop and len(rows) < limit:
            if (symbol, t) not in self.missing and t < delivery:
                close = self.close_override.get((symbol, t), "1.5")
                rows.append([t, "1.0", "2.0", "0.5", close, "10", t + step - 1, "15", 7, "5",
                             "7.5", "0"])  # fmt: skip
            t += step
        return httpx.Response(200, json=rows, headers={"X-MBX-USED-WEIGHT-1M": "1"})


class FakeProducer:
    """Delivers everything on the next poll/flush (unit tests only)."""

    def __init__(self, error: str | None = None) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []
        self._callbacks: list[Callable[[Any, Any], None]] = []
        self.error = error

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any = None) -> None:
        self.records.append((topic, key, value))
        if on_delivery is not None:
            self._callbacks.append(on_delivery)

    def produce_batch(
        self, topic: str, messages: list[dict[str, Any]], on_delivery: Any = None
    ) -> int:
        for m in messages:
            self.produce(topic, m["key"], m["value"], m.get("callback", on_delivery))
        return len(messages)

    def poll(self, timeout: float = 0) -> int:
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self.error, None)
        return len(callbacks)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class FakeOffsets:
    """The backfiller's own offsets in ``stored``; other services' marks in ``marks``."""

    def __init__(
        self, stored: dict[Pair, int] | None = None, live_starts: dict[Pair, int] | None = None
    ) -> None:
        self.stored = dict(stored or {})
        self.marks: dict[str, dict[Pair, int]] = {LIVE_START: dict(live_starts or {})}

    def load(self, service: str) -> dict[Pair, int]:
        return dict(self.stored) if service == "backfiller" else dict(self.marks.get(service, {}))

    def commit(self, service: str, pair: Pair, last_open_time: int) -> None:
        self.marks.setdefault(service, {})[pair] = last_open_time

    def commit_acked(self, service: str, publisher: KlinePublisher) -> int:
        for pair, position in publisher.acked().items():
            self.stored[pair] = max(position, self.stored.get(pair, position))
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def acknowledge(self, timeout_s: float = 30.0) -> None:
        pass


def make(
    exchange: Exchange,
    pairs: list[str],
    offsets: FakeOffsets | None = None,
    producer: FakeProducer | None = None,
    archive: bool = False,
    rest: dict[str, Any] | None = None,
    clock: ExchangeClock | None = None,
    **backfill: Any,
) -> tuple[Backfiller, FakeProducer, FakeOffsets]:
    cfg: Config = build_config(
        {
            "pairs": pairs,
            "rest": {"endpoint": "http://exchange.test", **(rest or {})},
            "archive": {"enabled": archive, "endpoint": "http://archive.test"},
            "backfill": {"start_date": "2024-01-01", "exit_when_done": True, **backfill},
        }
    )
    producer = producer or FakeProducer()
    store = offsets or FakeOffsets()
    bf = Backfiller(
        cfg,
        rest=BinanceRest(cfg.rest, clock=clock, transport=httpx.MockTransport(exchange.handler)),
        publisher=KlinePublisher(cast(Any, producer), "klines"),
        offsets=cast(Any, store),
    )
    return bf, producer, store


def events(producer: FakeProducer) -> list[Event]:
    codec = KlineCodec()
    return [codec.decode(value) for _, _, value in producer.records]


def test_an_unlisted_symbol_is_reported_once_and_the_other_pairs_complete(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bf, producer, offsets = make(Exchange(), ["BTCUSDT/1m", "NOPEUSDT/1m", "BTCUSDT/1h"])
    assert bf.run() == 0
    got = events(producer)
    assert {(e.symbol, e.interval) for e in got} == {("BTCUSDT", "1m"), ("BTCUSDT", "1h")}
    assert len([e for e in got if isinstance(e, Kline) and e.interval == "1m"]) == 180
    assert Pair("NOPEUSDT", "1m") not in offsets.stored
    assert bf.summary.unlisted_pairs == ["NOPEUSDT/1m"]
    assert "unlisted=NOPEUSDT/1m" in bf.summary.line()
    # Warnings and errors only: an earlier test may have left INFO logging on (the summary
    # line names the pair too).
    reports = [
        r for r in caplog.records if "NOPEUSDT" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    assert len(reports) == 1 and "pairs[1] NOPEUSDT/1m" in reports[0].getMessage()
    assert bf.health.get() == (True, "caught up; not listed (skipped): NOPEUSDT/1m")


def test_a_symbol_delisted_while_running_is_skipped_like_an_unlisted_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ex = Exchange()
    bf, producer, _ = make(ex, ["OLDUSDT/1m", "BTCUSDT/1m"])
    original = ex.handler

    def delisted_after_exchange_info(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fapi/v1/klines" and request.url.params["symbol"] == "OLDUSDT":
            return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})
        return original(request)

    bf.rest = BinanceRest(bf.cfg.rest, transport=httpx.MockTransport(delisted_after_exchange_info))
    assert bf.run() == 0
    assert {e.symbol for e in events(producer)} == {"BTCUSDT"}
    assert bf.summary.unlisted_pairs == ["OLDUSDT/1m"] and bf.summary.failed_pairs == []
    reports = [r for r in caplog.records if "OLDUSDT/1m: symbol OLDUSDT" in r.getMessage()]
    assert len(reports) == 1 and "no longer listed" in reports[0].getMessage()


def test_publishes_every_closed_candle_in_order_and_never_the_open_one() -> None:
    ex = Exchange()
    bf, producer, offsets = make(ex, ["BTCUSDT/1m", "BTCUSDT/1h"])
    assert bf.run() == 0
    got = events(producer)
    m1 = [e.open_time for e in got if isinstance(e, Kline) and e.interval == "1m"]
    assert m1 == [START + i * MINUTE_MS for i in range(180)]  # 03:00 is still open
    h1 = [e.open_time for e in got if isinstance(e, Kline) and e.interval == "1h"]
    assert h1 == [START, START + 60 * MINUTE_MS, START + 120 * MINUTE_MS]
    assert all(e.close_time < NOW for e in got if isinstance(e, Kline))
    assert offsets.stored[Pair("BTCUSDT", "1m")] == START + 179 * MINUTE_MS
    assert bf.summary.candles == 183 and bf.summary.klines_requests == 2


def test_missing_candles_become_one_empty_range_each_and_nothing_is_fabricated() -> None:
    ex = Exchange(missing={("BTCUSDT", START + i * MINUTE_MS) for i in range(10, 15)})
    bf, producer, _ = make(ex, ["BTCUSDT/1m"])
    assert bf.run() == 0
    got = events(producer)
    empties = [e for e in got if isinstance(e, EmptyRange)]
    assert [(e.start_time, e.end_time) for e in empties] == [
        (START + 10 * MINUTE_MS, START + 15 * MINUTE_MS)
    ]
    opens = [e.open_time for e in got if isinstance(e, Kline)]
    assert len(opens) == 175 and not set(opens) & {START + i * MINUTE_MS for i in range(10, 15)}
    # published in open-time order, the empty range in its place
    assert got.index(empties[0]) == 10


def test_a_settled_symbol_is_backfilled_to_its_last_candle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bf, producer, _ = make(Exchange(), ["OLDUSDT/1m"])
    assert bf.run() == 0
    opens = [e.open_time for e in events(producer) if isinstance(e, Kline)]
    assert opens[-1] == START + 89 * MINUTE_MS and len(opens) == 90
    assert not [e for e in events(producer) if isinstance(e, EmptyRange)]
    assert "OLDUSDT status SETTLING" in caplog.text


def test_resume_starts_after_the_stored_offset() -> None:
    ex = Exchange()
    stored = FakeOffsets({Pair("BTCUSDT", "1m"): START + 99 * MINUTE_MS})
    bf, producer, _ = make(ex, ["BTCUSDT/1m"], stored)
    assert bf.run() == 0
    opens = [e.open_time for e in events(producer) if isinstance(e, Kline)]
    assert opens == [START + i * MINUTE_MS for i in range(100, 180)]


def test_the_pass_marks_where_it_ends_for_the_producer() -> None:
    ex = Exchange()
    bf, _, offsets = make(ex, ["BTCUSDT/1m", "BTCUSDT/1h"])
    assert bf.run() == 0
    # NOW is 03:00:30: the last closed 1m candle opened 02:59, the last closed 1h one 02:00
    assert offsets.marks[PLAN] == {
        Pair("BTCUSDT", "1m"): START + 179 * MINUTE_MS,
        Pair("BTCUSDT", "1h"): START + 120 * MINUTE_MS,
    }


def test_a_pass_planned_before_a_live_start_reaches_it() -> None:
    """The producer went live (start 03:01) after this pass read the exchange's time
    (03:00:30, plan through 02:59): the pass reads the time again and publishes through the
    live start, so 03:00 and 03:01 are not left to the next recheck."""
    btc = Pair("BTCUSDT", "1m")
    ex = Exchange(time_steps=[2 * MINUTE_MS])  # 03:02:30 when asked again
    offsets = FakeOffsets(live_starts={btc: START + 181 * MINUTE_MS})
    bf, producer, _ = make(ex, ["BTCUSDT/1m"], offsets)
    assert bf.run() == 0
    opens = [e.open_time for e in events(producer) if isinstance(e, Kline)]
    assert opens == [START + i * MINUTE_MS for i in range(182)]
    assert offsets.marks[PLAN][btc] == START + 181 * MINUTE_MS


def test_a_live_start_within_the_plan_changes_nothing() -> None:
    btc = Pair("BTCUSDT", "1m")
    ex = Exchange(time_steps=[2 * MINUTE_MS])
    offsets = FakeOffsets(live_starts={btc: START + 179 * MINUTE_MS})
    bf, producer, _ = make(ex, ["BTCUSDT/1m"], offsets)
    assert bf.run() == 0
    opens = [e.open_time for e in events(producer) if isinstance(e, Kline)]
    assert opens == [START + i * MINUTE_MS for i in range(180)]


def test_recheck_publishes_new_and_changed_candles_only() -> None:
    ex = Exchange()
    bf, producer, _ = make(ex, ["BTCUSDT/1m"], recheck_recent=5)

    async def two_passes() -> None:
        bf.states[Pair("BTCUSDT", "1m")].info = (await bf.rest.exchange_info()).symbols["BTCUSDT"]
        await bf._pass(first=True)
        producer.records.clear()
        ex.now += 2 * MINUTE_MS  # two more candles closed
        ex.close_override[("BTCUSDT", START + 178 * MINUTE_MS)] = "1.6"  # a correction
        await bf._pass(first=False)
        await bf.rest.aclose()

    asyncio.run(two_passes())
    got = [(e.open_time, e.close) for e in events(producer) if isinstance(e, Kline)]
    assert sorted(got) == [
        (START + 178 * MINUTE_MS, "1.6"),
        (START + 180 * MINUTE_MS, "1.5"),
        (START + 181 * MINUTE_MS, "1.5"),
    ]
    assert bf.summary.corrections == 1


def test_ordered_map_keeps_order_and_bounds_concurrency() -> None:
    running = 0
    peak = 0

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (5 - i % 5))
        running -= 1
        return i

    async def collect() -> list[int]:
        return [r async for r in ordered_map(list(range(20)), work, 3)]

    assert asyncio.run(collect()) == list(range(20))
    assert peak <= 3


def test_a_delivery_failure_stops_the_run_and_commits_nothing() -> None:
    producer = FakeProducer(error="Local: Message timed out")
    bf, _, offsets = make(Exchange(), ["BTCUSDT/1m"], producer=producer)
    with pytest.raises(DeliveryFailed):
        bf.run()
    assert offsets.stored == {}


class FakeArchive:
    """Serves the daily 1m file of 2024-01-01 with some rows missing."""

    def __init__(self, drop: set[int]) -> None:
        self.drop = drop
        self.fetched: list[str] = []
        self.stats = ArchiveStats()
        self.used: dict[str, str] = {}

    async def fetch(self, file: Any, ingested_at: int) -> list[Kline] | None:
        self.fetched.append(str(file))
        if file.start_ms != START:
            return None
        self.used[file.path] = "ab" * 32
        return [
            Kline(
                "BTCUSDT",
                "1m",
                t,
                t + MINUTE_MS - 1,
                "1.0",
                "2.0",
                "0.5",
                "1.5",
                "10",
                "15",
                7,
                "5",
                "7.5",
                "archive",
                ingested_at,
            )  # fmt: skip
            for t in range(START, START + 1440 * MINUTE_MS, MINUTE_MS)
            if t not in self.drop
        ]

    async def fetch_encoded(
        self, file: Any, ingested_at: int, codec: KlineCodec
    ) -> EncodedKlines | None:
        klines = await self.fetch(file, ingested_at)
        if klines is None:
            return None
        return EncodedKlines(
            "BTCUSDT",
            "1m",
            [k.open_time for k in klines],
            [k.close_time for k in klines],
            [codec.encode(k) for k in klines],
        )

    async def aclose(self) -> None:
        return None


def test_archive_holes_are_filled_from_rest_in_order() -> None:
    ex = Exchange(now=START + 2 * 1440 * MINUTE_MS + 30_000)  # 2024-01-03 00:00:30
    bf, producer, _ = make(ex, ["BTCUSDT/1m"], archive=True)
    dropped = {START + i * MINUTE_MS for i in (5, 6, 700)}
    bf.archive = cast(Any, FakeArchive(dropped))
    assert bf.run() == 0
    got = [e for e in events(producer) if isinstance(e, Kline)]
    assert [k.open_time for k in got] == [START + i * MINUTE_MS for i in range(2 * 1440)]
    assert {k.open_time for k in got if k.source == "rest"} >= dropped
    assert {k.source for k in got if k.open_time < START + 1440 * MINUTE_MS} == {"archive", "rest"}
    assert not [e for e in events(producer) if isinstance(e, EmptyRange)]


def test_a_stopped_symbol_without_settlement_date_ends_at_its_last_candle() -> None:
    ex = Exchange()
    ex.symbols["GONEUSDT"] = {
        "status": "CLOSE",
        "deliveryDate": PERPETUAL_DELIVERY_MS,
        "lastData": START + 42 * MINUTE_MS,
    }
    bf, producer, _ = make(ex, ["GONEUSDT/1m"])
    assert bf.run() == 0
    got = events(producer)
    assert [e.open_time for e in got if isinstance(e, Kline)][-1] == START + 41 * MINUTE_MS
    assert not [e for e in got if isinstance(e, EmptyRange)]  # no "empty" after the end


class FakeLedger:
    """Collects what the backfiller records (the real one writes the offsets topic)."""

    def __init__(self) -> None:
        self.recorded: list[Any] = []
        self.files: dict[str, Any] = {}
        self.last_audit = None

    def load(self) -> dict[str, Any]:
        return {}

    def record(self, entry: Any) -> Any:
        self.recorded.append(entry)
        return entry

    def flush(self, timeout_s: float = 0) -> int:
        return 0


class SilentProducer(FakeProducer):
    """Takes records and never delivers them (a broker that does not answer)."""

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return len(self._callbacks)


@pytest.mark.parametrize("delivered", [True, False])
def test_an_archive_file_enters_the_ledger_only_after_kafka_acknowledged_its_candles(
    delivered: bool,
) -> None:
    ex = Exchange(now=START + 2 * 1440 * MINUTE_MS + 30_000)
    producer = FakeProducer() if delivered else SilentProducer()
    bf, _, _ = make(ex, ["BTCUSDT/1m"], producer=producer, archive=True, audit_every_s=0)
    bf.archive = cast(Any, FakeArchive(set()))
    ledger = FakeLedger()
    bf.ledger = cast(Any, ledger)
    assert bf.run() == 0
    day = ArchiveFile.daily("BTCUSDT", "1m", START)
    # the second day is not published yet: REST, not in the ledger
    expected = [IngestedFile(day, START, START + 1440 * MINUTE_MS, "ab" * 32)]
    assert ledger.recorded == (expected if delivered else [])


def _answer_first(ex: Exchange, path: str, answers: list[httpx.Response]) -> None:
    """The exchange gives ``answers`` to the first requests for ``path``, then serves normally."""
    serve = ex.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == path and answers:
            ex.requests.append(request)
            return answers.pop(0)
        return serve(request)

    ex.handler = handler  # type: ignore[method-assign]


def test_a_pass_the_exchange_interrupts_runs_again_and_completes() -> None:
    # The retry classifier (errors.is_retryable) says a 503 that outlasted the request's own
    # tries is worth a new pass: the run stays up and still publishes every closed candle.
    ex = Exchange()
    _answer_first(ex, "/fapi/v1/time", [httpx.Response(503, json={"code": -1, "msg": "busy"})])
    bf, producer, _ = make(ex, ["BTCUSDT/1m"], rest={"retry_attempts": 1})
    assert bf.run() == 0
    m1 = [e.open_time for e in events(producer) if isinstance(e, Kline)]
    assert m1 == [START + i * MINUTE_MS for i in range(180)]
    assert bf.passes == 1 and bf.summary.failed_pairs == []


def test_an_error_not_worth_retrying_ends_the_run() -> None:
    # A clock answer that is not what Binance sends will not improve by asking again.
    ex = Exchange()
    _answer_first(ex, "/fapi/v1/time", [httpx.Response(200, json={"serverTime": "soon"})])
    bf, _, _ = make(ex, ["BTCUSDT/1m"])
    with pytest.raises(MalformedPayload, match="/fapi/v1/time"):
        bf.run()
    assert bf.passes == 0
