"""services.producer.futures: what the futures task does with mark-price frames (no I/O: a
recording stand-in for the Kafka producer)."""

from __future__ import annotations

import json
from typing import Any, cast

from qryptify.binance.rest import BinanceRest
from qryptify.config import Config, build_config
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
