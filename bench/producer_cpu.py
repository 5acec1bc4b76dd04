"""Producer CPU per 10k closes/s (issue 16's target: ≤ 1 core), start-up left out.

    .venv/bin/python -m bench.producer_cpu --kafka 127.0.0.1:19092 [--pairs 1000] [--speed 60]
        [--warmup 20] [--seconds 40] [--reps 1] [--sim-port 0] [--metrics-port 0]
        [--max-load 3] [--out bench/results/producer-cpu.json]

The producer service runs as its own process on the simulator streaming ``--pairs`` 1m pairs at
``--speed`` (``speed / 60 × pairs`` closes per wall second, each candle with its ``x:false``
updates). After ``--warmup`` seconds (imports, clock sync, connects) the window opens: the
producer's CPU (utime + stime from /proc) and the closes that reached the topic (its high
watermarks) are counted over ``--seconds``. The active core (``QRYPTIFY_NATIVE``) is the
service's, inherited from this process's environment; the load average is printed per
repetition and a repetition is refused above ``--max-load``. Reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import (
    base_doc,
    cpu_seconds,
    delete_topics,
    kafka_config,
    profiled_services,
    run_id,
    service,
    simulator,
    topic_end,
    write_config,
)
from bench.stats import cores_per_10k, ratio
from qryptify import native
from qryptify.avro import KlineCodec
from qryptify.binance.frames import kline_frames
from sim.symbols import generated_symbols

SIM_START = "2026-01-01T00:00:00Z"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime) per thread name of ``pid`` (librdkafka's ``rdk:*`` threads,
    the Kafka poll thread, the event loop's ``MainThread`` as ``python``…), summed by name."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        ticks = os.sysconf("SC_CLK_TCK")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def measure(
    bootstrap: str,
    workdir: Path,
    *,
    pairs: int,
    speed: float,
    warmup_s: float,
    seconds: float,
    sim_port: int,
    metrics_port: int,
    profile: Path | None = None,
) -> dict[str, Any]:
    rid = run_id()
    kafka = kafka_config(bootstrap, f"bench-pcpu-{rid}")
    symbols = generated_symbols(pairs)
    names = [f"{s.symbol}/1m" for s in symbols]
    try:
        with simulator(
            workdir,
            symbols,
            start=SIM_START,
            speed=speed,
            name="sim-pcpu",
            extra=["--port", str(sim_port)],
        ) as sim:
            doc = base_doc(
                pairs=names, kafka=kafka, dsn="postgresql://unused/none", sim_url=sim.url
            )
            doc["metrics"] = {"port": metrics_port}
            config = write_config(workdir / "producer.yaml", doc)
            with profiled_services(**({"producer": profile} if profile else {})):
                proc = service("producer", config, workdir)
            time.sleep(warmup_s)
            load = os.getloadavg()
            frames0 = sim.stats().get("ws_frames_sent", 0)
            closes0 = topic_end(kafka)
            cpu0, wall0, threads0 = cpu_seconds(proc.pid), time.monotonic(), thread_cpu(proc.pid)
            time.sleep(seconds)
            cpu1, wall1, threads1 = cpu_seconds(proc.pid), time.monotonic(), thread_cpu(proc.pid)
            closes1 = topic_end(kafka)
            frames1 = sim.stats().get("ws_frames_sent", 0)
            proc.stop()
    finally:
        delete_topics(kafka)
    cpu, wall = cpu1 - cpu0, wall1 - wall0
    closes, frames = closes1 - closes0, frames1 - frames0
    return {
        "core": native.CORE,
        "pairs": pairs,
        "speed": speed,
        "load_average": list(load),
        "window_s": wall,
        "cpu_s": cpu,
        "cores": ratio(cpu, wall),
        "closes": closes,
        "closes_per_s": ratio(float(closes), wall),
        "frames_per_s": ratio(float(frames), wall),
        "cores_per_10k_closes_per_s": cores_per_10k(cpu, float(closes)),
        "cpu_us_per_frame": ratio(cpu * 1e6, float(frames)),
        "cpu_us_per_close_by_thread": {
            name: ratio((spent - threads0.get(name, 0.0)) * 1e6, float(closes))
            for name, spent in sorted(threads1.items())
        },
    }


def decide_cost(frames: int = 20_000, batch: int = 50) -> dict[str, float]:
    """µs of CPU per frame for ``kline_frames`` on exchange-shaped frames — open snapshots
    checked in full (``ws.check_open_frames``, the default) or by shape only, and closes — on
    the compiled core and on the Python twin (in this process, no I/O)."""
    codec = KlineCodec()
    out: dict[str, float] = {}
    cases = (("open_checked", False, False), ("open_shape", False, True), ("close", True, True))
    for name, closed, closed_only in cases:
        raws: list[str | bytes] = [_frame(T0_MS + 60_000 * i, closed) for i in range(batch)]
        for core, native_ok in (("native", True), ("python", False)):
            if native_ok and native.MODULE is None:
                continue
            started = time.process_time()
            for _ in range(frames // batch):
                kline_frames(raws, T0_MS, codec, closed_only=closed_only, native_ok=native_ok)
            spent = time.process_time() - started
            out[f"{name}_{core}_us"] = spent * 1e6 / frames
    return out


T0_MS = 1_767_225_600_000  # 2026-01-01


def _frame(open_time: int, closed: bool) -> str:
    k = {"t": open_time, "T": open_time + 59_999, "s": "BTCUSDT", "i": "1m", "f": 100, "L": 200,
         "o": "87500.10", "c": "87510.00", "h": "87520.50", "l": "87490.00", "v": "12.345",
         "n": 101, "x": closed, "q": "1080000.1", "V": "6.1", "Q": "534000", "B": "0"}  # fmt: skip
    data = {"e": "kline", "E": open_time + 1_000, "s": "BTCUSDT", "k": k}
    return json.dumps({"stream": "btcusdt@kline_1m", "data": data}, separators=(",", ":"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--sim-port", type=int, default=0)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--max-load", type=float, default=1.5 * (os.cpu_count() or 1))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qryptify-bench-pcpu"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="pyinstrument text report of the producer")
    parser.add_argument(
        "--decide-only", action="store_true", help="only the in-process µs per frame, both cores"
    )
    args = parser.parse_args(argv)
    cost = decide_cost()
    print(
        "kline_frames, µs CPU per frame: "
        + ", ".join(f"{name.removesuffix('_us')} {us:.2f}" for name, us in cost.items())
    )
    if args.decide_only:
        return 0
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        load1 = os.getloadavg()[0]
        if load1 > args.max_load:
            print(
                f"rep {rep + 1}: load average {load1:.2f} > --max-load {args.max_load:g}: refused"
            )
            return 2
        run = measure(
            args.kafka,
            args.workdir / f"rep{rep}",
            pairs=args.pairs,
            speed=args.speed,
            warmup_s=args.warmup,
            seconds=args.seconds,
            sim_port=args.sim_port,
            metrics_port=args.metrics_port,
            profile=args.profile,
        )
        runs.append(run)
        la = run["load_average"]
        print(
            f"rep {rep + 1} ({run['core']}): {run['cores_per_10k_closes_per_s']:.2f} cores per 10k "
            f"closes/s ({run['cores']:.2f} cores at {run['closes_per_s']:,.0f} closes/s, "
            f"{run['frames_per_s']:,.0f} frames/s, {run['cpu_us_per_frame']:.1f} µs CPU/frame); "
            f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
        )
        by_thread = run["cpu_us_per_close_by_thread"]
        print(
            "  µs CPU per close by thread: "
            + ", ".join(
                f"{name} {us:.1f}"
                for name, us in sorted(by_thread.items(), key=lambda i: -i[1])
                if us >= 0.5
            )
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"decide_us_per_frame": cost, "runs": runs}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
