"""The live producer end to end: simulator (accelerated clock, faults) → producer (subprocess)
→ real Kafka → the real sink (subprocess) → real PostgreSQL, compared row by row with the
simulator's truth for the producer's live window.

The window starts right after a seeded source offset (so the producer's own gap fill at start
is part of what is checked) and ends a little before the producer is stopped. No assertion is
about timing; waits are hang guards scaled by QRYPTIFY_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from qryptify import db
from qryptify.config import KafkaConfig
from qryptify.kafka import headers_dict, make_consumer, make_producer
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import HOUR_MS, Pair, align_open, interval_ms
from sim.check import compare_db_with_truth, format_report
from sim.server import SimulatorThread
from sim.symbols import generated_symbols
from tests.integration.conftest import unique
from tests.support.processes import TIMEOUT_FACTOR as FACTOR
from tests.support.processes import Service, free_port, spawn, wait_until

pytestmark = pytest.mark.e2e

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class Live:
    """One simulator + config; starts producer and sink processes on demand."""

    sim: SimulatorThread
    kafka: KafkaConfig
    dsn: str
    pairs: tuple[Pair, ...]
    tmp: Path
    ws: dict[str, Any]
    metrics_port: int = field(default_factory=free_port)
    services: list[Service] = field(default_factory=list)
    runs: int = 0

    def config_path(self) -> Path:
        doc = {
            "pairs": [str(p) for p in self.pairs],
            # The simulator's legacy /stream path: the producer must rewrite it to /market.
            "rest": {"endpoint": self.sim.url, "time_sync_every_s": 0.5, "timeout_s": 30},
            "ws": {"endpoint": f"{self.sim.ws_url}/stream", **self.ws},
            "db": {"dsn": self.dsn},
            "kafka": self.kafka.model_dump(mode="json"),
            "sink": {"group_id": f"sink-{self.tmp.name}", "max_latency_ms": 50},
            # producer serves metrics on base + 1
            "metrics": {"host": "127.0.0.1", "port": self.metrics_port - 1},
            "log": {"level": "INFO", "format": "human"},
        }
        path = self.tmp / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def start(self, module: str) -> Service:
        self.runs += 1
        log = self.tmp / f"{module.rsplit('.', 1)[-1]}-{self.runs}.log"
        service = Service(module, spawn(module, ["--config", str(self.config_path())], log), log)
        self.services.append(service)
        return service

    def metrics(self) -> dict[str, float]:
        """The producer's Prometheus samples, ``name{labels}`` → value."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("qryptify_producer_"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def metric_sum(self, samples: dict[str, float], prefix: str) -> float:
        return sum(v for k, v in samples.items() if k.startswith(prefix))

    def cleanup(self) -> None:
        for service in self.services:
            if service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait()


def seed_offsets(kafka: KafkaConfig, frontiers: dict[Pair, int]) -> None:
    """Where the producer's responsibility starts (as if it had run before)."""
    producer = make_producer(kafka)
    store = SourceOffsetStore(kafka, producer)
    for pair, open_time in frontiers.items():
        store.commit("producer", pair, open_time)
    assert store.flush(30) == 0


def db_through(dsn: str, pairs: Sequence[Pair], end_ms: int) -> bool:
    """True when sync_state of every pair reached the last candle before ``end_ms``."""
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, interval, (extract(epoch FROM last_closed_ts) * 1000)::bigint"
            " FROM sync_state"
        ).fetchall()
    state = {(r[0], r[1]): int(r[2]) for r in rows}
    return all(
        state.get((p.symbol, p.interval), -1) >= end_ms - interval_ms(p.interval) for p in pairs
    )


def dlq_records(kafka: KafkaConfig, at_least: int) -> list[dict[str, bytes]]:
    consumer = make_consumer(kafka, unique("dlq-reader"))
    consumer.subscribe([kafka.dlq_topic])
    found: list[dict[str, bytes]] = []
    deadline = time.monotonic() + 30 * FACTOR
    try:
        while time.monotonic() < deadline and len(found) < at_least:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    found.append({**headers_dict(msg), "value": msg.value() or b""})
    finally:
        consumer.close()
    return found


