"""Live latency at 500 pairs: x:true frame → Kafka ack, and x:true frame → DB commit.

    .venv/bin/python -m bench.live_latency [--pairs 500] [--speed 60] [--seconds 60]
        [--kafka 127.0.0.1:19092] [--pg postgresql://postgres:postgres@127.0.0.1:15432/postgres]

The simulator (its own process) streams ``--pairs`` 1m pairs at ``--speed``; the real sink runs
as its own process with its default batching; the producer runs in this process so both ends
of each measurement are read on one clock (``time.perf_counter``):

* frame → ack: from the moment the producer read the ``x:true`` frame off the socket to the
  moment librdkafka reported the record acknowledged (acks=all, idempotent);
* frame → DB commit: from the same moment to the moment PostgreSQL delivered the row's
  ``NOTIFY`` (an ``AFTER INSERT OR UPDATE`` trigger on ``candlesticks`` in the bench's own
  database; notifications are delivered only once the sink's transaction committed).

At speed N every 1m candle of all pairs closes at the same simulated instant, so the 500
``x:true`` frames of a minute arrive within a few wall milliseconds (on Binance they spread
over 0.2–2 s): the burst is the hard case. The first ``--warmup`` seconds are not counted.
Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import (
    base_doc,
    database,
    delete_topics,
    kafka_config,
    run_id,
    service,
    simulator,
    write_config,
)
from bench.stats import latency_summary
from qryptify.binance.rest import BinanceRest
from qryptify.config import build_config
from qryptify.kafka import ensure_topics, make_producer
from qryptify.metrics import Health
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair
from services.producer.clock import StreamClock
from services.producer.run import ProducerRunner
from sim.symbols import generated_symbols

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_PG = "postgresql://postgres:postgres@127.0.0.1:15432/postgres"
SIM_START = "2026-01-05T00:00:00Z"

_TRIGGER = """
CREATE OR REPLACE FUNCTION bench_live_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('bench_live', NEW.symbol || '|' || NEW.interval || '|'
                      || (extract(epoch FROM NEW.ts) * 1000)::bigint);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS bench_live_notify ON candlesticks;
CREATE TRIGGER bench_live_notify AFTER INSERT OR UPDATE ON candlesticks
    FOR EACH ROW EXECUTE FUNCTION bench_live_notify();
"""

Key = tuple[str, str, int]


@dataclass
class Samples:
    """Per candle: when its frame was read, when Kafka acked it, when its row committed."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counting: bool = False
    frame: dict[Key, float] = field(default_factory=dict)
    ack: dict[Key, float] = field(default_factory=dict)
    commit: dict[Key, float] = field(default_factory=dict)

    def acked(self, pair: Pair, open_time: int, frame_s: float, ack_s: float) -> None:
        if self.counting:
            key = (pair.symbol, pair.interval, open_time)
            with self.lock:
                self.frame[key] = frame_s
                self.ack[key] = ack_s

    def committed(self, key: Key, at_s: float) -> None:
        with self.lock:
            self.commit.setdefault(key, at_s)


def _listen(dsn: str, samples: Samples, stop: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN bench_live")
        while not stop.is_set():
            for note in conn.notifies(timeout=0.2):
                at = time.perf_counter()
                symbol, interval, ts = note.payload.split("|")
                samples.committed((symbol, interval, int(ts)), at)


def measure(
    kafka_bootstrap: str = DEFAULT_KAFKA,
    admin_dsn: str = DEFAULT_PG,
    workdir: Path = Path("/tmp/qryptify-bench-live"),
    *,
    pairs: int = 500,
    speed: float = 60.0,
    seconds: float = 60.0,
    warmup_s: float = 10.0,
    check_open_frames: bool = True,
) -> dict[str, Any]:
    """Run the measurement; returns latency summaries (ms) and counts."""
    rid = run_id()
    kafka = kafka_config(kafka_bootstrap, f"bench-livelat-{rid}", 6)
    symbols = generated_symbols(pairs)
    pair_names = [f"{s.symbol}/1m" for s in symbols]
    samples = Samples()
    try:
        with (
            database(admin_dsn, f"bench_live_{rid}") as dsn,
            simulator(workdir, symbols, start=SIM_START, speed=speed, name="sim-livelat") as sim,
        ):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(_TRIGGER.encode())
            doc = base_doc(pairs=pair_names, kafka=kafka, dsn=dsn, sim_url=sim.url)
            doc["sink"] = {"group_id": f"bench-livelat-{rid}"}
            doc["rest"]["time_sync_every_s"] = 1.0
            doc["ws"]["check_open_frames"] = check_open_frames
            sink = service("sink", write_config(workdir / "sink.yaml", doc), workdir)
            cfg = build_config(doc)
            ensure_topics(cfg.kafka)
            stop = threading.Event()
            listener_stop = threading.Event()
            listener = threading.Thread(
                target=_listen, args=(dsn, samples, listener_stop), daemon=True
            )
            listener.start()
            producer = make_producer(cfg.kafka, **{"linger.ms": min(cfg.kafka.linger_ms, 1)})
            clock = StreamClock()
            runner = ProducerRunner(
                cfg,
                stop,
                Health(),
                producer=producer,
                rest=BinanceRest(cfg.rest, clock=clock),
                clock=clock,
                offsets=SourceOffsetStore(cfg.kafka, producer),
                observer=samples.acked,
            )
            outcome: list[int] = []
            thread = threading.Thread(target=lambda: outcome.append(runner.run()), daemon=True)
            thread.start()
            time.sleep(warmup_s)
            samples.counting = True
            time.sleep(seconds)
            samples.counting = False
            stop.set()
            thread.join(timeout=60)
            time.sleep(2.0)  # the sink commits what is left
            listener_stop.set()
            listener.join(timeout=5)
            sink.stop(30)
            sim_stats = sim.stats()
    finally:
        delete_topics(kafka)
    with samples.lock:
        keys = list(samples.frame)
        ack_ms = [(samples.ack[k] - samples.frame[k]) * 1000 for k in keys]
        db_ms = [(samples.commit[k] - samples.frame[k]) * 1000 for k in keys if k in samples.commit]
    return {
        "pairs": pairs,
        "speed": speed,
        "seconds": seconds,
        "check_open_frames": check_open_frames,
        "frame_to_ack_ms": latency_summary(ack_ms),
        "frame_to_db_commit_ms": latency_summary(db_ms),
        "candles": len(keys),
        "candles_without_commit": len(keys) - len(db_ms),
        "producer_exit": outcome[0] if outcome else None,
        "producer": {
            "published_ws": runner.stats.published_ws,
            "published_rest": runner.stats.published_rest,
            "duplicates": runner.stats.duplicates,
            "reconnects": runner.stats.reconnects,
        },
        "sim_frames_sent": sim_stats.get("ws_frames_sent"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument(
        "--closed-only",
        action="store_true",
        help="validate only x:true frames (ws.check_open_frames: false)",
    )
    parser.add_argument("--kafka", default=DEFAULT_KAFKA)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qryptify-bench-live"))
    args = parser.parse_args(argv)
    result = measure(
        args.kafka,
        args.pg,
        args.workdir,
        pairs=args.pairs,
        speed=args.speed,
        seconds=args.seconds,
        warmup_s=args.warmup,
        check_open_frames=not args.closed_only,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
