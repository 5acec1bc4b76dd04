"""The producer's receive path on one batch of frames (a fake Kafka producer records what is
produced; no sockets): an open snapshot does nothing, a close is published once as the Avro
value of the candle it carried, its repeat is a duplicate, a malformed frame goes to the DLQ
raw with why, and the order of the batch is kept. Runs on whichever core is active (``make
test`` runs it on both)."""

from __future__ import annotations

import json
import threading
from typing import Any, cast

import pytest

from qryptify.avro import KlineCodec
from qryptify.config import Config, build_config
from qryptify.kline import Kline
from qryptify.metrics import Health
from qryptify.pairs import MINUTE_MS, Pair
from services.producer.clock import StreamClock
from services.producer.run import ProducerRunner
from services.producer.stream import LiveBook
from tests.conftest import T0

BTC = Pair("BTCUSDT", "1m")


class RecordingProducer:
    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.produced.append((topic, kwargs.get("key"), kwargs["value"], kwargs.get("headers")))

    def poll(self, _timeout: float = 0) -> int:
        return 0


class Conn:
    cid = 1
    last_wall = 0.0
    last_ex = 0
    delivered = False
    first_frame_wall = 0.0


def runner_on(cfg: Config, producer: RecordingProducer) -> ProducerRunner:
    """A runner whose book has BTC/1m published up to the candle before T0; no sockets."""
    runner = ProducerRunner(
        cfg,
        threading.Event(),
        Health(),
        producer=cast(Any, producer),
        rest=cast(Any, None),
        clock=StreamClock(),
        offsets=cast(Any, None),
    )
    runner.book = LiveBook({BTC: T0 - MINUTE_MS})
    return runner


def frame(open_time: int, closed: bool, close: str = "1.25") -> str:
    k = {"t": open_time, "T": open_time + MINUTE_MS - 1, "s": "BTCUSDT", "i": "1m", "f": 1,
         "L": 9, "o": "1.5", "c": close, "h": "2", "l": "1", "v": "10", "n": 3, "x": closed,
         "q": "15", "V": "5", "Q": "7.5", "B": "0"}  # fmt: skip
    data = {"e": "kline", "E": open_time + MINUTE_MS, "s": "BTCUSDT", "k": k}
    return json.dumps({"stream": "btcusdt@kline_1m", "data": data}, separators=(",", ":"))


def test_a_batch_publishes_each_new_close_once_and_dead_letters_the_malformed() -> None:
    cfg = build_config({"pairs": [str(BTC)]})
    producer = RecordingProducer()
    runner = runner_on(cfg, producer)
    batch: list[str | bytes] = [
        frame(T0 + MINUTE_MS, False),
        frame(T0, True),
        frame(T0, True).encode(),  # the same close again, as a binary frame
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline"',
        frame(T0 + MINUTE_MS, True, close="1.75"),
    ]
    runner._on_messages(cast(Any, Conn()), batch)

    expected = [
        Kline(
            "BTCUSDT",
            "1m",
            t,
            t + MINUTE_MS - 1,
            "1.5",
            "2",
            "1",
            c,
            "10",
            "15",
            3,
            "5",
            "7.5",
            "ws",
            0,
        )  # fmt: skip
        for t, c in ((T0, "1.25"), (T0 + MINUTE_MS, "1.75"))
    ]
    klines = [p for p in producer.produced if p[0] == cfg.kafka.topic]
    assert [p[1] for p in klines] == [b"BTCUSDT|1m", b"BTCUSDT|1m"]
    codec = KlineCodec()
    decoded = [cast(Kline, codec.decode(p[2])) for p in klines]
    # The ingest time is the batch's read time: compared apart.
    assert [d.ingested_at for d in decoded] == [decoded[0].ingested_at] * 2
    assert decoded[0].ingested_at > T0
    assert [Kline(*[*vars_of(d)[:-1], 0]) for d in decoded] == expected

    dead = [p for p in producer.produced if p[0] == cfg.kafka.dlq_topic]
    assert len(dead) == 1
    assert dead[0][1] == b"btcusdt@kline_1m"
    assert dead[0][2] == batch[3].encode()  # type: ignore[union-attr]
    assert dict(dead[0][3])["qryptify.reason"].startswith(b"not_json: not JSON")
    assert (runner.stats.frames, runner.stats.published_ws, runner.stats.duplicates) == (5, 2, 1)
    assert runner.stats.malformed == 1


class RefusingProducer(RecordingProducer):
    """librdkafka refuses the second kline it is handed (as ``produce`` raising does)."""

    def produce(self, topic: str, **kwargs: Any) -> None:
        if sum(1 for p in self.produced if p[0] == topic) == 1:
            raise RuntimeError("refused")
        super().produce(topic, **kwargs)


def test_a_refused_publish_leaves_no_close_marked_sent() -> None:
    producer = RefusingProducer()
    runner = runner_on(build_config({"pairs": [str(BTC)]}), producer)
    batch: list[str | bytes] = [frame(T0, True), frame(T0 + MINUTE_MS, True)]
    with pytest.raises(RuntimeError, match="refused"):
        runner._on_messages(cast(Any, Conn()), batch)

    # Neither close is remembered as sent: the second never reached Kafka, and the gap fill
    # must be free to fetch both again (it offers them to the book as new).
    assert runner.book.book(BTC).sent == set()
    assert runner.book.missing_closed(BTC, T0 + 10 * MINUTE_MS) == T0


def vars_of(k: Kline) -> list[Any]:
    return [getattr(k, f) for f in Kline.__slots__]