@pytest.fixture
def live_factory(
    kafka_cfg: KafkaConfig,
    db_dsn: str,
    tmp_path: Path,
) -> Iterator[Callable[..., Live]]:
    made: list[tuple[Live, SimulatorThread]] = []

    def make(pairs: Sequence[Pair], sim: SimulatorThread, **ws: Any) -> Live:
        live = Live(sim, kafka_cfg, db_dsn, tuple(pairs), tmp_path, ws)
        made.append((live, sim))
        return live

    yield make
    for live, _sim in made:
        live.cleanup()


def settle(live: Live, start_ms: int, end_ms: int, timeout_s: float) -> None:
    """Wait (producer and sink still running) until the window matches the truth, or give up
    at the timeout and let ``check_window`` report. On a loaded machine the REST catch-up
    after the last fault can take a while: the claim is "eventually complete", not "fast"."""
    deadline = time.monotonic() + timeout_s * FACTOR
    pairs = list(live.pairs)
    while time.monotonic() < deadline:
        if compare_db_with_truth(live.dsn, live.sim.url, pairs, start_ms, end_ms).ok:
            return
        time.sleep(2.0)


def check_window(live: Live, start_ms: int, end_ms: int, context: object = "") -> None:
    report = compare_db_with_truth(live.dsn, live.sim.url, list(live.pairs), start_ms, end_ms)
    assert report.ok, f"{format_report(report)}\n{context}"
    truth_rows = sum(p.truth_rows for p in report.pairs)
    assert truth_rows > 0
    assert all(p.truth_rows > 0 for p in report.pairs)


# -----------------------------------------------------------------------------------------------


