"""Simulator benchmark: WebSocket fan-out and market generation cost.

    .venv/bin/python -m bench.sim_throughput [--seconds 20] [--speed 60] [--connections 5]
                                             [--streams 1000] [--json]

1. Streams: starts ``python -m sim`` as its own process (so server and clients each get a core),
   opens ``--connections`` combined-stream connections carrying ``--streams`` distinct kline
   streams (generated symbols × all 15 intervals), and for ``--seconds`` counts frames/s and
   checks every close: exactly one ``x:true`` per candle that closed during the run, and its
   lag = (sim time at arrival − candle close) against the exchange's 0.2–2 s.
2. Generation: in-process cost of a 1500-row 1m REST page (rows + JSON) on cold and cached
   days, and of a monthly 1m archive zip (rows + CSV + deflate + sha256); then the same two
   over HTTP from the running simulator. Projects 8 pairs × 1m × 1 year.

Numbers are printed, never asserted: ``make bench`` measures, tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

from qryptify.pairs import DAY_MS, INTERVALS, ceil_open, close_time, next_open
from sim.archive import archive_url_path, build_zip, parse_archive_path
from sim.bars import Availability
from sim.market import Market
from sim.symbols import DEFAULT_SYMBOLS, generated_symbols, symbols_to_yaml
from sim.wire import csv_bytes, rest_rows_json

REPO = Path(__file__).resolve().parents[1]
START = "2024-09-01T00:00:00Z"
START_MS = 1_725_148_800_000
YEAR_START_MS = 1_693_526_400_000  # 2023-09-01


@dataclass(slots=True)
class StreamLog:
    """What one stream received: open times of x:true frames and their arrival lags."""

    closes: list[int] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    server_delays_ms: list[int] = field(default_factory=list)
    updates: int = 0


@dataclass(slots=True)
class Run:
    frames: int = 0
    bytes: int = 0
    streams: dict[str, StreamLog] = field(default_factory=dict)


def stream_names(count: int) -> tuple[list[str], int]:
    symbols = -(-count // len(INTERVALS))
    specs = generated_symbols(symbols)
    names = [f"{s.symbol.lower()}@kline_{i}" for s in specs for i in INTERVALS][:count]
    return names, symbols


def start_sim(symbol_file: Path, speed: float) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim",
            "--symbols",
            str(symbol_file),
            "--speed",
            str(speed),
            "--start",
            START,
            "--weight-limit",
            "1000000",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("sim listening on "):
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, line.removeprefix("sim listening on ")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def consume(url: str, run: Run, sim_at: Any, warmup_until: float) -> None:
    """Read frames until cancelled. ``async for`` (no per-frame timeout task) keeps the client
    cheap, so the numbers describe the server rather than the benchmark's own overhead."""
    loop = asyncio.get_running_loop()
    async with websockets.connect(url, max_size=1 << 22, max_queue=4096, open_timeout=60) as ws:
        async for message in ws:
            now = loop.time()
            if now < warmup_until:
                continue
            text = message if isinstance(message, str) else message.decode()
            run.frames += 1
            run.bytes += len(text)
            if '"x":true' not in text:
                # Cheap path: only the stream name is needed for x:false frames.
                name = text[11 : text.index('"', 11)]
                run.streams.setdefault(name, StreamLog()).updates += 1
                continue
            frame = json.loads(text)
            log = run.streams.setdefault(frame["stream"], StreamLog())
            k = frame["data"]["k"]
            log.closes.append(k["t"])
            log.lags_ms.append(sim_at(now) - (k["T"] + 1))
            log.server_delays_ms.append(frame["data"]["E"] - (k["T"] + 1))


def bench_streams(args: argparse.Namespace) -> dict[str, Any]:
    names, symbol_count = stream_names(args.streams)
    with tempfile.TemporaryDirectory() as tmp:
        symbol_file = Path(tmp) / "symbols.yaml"
        symbol_file.write_text(symbols_to_yaml(generated_symbols(symbol_count)))
        proc, url = start_sim(symbol_file, args.speed)
        try:
            return asyncio.run(_streams(args, names, url, proc.pid)) | {"url": url}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


