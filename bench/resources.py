"""Figures 6 and 7: each service as its own process at 1,000 pairs against the simulator —
peak RSS (target ≤ 150 MB each) and CPU cores used per 10 k candles/s.

* backfiller: 1,000 pairs × 1m from ``start_date`` to the simulator's ``sim_now`` (weight limit
  off), run to completion (``exit_when_done``); candles = what it published.
* sink: the topic the backfiller just wrote, into a fresh database, until its group has no lag;
  candles = rows in the table.
* producer: 1,000 pairs × 1m live on an accelerated simulator (``live_speed`` sim seconds per
  wall second, i.e. ``live_speed / 60 × 1000`` closes per wall second); after
  ``live_warmup_s`` of start-up, a window of ``live_seconds``: its CPU (/proc) and the closes
  that reached the topic in it. The start-up's CPU is reported apart (``startup_cpu_s``).

Peak RSS is VmHWM from /proc/<pid>/status, sampled every 0.1 s (``bench.harness.Sampler``),
over the whole life; the backfiller's and sink's CPU time comes from ``wait4`` when the
process is reaped (exact over its life; the sink's up to the moment it caught up).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    base_doc,
    cpu_seconds,
    database,
    delete_topics,
    group_lag,
    kafka_config,
    run_id,
    service,
    simulator,
    summary_values,
    table_rows,
    topic_end,
    wait_for,
    write_config,
)
from bench.stats import cores_per_10k, ratio
from sim.symbols import generated_symbols

LIVE_SIM_START = "2026-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class ServiceUsage:
    service: str
    pairs: int
    peak_rss_mb: float
    cpu_s: float
    wall_s: float
    candles: int
    exit_code: int | None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def candles_per_s(self) -> float:
        return ratio(float(self.candles), self.wall_s)

    @property
    def cores_per_10k(self) -> float:
        return cores_per_10k(self.cpu_s, float(self.candles))

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "candles_per_s": self.candles_per_s,
            "cores_per_10k_candles_per_s": self.cores_per_10k,
        }


@dataclass(frozen=True, slots=True)
class ResourceScale:
    pairs: int = 1000
    #: The backfill: from ``start_date`` (midnight) up to the simulator's clock ``sim_now``.
    sim_now: str = "2024-07-10T06:00:00Z"
    start_date: str = "2024-07-10"
    #: The producer: start-up first (not counted), then the measured window.
    live_warmup_s: float = 10.0
    live_seconds: float = 30.0
    live_speed: float = 60.0


QUICK_SCALE = ResourceScale(
    pairs=200, sim_now="2024-07-10T02:00:00Z", live_warmup_s=5.0, live_seconds=15.0
)


def measure_services(
    bootstrap: str, admin_dsn: str, workdir: Path, scale: ResourceScale
) -> dict[str, ServiceUsage]:
    """One repetition: backfiller, then the sink on its output, then the producer."""
    rid = run_id()
    workdir = workdir / f"resources-{rid}"
    pairs = [f"SIM{i:03d}USDT/1m" for i in range(scale.pairs)]
    symbols = generated_symbols(scale.pairs)
    out: dict[str, ServiceUsage] = {}
    kafka = kafka_config(bootstrap, f"bench-res-{rid}")
    try:
        with database(admin_dsn, f"bench_res_{rid}") as dsn:
            with simulator(workdir, symbols, start=scale.sim_now) as sim:
                doc = base_doc(
                    pairs=pairs,
                    kafka=kafka,
                    dsn=dsn,
                    sim_url=sim.url,
                    cache_dir=workdir / "archive-cache",
                )
                doc["backfill"] = {"start_date": scale.start_date, "exit_when_done": True}
                cfg = write_config(workdir / "backfiller.yaml", doc)
                proc = service("backfiller", cfg, workdir)
                code = proc.wait(1800)
                usage = proc.stop()
                summary = summary_values(proc.text())
                published = topic_end(kafka)
                sim_cpu = sim.cpu_s()
                out["backfiller"] = ServiceUsage(
                    "backfiller",
                    scale.pairs,
                    usage.peak_rss_mb,
                    usage.cpu_s,
                    usage.wall_s,
                    published,
                    code,
                    {
                        "archive_candles": float(summary.get("archive_candles", "nan")),
                        "requests": float(summary.get("requests", "nan")),
                        "sim_cpu_s": sim_cpu,
                    },
                )
                if code != 0:
                    raise RuntimeError(f"backfiller exited {code}: {proc.text()[-3000:]}")

            # The sink: everything the backfiller published, into the fresh database.
            doc = base_doc(pairs=pairs, kafka=kafka, dsn=dsn)
            group = f"bench-sink-{rid}"
            doc["sink"] = {"group_id": group}
            cfg = write_config(workdir / "sink.yaml", doc)
            proc = service("sink", cfg, workdir)
            started = time.monotonic()
            caught_up = wait_for(lambda: group_lag(kafka, group) == 0, 1800, "the sink")
            usage = proc.stop()
            rows = table_rows(dsn)
            cpu = usage.cpu_between(0.0, caught_up - proc.sampler.started)
            out["sink"] = ServiceUsage(
                "sink",
                scale.pairs,
                usage.peak_rss_mb,
                cpu or usage.cpu_s,
                caught_up - started,
                rows,
                proc.popen.returncode,
            )
    finally:
        delete_topics(kafka)

    out["producer"] = _measure_producer(bootstrap, admin_dsn, workdir, scale, pairs)
    return out


def _measure_producer(
    bootstrap: str, admin_dsn: str, workdir: Path, scale: ResourceScale, pairs: list[str]
) -> ServiceUsage:
    rid = run_id()
    kafka = kafka_config(bootstrap, f"bench-live-{rid}")
    symbols = generated_symbols(scale.pairs)
    try:
        with simulator(
            workdir, symbols, start=LIVE_SIM_START, speed=scale.live_speed, name="sim-live"
        ) as sim:
            doc = base_doc(pairs=pairs, kafka=kafka, dsn=f"{admin_dsn}", sim_url=sim.url)
            cfg = write_config(workdir / "producer.yaml", doc)
            proc = service("producer", cfg, workdir)
            # CPU per close is a steady-state rate: the window opens after start-up (imports,
            # connects, the REST catch-up of every pair), whose CPU is reported apart.
            time.sleep(scale.live_warmup_s)
            opened = time.monotonic()
            cpu0, closes0 = cpu_seconds(proc.popen.pid), topic_end(kafka)
            frames0 = sim.stats().get("ws_frames_sent", 0)
            time.sleep(scale.live_seconds)
            window = time.monotonic() - opened
            cpu1, closes1 = cpu_seconds(proc.popen.pid), topic_end(kafka)
            stats = sim.stats()
            frames = stats.get("ws_frames_sent", 0) - frames0
            sim_cpu = sim.cpu_s()
            usage = proc.stop()
            published = topic_end(kafka)
            cpu, closes = cpu1 - cpu0, closes1 - closes0
            return ServiceUsage(
                "producer",
                scale.pairs,
                usage.peak_rss_mb,
                cpu,
                window,
                closes,
                proc.popen.returncode,
                {
                    "frames": float(frames),
                    "frames_per_s": ratio(float(frames), window),
                    "cores_per_10k_frames_per_s": cores_per_10k(cpu, float(frames)),
                    "startup_cpu_s": cpu0,
                    "lifetime_cpu_s": usage.cpu_s,
                    "lifetime_closes": float(published),
                    "sim_cpu_s": sim_cpu,
                    "sim_sender_late_ms_max": float(stats.get("ws_sender_late_ms_max", 0)),
                },
            )
    finally:
        delete_topics(kafka)