def test_200_pairs_two_connections_30_sim_hours_faults_match_truth(
    live_factory: Callable[..., Live],
    kafka_cfg: KafkaConfig,
) -> None:
    """200 pairs over 2 connections, > 30 simulated hours crossing the 24 h connection limit,
    WS drops every 2 s, 5 % skipped x:true, 1 % duplicated, 1 % malformed → 0 missing,
    0 extra, 0 wrong against truth.

    Drops every 2 wall seconds never let a connection grow 24 h old, so the run has a drop-free
    phase of > 24 sim hours (at a higher speed) in which the connections must be rotated before
    the simulator's cut; the drops run at a lower speed before and after it.
    """
    # The simulator limits REST weight per WALL minute (2400): at 1800x the watchdog's fetches
    # for 6 % lost closes (skipped + malformed) of 200 pairs use about half of it.
    slow, fast = 600.0, 1800.0
    symbols = generated_symbols(100)
    pairs = [Pair(s.symbol, iv) for s in symbols for iv in ("15m", "1h")]
    faults = {
        "ws_drop_every_s": 2.0,
        "ws_skip_close_rate": 0.05,
        "ws_duplicate_close_rate": 0.01,
        "ws_malformed_rate": 0.01,
    }
    with SimulatorThread(speed=slow, start_ms=START_MS, symbols=symbols, faults=faults) as sim:
        live = live_factory(
            pairs,
            sim,
            max_streams_per_connection=100,
            watchdog_grace_ms=300_000,  # 5 sim minutes: 0.5 s wall at 600x, 0.17 s at 1800x
            watchdog_retry_ms=300_000,
            stale_min_wall_s=1.5,
            connect_spacing_ms=50,
            reconnect_initial_s=0.05,
            reconnect_max_s=1.0,
            # 21 h: at 1800x one sim hour is two wall seconds; on a loaded machine a handover
            # can take that long, and the margin to the simulator's 24 h cut must cover it.
            rotate_after_s=21 * 3600,
            rotate_stagger_s=600,
            handover_timeout_s=5,
            rest_concurrency=16,
        )
        window_start = align_open("1h", sim.now_ms())
        seed_offsets(kafka_cfg, {p: window_start - interval_ms(p.interval) for p in pairs})
        sink = live.start("services.sink")
        producer = live.start("services.producer")
        sim_t0 = window_start

        def sim_hours() -> float:
            return (sim.now_ms() - sim_t0) / HOUR_MS

        # Phase A: drops every 2 s wall (every ~20 sim minutes at 600x).
        wait_until(lambda: sim_hours() >= 2, 60, "2 sim hours")
        # Phase B: no drops for 27 sim hours: connections must be rotated before the cut.
        sim.set_faults(ws_drop_every_s=0.0)
        sim.set_speed(fast)
        wait_until(lambda: sim_hours() >= 29, 60, "29 sim hours")
        mid = live.metrics()
        # Phase C: drops again.
        sim.set_speed(slow)
        sim.set_faults(ws_drop_every_s=2.0)
        wait_until(lambda: sim_hours() >= 31, 60, "31 sim hours")
        sim.reset_faults()
        wait_until(lambda: sim_hours() >= 32.3, 60, "32.3 sim hours")
        window_end = align_open("1h", sim.now_ms()) - HOUR_MS
        settle(live, window_start, window_end, 120)
        final = live.metrics()
        assert producer.stop() == 0, producer.text()[-3000:]
        assert sink.stop() == 0, sink.text()[-3000:]

        assert window_end - window_start >= 30 * HOUR_MS
        stats = sim.stats()
        lagging = [line for line in producer.text().splitlines() if "missing:" in line]
        check_window(live, window_start, window_end, (stats, final, lagging))

    summary = {k: v for k, v in final.items() if "_bucket" not in k and "created" not in k}
    print("simulator:", stats, "\nproducer:", summary)  # the figures, with pytest -s
    log = producer.text()
    assert "rewritten" in log and "/market/stream" in log  # the legacy URL, warned once
    assert log.count("rewritten to") == 1
    assert stats["ws_malformed_sent"] > 0 and stats["ws_drops"] >= 6
    assert stats["responses_429"] == 0 and stats["responses_418"] == 0
    # Every fault was seen and handled.
    assert live.metric_sum(final, "qryptify_producer_duplicates_total") > 0
    assert live.metric_sum(final, "qryptify_producer_malformed_frames_total") > 0
    assert final["qryptify_producer_watchdog_fetches_total"] > 0
    assert final["qryptify_producer_gap_fill_fetches_total"] > 0
    assert final['qryptify_producer_reconnects_total{reason="dropped"}'] >= 6
    # Both connections were rotated during the drop-free 27 sim hours, before the cut.
    assert mid["qryptify_producer_rotations_total"] >= 2
    assert not any("server_close_1001" in k for k in final), final
    # Malformed frames went to the DLQ with their reason, source and stream.
    malformed = int(live.metric_sum(final, "qryptify_producer_malformed_frames_total"))
    records = dlq_records(kafka_cfg, malformed)
    assert len(records) >= malformed
    assert all(r["qryptify.source"] == b"ws" for r in records)
    assert all(r["qryptify.reason"] and r["qryptify.stream"] for r in records)


def test_kill9_for_a_sim_minute_then_restart_fills_the_gap(
    live_factory: Callable[..., Live],
    kafka_cfg: KafkaConfig,
) -> None:
    speed = 30.0
    symbols = generated_symbols(10)
    pairs = [Pair(s.symbol, "1m") for s in symbols]
    with SimulatorThread(speed=speed, start_ms=START_MS, symbols=symbols) as sim:
        live = live_factory(pairs, sim, watchdog_grace_ms=5_000, stale_min_wall_s=1.5)
        window_start = align_open("1m", sim.now_ms())
        seed_offsets(kafka_cfg, {p: window_start - 60_000 for p in pairs})
        sink = live.start("services.sink")
        producer = live.start("services.producer")
        wait_until(lambda: sim.now_ms() >= window_start + 4 * 60_000, 60, "4 sim minutes")
        wait_until(
            lambda: db_through(live.dsn, pairs, window_start + 3 * 60_000), 60, "first candles"
        )
        producer.kill9()
        killed_at = sim.now_ms()
        # Down for more than a sim minute: at least two candles close meanwhile.
        wait_until(lambda: sim.now_ms() >= killed_at + 150_000, 60, "2.5 sim minutes")
        producer = live.start("services.producer")
        wait_until(lambda: sim.now_ms() >= killed_at + 5 * 60_000, 60, "5 more sim minutes")
        window_end = align_open("1m", sim.now_ms()) - 60_000
        settle(live, window_start, window_end, 60)
        restarted = live.metrics()
        assert producer.stop() == 0, producer.text()[-3000:]
        assert sink.stop() == 0
        assert window_start < killed_at < window_end
        check_window(live, window_start, window_end)
    # The restarted producer filled the gap by REST from its own resume point.
    from_rest = live.metric_sum(restarted, "qryptify_producer_rest_klines_total")
    assert from_rest >= 2 * len(pairs), restarted
    assert re.search(r"\d+ pairs resume from their stored offsets", producer.text())


