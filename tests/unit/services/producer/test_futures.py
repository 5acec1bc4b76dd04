"""services.producer.futures: what the futures task does with mark-price frames (no I/O: a
recording stand-in for the Kafka producer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import REGISTRY
from websockets.exceptions import ConnectionClosed

from qryptify.binance.rest import BinanceRest
from qryptify.config import Config, build_config
from qryptify.futures.funding import FundingRate
from qryptify.futures.price import PriceKline
from qryptify.kafka import Producer
from qryptify.offsets import SourceOffsetStore
from services.producer.futures import FuturesLive

DLQ = "klines.dlq.test"


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0  # everything acknowledged


def live(producer: RecordingProducer) -> FuturesLive:
    cfg: Config = build_config(
        {
            "pairs": ["BTCUSDT/1h", "ETHUSDT/4h"],
            "kafka": {"dlq_topic": DLQ},
            "futures": {"funding_rates": True, "mark_price": True},
        }
    )
    return FuturesLive(
        cfg,
        cast(BinanceRest, None),  # not reached: no frame here settles a funding
        cast(Producer, producer),
        cast(SourceOffsetStore, None),
    )


def mark_frame(symbol: str, event: int, nxt: int) -> str:
    data = {"e": "markPriceUpdate", "E": event, "s": symbol, "p": "1", "r": "0.0001", "T": nxt}
    return json.dumps({"stream": f"{symbol.lower()}@markPrice@1s", "data": data})


def test_malformed_mark_frames_go_to_the_dlq_raw_with_the_reason() -> None:
    producer = RecordingProducer()
    task = live(producer)
    not_json = b"\x00{not json"
    no_time = json.dumps(
        {"stream": "btcusdt@markPrice@1s", "data": {"e": "markPriceUpdate", "s": "BTCUSDT"}}
    )
    task._on_frame(not_json)
    task._on_frame(no_time)
    task._on_frame(mark_frame("BTCUSDT", 1_000, 28_800_000))  # a good one: not a DLQ record

    assert task.malformed == 2
    assert [m["topic"] for m in producer.sent] == [DLQ, DLQ]
    assert producer.sent[0]["value"] == not_json
    assert producer.sent[1]["value"] == no_time.encode()
    # keyed by the stream the frame names, as kline frames are (none when it names none)
    assert [m["key"] for m in producer.sent] == [None, b"btcusdt@markPrice@1s"]
    assert dict(producer.sent[1]["headers"])["qryptify.stream"] == b"btcusdt@markPrice@1s"
    for sent, why in zip(producer.sent, ("not JSON", "fields s/E/T"), strict=True):
        headers = dict(sent["headers"])
        assert headers["qryptify.source"] == b"ws"
        reason = headers["qryptify.reason"].decode()
        assert reason.startswith("markPrice: ") and why in reason
    # the good frame was taken: its next funding time is now known
    assert task.funding.announced == {"BTCUSDT": 28_800_000}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


H8 = 8 * 3_600_000


def test_frames_and_malformed_frames_are_counted() -> None:
    task = live(RecordingProducer())
    frames = sample("qryptify_producer_futures_frames_total")
    malformed = sample("qryptify_producer_futures_malformed_frames_total")
    task._on_frame("not json")
    task._on_frame(mark_frame("ETHUSDT", 1_000, H8))
    task._on_frame(mark_frame("ETHUSDT", 2_000, H8))
    assert sample("qryptify_producer_futures_frames_total") - frames == 3
    assert sample("qryptify_producer_futures_malformed_frames_total") - malformed == 1


def test_rest_fetches_are_counted_by_what_started_them() -> None:
    task = live(RecordingProducer())
    before = {r: sample("qryptify_producer_futures_rest_fetches_total", reason=r)
              for r in ("stream", "gap_fill")}  # fmt: skip

    async def scenario() -> None:
        task._on_frame(mark_frame("BTCUSDT", 1_000, H8))
        task._on_frame(mark_frame("BTCUSDT", H8 + 5, 2 * H8))  # T moved on: settled
        task._on_frame(mark_frame("BTCUSDT", H8 + 9, 2 * H8))  # nothing new
        task._fill_all()  # 2 fundings + 2 mark series; BTCUSDT's funding is already busy
        for job in list(task._tasks):  # cancelled before they ran: no REST here
            job.cancel()
        await asyncio.gather(*task._tasks, return_exceptions=True)

    task.candles.published.update({("mark", "BTCUSDT", "1h"): 0, ("mark", "ETHUSDT", "4h"): 0})
    asyncio.run(scenario())
    assert (
        sample("qryptify_producer_futures_rest_fetches_total", reason="stream") - before["stream"]
        == 1
    )
    assert (
        sample("qryptify_producer_futures_rest_fetches_total", reason="gap_fill")
        - before["gap_fill"]
        == 3
    )


def test_published_records_are_counted_by_kind() -> None:
    producer = RecordingProducer()
    task = live(producer)
    kinds = ("funding", "mark")
    before = {k: sample("qryptify_producer_futures_published_total", kind=k) for k in kinds}
    fundings = [FundingRate("BTCUSDT", t, "0.0001", "1", None, "rest", 5) for t in (0, H8)]
    candle = PriceKline(
        "mark", "BTCUSDT", "1h", 0, 3_599_999, "1", "2", "0.5", "1.5", 60, "rest", 5
    )
    asyncio.run(task._publish(fundings))
    asyncio.run(task._publish([candle]))
    assert [m["topic"] for m in producer.sent] == ["klines.futures"] * 3
    assert (
        sample("qryptify_producer_futures_published_total", kind="funding") - before["funding"] == 2
    )
    assert sample("qryptify_producer_futures_published_total", kind="mark") - before["mark"] == 1


# -- rotation of the markPrice connection (stand-ins for the connection and the clock) ----------
CLOSED = object()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def now_ms(self) -> int:
        return self.now


class FakeConnection:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self.closed = False

    async def recv(self) -> object:
        item = await self.inbox.get()
        if item is CLOSED:
            self.inbox.put_nowait(CLOSED)
            raise ConnectionClosed(None, None)
        return item

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.log.append(f"close {self.name}")
            self.inbox.put_nowait(CLOSED)


class Harness:
    def __init__(self, handover_timeout_s: float = 30.0) -> None:
        self.clock = FakeClock()
        self.log: list[str] = []
        self.conns: list[FakeConnection] = []
        self.jobs: list[tuple[tuple[str, ...], str]] = []
        cfg: Config = build_config(
            {
                "pairs": ["BTCUSDT/1h"],
                "ws": {
                    "rotate_after_s": 60,
                    "rotate_stagger_s": 0,
                    "handover_timeout_s": handover_timeout_s,
                    "stale_after_s": 600,
                },
                "futures": {"funding_rates": True},
            }
        )
        self.task = FuturesLive(
            cfg,
            cast(BinanceRest, SimpleNamespace(clock=self.clock)),
            cast(Producer, RecordingProducer()),
            cast(SourceOffsetStore, None),
        )
        self.task._open = self._open  # type: ignore[method-assign, assignment]
        self.task._spawn = lambda job, reason: self.jobs.append((job, reason))  # type: ignore[method-assign]

    async def _open(self) -> FakeConnection:
        conn = FakeConnection(str(len(self.conns) + 1), self.log)
        self.conns.append(conn)
        self.log.append(f"open {conn.name}")
        return conn

    async def until(self, condition: Callable[[], bool]) -> None:
        async def poll() -> None:
            while not condition():  # noqa: ASYNC110 - the condition is the code under test's state
                await asyncio.sleep(0.005)

        await asyncio.wait_for(poll(), 10)  # a hang guard, not a measurement


def run_stream(h: Harness, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        loop = asyncio.create_task(h.task._stream_loop())
        try:
            await scenario()
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(main())


def test_mark_connection_is_replaced_before_the_cut_new_one_first() -> None:
    h = Harness()
    rotations = sample("qryptify_producer_futures_rotations_total")

    async def scenario() -> None:
        await h.until(lambda: len(h.conns) == 1)
        h.conns[0].inbox.put_nowait(mark_frame("BTCUSDT", 1_000, H8))
        await h.until(lambda: h.task.funding.announced.get("BTCUSDT") == H8)
        assert h.log == ["open 1"]  # not due yet
        h.clock.now = 60_000  # rotate_after_s reached on the exchange clock
        await h.until(lambda: len(h.conns) == 2)
        h.conns[0].inbox.put_nowait(mark_frame("BTCUSDT", 60_001, H8))  # the old one still read
        await asyncio.sleep(0.05)
        assert h.log == ["open 1", "open 2"]  # overlap: the old one stays open meanwhile
        h.conns[1].inbox.put_nowait(mark_frame("BTCUSDT", 60_002, H8))
        await h.until(lambda: h.conns[0].closed)
        # the stream goes on on the replacement: a settlement seen there is fetched
        h.conns[1].inbox.put_nowait(mark_frame("BTCUSDT", H8 + 1, 2 * H8))
        await h.until(lambda: (("funding", "BTCUSDT"), "stream") in h.jobs)

    run_stream(h, scenario)
    assert h.log[:3] == ["open 1", "open 2", "close 1"]
    assert h.task.rotations == 1 and h.task.connects == 1  # a rotation, not a reconnect
    assert sample("qryptify_producer_futures_rotations_total") - rotations == 1


def test_replacement_that_never_delivers_is_dropped_and_the_old_one_kept() -> None:
    h = Harness(handover_timeout_s=0.01)

    async def scenario() -> None:
        await h.until(lambda: len(h.conns) == 1)
        h.clock.now = 60_000
        await h.until(lambda: h.task.abandoned_rotations == 1)
        h.conns[0].inbox.put_nowait(mark_frame("BTCUSDT", 60_001, H8))
        await h.until(lambda: h.task.funding.announced.get("BTCUSDT") == H8)
        assert h.log == ["open 1", "open 2", "close 2"]  # the old one still open and read

    run_stream(h, scenario)
    assert h.task.rotations == 0 and h.task.connects == 1


def test_old_connection_lost_during_the_handover_hands_over_at_once() -> None:
    h = Harness()

    async def scenario() -> None:
        await h.until(lambda: len(h.conns) == 1)
        h.clock.now = 60_000
        await h.until(lambda: len(h.conns) == 2)
        await h.conns[0].close()  # the exchange cut the old one before the new one delivered
        await h.until(lambda: h.task.rotations == 1)
        h.conns[1].inbox.put_nowait(mark_frame("BTCUSDT", 60_002, H8))
        await h.until(lambda: h.task.funding.announced.get("BTCUSDT") == H8)

    run_stream(h, scenario)
    assert h.log[:3] == ["open 1", "open 2", "close 1"]
    assert h.task.connects == 1 and len(h.conns) == 2  # no reconnect, no third connection


class RecordingOffsets:
    def __init__(self) -> None:
        self.commits: list[tuple[str, str, int]] = []

    def commit(self, service: str, pair: object, last_open: int) -> None:
        self.commits.append((service, str(pair), last_open))

    def flush(self) -> None:
        pass


def test_live_fetches_publish_confirmed_empty_ranges_and_move_past_them() -> None:
    """A maintenance window of a price series seen live: the REST fill publishes the candles
    and the exchange-confirmed empty range (the backfiller's paging, ``closed_price_klines``),
    and the series' position moves past the window, also when it is still under way."""
    from qryptify.avro import AvroCodec
    from qryptify.futures import records
    from qryptify.futures.price import PriceEmptyRange
    from tests.unit.qryptify.test_futures_empty import JUN, FakeRest

    hour = 3_600_000
    grace = build_config({}).ws.watchdog_grace_ms
    opens = [JUN + h * hour for h in range(10) if h not in (4, 5, 6)]
    producer, offsets = RecordingProducer(), RecordingOffsets()
    task = live(producer)
    task.offsets = cast(SourceOffsetStore, offsets)
    series = ("mark", "BTCUSDT", "1h")
    before = sample("qryptify_producer_futures_empty_ranges_total", kind="mark")

    def fetch(now: int) -> int:
        task.rest = cast(BinanceRest, FakeRest(opens, now=now))
        asyncio.run(task._run_job(series))  # the watchdog's / gap fill's job
        return task.candles.published[series]

    # The window is under way: 3h is the last candle, 4h and 5h closed without one.
    task.candles.published[series] = JUN
    assert fetch(JUN + 6 * hour + grace) == JUN + 5 * hour
    # After it: the candles from 7h on, nothing more is empty.
    assert fetch(JUN + 10 * hour + grace) == JUN + 9 * hour
    codec = AvroCodec()
    sent = [records.decode(codec, m["value"]) for m in producer.sent]
    ranges = [
        (r.range.start_time, r.range.end_time) for r in sent if isinstance(r, PriceEmptyRange)
    ]
    assert ranges == [(JUN + 4 * hour, JUN + 6 * hour), (JUN + 6 * hour, JUN + 7 * hour)]
    candles = [r.open_time for r in sent if isinstance(r, PriceKline)]
    assert candles == [t for t in opens if t > JUN]
    assert offsets.commits == [
        ("producer.mark", "BTCUSDT/1h", JUN + 5 * hour),
        ("producer.mark", "BTCUSDT/1h", JUN + 9 * hour),
    ]
    assert sample("qryptify_producer_futures_empty_ranges_total", kind="mark") - before == 2