async def _streams(
    args: argparse.Namespace, names: list[str], url: str, pid: int
) -> dict[str, Any]:
    per_conn = -(-len(names) // args.connections)
    groups = [names[i : i + per_conn] for i in range(0, len(names), per_conn)]
    ws_base = url.replace("http://", "ws://")
    # Map client wall time to sim time from the quickest of several round trips.
    samples: list[tuple[float, float, int, float]] = []
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(8):
            t0 = asyncio.get_running_loop().time()
            clock = (await http.get("/sim/clock")).json()
            t1 = asyncio.get_running_loop().time()
            samples.append((t1 - t0, (t0 + t1) / 2, int(clock["now"]), float(clock["speed"])))
    rtt, wall_ref, sim_ref, speed = min(samples)

    def sim_at(wall: float) -> float:
        return sim_ref + (wall - wall_ref) * 1000.0 * speed

    loop = asyncio.get_running_loop()
    run = Run()
    warmup = 3.0
    begin = loop.time()
    warmup_until = begin + warmup
    stop_at = warmup_until + args.seconds
    cpu0 = cpu_seconds(pid)
    tasks = [
        asyncio.create_task(
            consume(f"{ws_base}/market/stream?streams={'/'.join(g)}", run, sim_at, warmup_until)
        )
        for g in groups
    ]
    await asyncio.sleep(warmup)
    cpu_warm = cpu_seconds(pid)
    client_cpu0 = time.process_time()
    await asyncio.sleep(stop_at - loop.time())
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    cpu_end = cpu_seconds(pid)
    async with httpx.AsyncClient(base_url=url) as http:
        server_stats = (await http.get("/sim/stats")).json()
    client_cpu = time.process_time() - client_cpu0
    window_start_sim = sim_at(warmup_until)
    window_end_sim = sim_at(stop_at)
    return summarise(run, names, args, window_start_sim, window_end_sim) | {
        "server_cpu_pct": round(100 * (cpu_end - cpu_warm) / args.seconds, 1),
        "client_cpu_pct": round(100 * client_cpu / args.seconds, 1),
        "load_average_1m": os.getloadavg()[0],
        "server_cpu_startup_s": round(cpu_warm - cpu0, 2),
        "connections": len(groups),
        "clock_sync_rtt_ms": round(rtt * 1000, 2),
        "server_sender_late_ms_max": server_stats["ws_sender_late_ms_max"],
        "server_send_blocked_ms_total": server_stats["ws_send_blocked_ms"],
    }


def summarise(
    run: Run, names: list[str], args: argparse.Namespace, lo_sim: float, hi_sim: float
) -> dict[str, Any]:
    lags: list[float] = []
    delays: list[int] = []
    missing = duplicates = expected = 0
    margin = 3000  # sim ms: closes right at the window edges may fall either side
    for name in names:
        interval = name.rsplit("_", 1)[1]
        log = run.streams.get(name, StreamLog())
        lags.extend(log.lags_ms)
        delays.extend(log.server_delays_ms)
        seen = set(log.closes)
        duplicates += len(log.closes) - len(seen)
        # Candles whose x:true was due well inside the window.
        t = _first_open(interval, lo_sim + margin)
        while close_time(interval, t) + 2000 + margin < hi_sim:
            expected += 1
            if t not in seen:
                missing += 1
            t = next_open(interval, t)
    lags.sort()

    def pct(p: float) -> float:
        return round(lags[min(len(lags) - 1, int(p * len(lags)))], 1) if lags else float("nan")

    on_time = sum(1 for lag in lags if lag <= 2000)
    return {
        "streams": len(names),
        "seconds": args.seconds,
        "speed": args.speed,
        "frames": run.frames,
        "frames_per_s": round(run.frames / args.seconds, 1),
        "mb_per_s": round(run.bytes / args.seconds / 1e6, 2),
        "streams_with_frames": sum(1 for n in names if n in run.streams),
        "closes_received": len(lags),
        "closes_expected_in_window": expected,
        "closes_missing": missing,
        "closes_duplicated": duplicates,
        "close_lag_sim_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0)},
        "close_lag_wall_ms_p95": round(pct(0.95) / args.speed, 1) if lags else None,
        "closes_within_2s_sim_pct": round(100 * on_time / len(lags), 1) if lags else None,
        "server_E_minus_close_ms": {
            "min": min(delays) if delays else None,
            "median": statistics.median(delays) if delays else None,
            "max": max(delays) if delays else None,
        },
    }


def _first_open(interval: str, sim_ms: float) -> int:
    return ceil_open(interval, int(sim_ms))


def bench_generation(http_url: str | None) -> dict[str, Any]:
    """In-process cost, as wall and CPU time (CPU time is less distorted on a busy machine)."""
    spec = next(s for s in DEFAULT_SYMBOLS if s.symbol == "BTCUSDT")
    avail = Availability.build(spec.onboard_ms, None)

    def pages(market: Market, count: int) -> tuple[float, float, int]:
        wall, cpu = time.perf_counter(), time.process_time()
        start, size = YEAR_START_MS, 0
        for _ in range(count):
            cols = market.select(spec, "1m", start, None, 1500, avail, START_MS)
            size = len(rest_rows_json(spec, cols))
            start = cols.open_time[-1] + 60_000
        return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count, size

    market = Market(DEFAULT_SYMBOLS)
    cold_wall, cold_cpu, body_size = pages(market, 40)
    warm_wall, warm_cpu, _ = pages(market, 40)
    months = 3
    market = Market(DEFAULT_SYMBOLS)  # cold caches: every day of the month is generated
    phase = {"rows": 0.0, "csv": 0.0, "zip": 0.0}
    wall, cpu, size = time.perf_counter(), time.process_time(), 0
    for m in range(months):
        period = YEAR_START_MS + m * 31 * DAY_MS
        file = parse_archive_path(archive_url_path("monthly", "BTCUSDT", "1m", period))
        assert file is not None
        t0 = time.process_time()
        rows = market.closed_klines(spec, "1m", file.start_ms, file.end_ms - 1, avail)
        t1 = time.process_time()
        body = csv_bytes(spec, rows)
        t2 = time.process_time()
        built = build_zip(file, body)
        t3 = time.process_time()
        phase["rows"] += t1 - t0
        phase["csv"] += t2 - t1
        phase["zip"] += t3 - t2
        size += len(built.zip_bytes)
    archive_wall = (time.perf_counter() - wall) / months
    archive_cpu = (time.process_time() - cpu) / months
    result: dict[str, Any] = {
        "rest_page_1500x1m_cold_ms": {"wall": _ms(cold_wall), "cpu": _ms(cold_cpu)},
        "rest_page_1500x1m_cached_ms": {"wall": _ms(warm_wall), "cpu": _ms(warm_cpu)},
        "rest_candles_per_cpu_s_cold": round(1500 / cold_cpu),
        "rest_page_json_bytes": body_size,
        "archive_month_1m_ms": {"wall": _ms(archive_wall), "cpu": _ms(archive_cpu)},
        "archive_month_1m_cpu_ms_by_phase": {k: _ms(v / months) for k, v in phase.items()},
        "archive_month_1m_zip_mb": round(size / months / 1e6, 2),
        "archive_candles_per_cpu_s": round(44640 / archive_cpu),
    }
    if http_url:
        result |= _generation_over_http(http_url)
    year_candles = 8 * 525_600
    result["projection_8_pairs_1y_1m_cpu_s"] = {
        "candles": year_candles,
        "via_archive": round(8 * 12 * archive_cpu, 1),
        "via_rest": round(year_candles / 1500 * cold_cpu, 1),
    }
    result["load_average_1m"] = os.getloadavg()[0]
    return result


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _generation_over_http(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        pages = 20
        start = YEAR_START_MS + 200 * DAY_MS
        t = time.perf_counter()
        for _ in range(pages):
            rows = http.get(
                "/fapi/v1/klines",
                params={"symbol": "BTCUSDT", "interval": "1m", "startTime": start, "limit": 1500},
            ).json()
            start = rows[-1][0] + 60_000
        out["http_rest_page_ms"] = round((time.perf_counter() - t) / pages * 1000, 1)
        t = time.perf_counter()
        months = 3
        for m in range(months):
            period = YEAR_START_MS + (m + 6) * 31 * DAY_MS
            r = http.get(archive_url_path("monthly", "ETHUSDT", "1m", period))
            r.raise_for_status()
        out["http_archive_month_1m_ms"] = round((time.perf_counter() - t) / months * 1000, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sim_throughput")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=5)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--skip-streams", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    if not args.skip_streams:
        report["streams"] = bench_streams(args)
    with tempfile.TemporaryDirectory() as tmp:
        symbol_file = Path(tmp) / "symbols.yaml"
        symbol_file.write_text(symbols_to_yaml(DEFAULT_SYMBOLS))
        proc, url = start_sim(symbol_file, 1.0)
        try:
            report["generation"] = bench_generation(url)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
