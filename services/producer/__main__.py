"""qryptify-producer: wiring only (config → edges → run loop)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from qryptify.binance.rest import BinanceRest
from qryptify.config import Config
from qryptify.futures.topic import topic_spec
from qryptify.kafka import ensure_topics, make_producer
from qryptify.metrics import Health
from qryptify.offsets import SourceOffsetStore
from qryptify.service import service_main
from services.producer.clock import StreamClock
from services.producer.futures import FuturesLive
from services.producer.run import ProducerRunner


def build(cfg: Config, stop: threading.Event, health: Health) -> ProducerRunner:
    ensure_topics(cfg.kafka)
    # Latency over batching: a closed candle goes out at once (idempotent, acks=all).
    producer = make_producer(cfg.kafka, **{"linger.ms": min(cfg.kafka.linger_ms, 1)})
    clock = StreamClock()
    rest = BinanceRest(cfg.rest, clock=clock)
    offsets = SourceOffsetStore(cfg.kafka, producer)
    futures = None
    if cfg.futures.enabled:
        ensure_topics(cfg.kafka, specs=[topic_spec(cfg)])
        futures = FuturesLive(cfg, rest, producer, offsets)
    return ProducerRunner(
        cfg,
        stop,
        health,
        producer=producer,
        rest=rest,
        clock=clock,
        offsets=offsets,
        futures=futures,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return service_main("producer", argv, build, "live producer: Binance WebSocket → Kafka")


if __name__ == "__main__":
    raise SystemExit(main())
