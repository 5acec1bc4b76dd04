"""services.producer.futures: what the futures task does with mark-price frames (no I/O: a
recording stand-in for the Kafka producer)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from prometheus_client import REGISTRY

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