def test_stalled_connection_is_replaced_and_the_watchdog_fetches_meanwhile(
    live_factory: Callable[..., Live],
    kafka_cfg: KafkaConfig,
) -> None:
    """The server keeps the socket open but sends nothing (no frames, no pings, no pongs):
    candles keep arriving by REST (watchdog), the silent connection is replaced."""
    symbols = generated_symbols(6)
    pairs = [Pair(s.symbol, "1m") for s in symbols]
    with SimulatorThread(speed=60, start_ms=START_MS, symbols=symbols) as sim:
        live = live_factory(pairs, sim, watchdog_grace_ms=3_000, stale_min_wall_s=1.0)
        window_start = align_open("1m", sim.now_ms())
        seed_offsets(kafka_cfg, {p: window_start - 60_000 for p in pairs})
        sink = live.start("services.sink")
        producer = live.start("services.producer")
        wait_until(lambda: sim.now_ms() >= window_start + 3 * 60_000, 60, "3 sim minutes")
        sim.set_faults(ws_stall=True)
        stalled_at = sim.now_ms()
        wait_until(lambda: sim.now_ms() >= stalled_at + 5 * 60_000, 60, "5 stalled minutes")
        during = live.metrics()
        sim.reset_faults()
        wait_until(lambda: sim.now_ms() >= stalled_at + 8 * 60_000, 60, "3 more minutes")
        window_end = align_open("1m", sim.now_ms()) - 60_000
        settle(live, window_start, window_end, 60)
        assert producer.stop() == 0, producer.text()[-3000:]
        assert sink.stop() == 0
        check_window(live, window_start, window_end, during)
    assert during.get('qryptify_producer_reconnects_total{reason="stale"}', 0) >= 1, during
    # Meanwhile candles came by REST: the watchdog and the gap fill after each replacement.
    assert during['qryptify_producer_rest_klines_total{reason="watchdog"}'] > 0, during
    assert live.metric_sum(during, "qryptify_producer_rest_klines_total") >= 4 * len(pairs)
    assert "silent for" in producer.text()


def test_server_pings_are_answered(
    live_factory: Callable[..., Live],
    kafka_cfg: KafkaConfig,
) -> None:
    """The server pings (here every 0.3 s) and disconnects a client that does not pong within
    1 s (Binance: 3 min / 10 min); the producer's connection survives."""
    symbols = generated_symbols(2)
    pairs = [Pair(s.symbol, "1m") for s in symbols]
    with SimulatorThread(
        speed=60, start_ms=START_MS, symbols=symbols, ping_interval_s=0.3, pong_timeout_s=1.0
    ) as sim:
        live = live_factory(pairs, sim, ping_interval_s=0)  # no client pings: only answers
        seed_offsets(kafka_cfg, {p: align_open("1m", sim.now_ms()) - 60_000 for p in pairs})
        producer = live.start("services.producer")
        wait_until(lambda: sim.stats()["ws_pings_sent"] >= 10, 60, "10 server pings")
        samples = live.metrics()
        assert producer.stop() == 0
        stats = sim.stats()
    assert stats["ws_connections_total"] == 1, stats
    assert live.metric_sum(samples, "qryptify_producer_reconnects_total") == 0, samples
