"""Backfill throughput against the simulator and the real Kafka (no database, no sink):

* ``rest``    — REST only, unthrottled (the simulator's weight limit out of the way);
* ``archive`` — the bulk archive path (monthly + daily zips, REST for the tail);
* ``weight``  — REST only under the exchange's 2400 weight/minute (60 s windows, pages of
  499 = weight 2), measured in steady state: candles/s and the weight used as a share of the
  limit, counted by the simulator.

Each run: a simulator subprocess (its clock frozen at ``sim_now`` so "closed" stays put), a
fresh topic set, the backfiller as a subprocess (``python -m services.backfiller``), its
summary line parsed. Run alone::

    .venv/bin/python -m bench.backfill_figures [--kafka 127.0.0.1:19092] [--quick]
                                               [--only rest,archive,weight]

``bench/figures.py`` (``make bench``) calls ``measure``. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.harness import (
    Proc,
    Sim,
    delete_topics,
    kafka_config,
    run_id,
    service,
    simulator,
    topic_end,
)
from qryptify.config import KafkaConfig
from qryptify.kafka import (
    ensure_topics,
    make_producer,
    produce_waiting,
)
from qryptify.pairs import align_open, parse_pair
from qryptify.planning import archive_min_candles, plan_archive
from sim.symbols import DEFAULT_SYMBOLS, parse_time_ms

MODES = ("rest", "archive", "weight")
WEIGHT_LIMIT = 2400
FROZEN = 1e-6


@dataclass(frozen=True, slots=True)
class BackfillScale:
    pairs: tuple[str, ...] = ("BTCUSDT/1m", "ETHUSDT/1m", "BNBUSDT/1m", "XRPUSDT/1m")
    start_date: str = "2024-03-01"
    sim_now: str = "2024-07-10T12:34:30Z"
    #: weight-limited run: more history (it must outlast the run), total seconds, and the
    #: warm-up (the first minute) excluded from the steady state
    weight_pairs: tuple[str, ...] = (
        "BTCUSDT/1m", "ETHUSDT/1m", "BNBUSDT/1m", "XRPUSDT/1m",
        "LTCUSDT/1m", "LINKUSDT/1m", "ADAUSDT/1m", "DOGEUSDT/1m",
    )  # fmt: skip
    weight_start_date: str = "2023-07-01"
    weight_seconds: float = 245.0
    warmup_s: float = 65.0
    #: At most this many whole windows are measured (0: as many as end by ``weight_seconds``).
    max_windows: int = 0


QUICK = BackfillScale(start_date="2024-06-01", weight_seconds=150.0)


def say(message: str) -> None:
    print(f"backfill-bench: {message}", flush=True)


def summary_of(log_text: str) -> dict[str, float]:
    lines = [line for line in log_text.splitlines() if "backfill summary:" in line]
    if not lines:
        raise RuntimeError(f"no backfill summary in the log:\n{log_text[-2000:]}")
    out: dict[str, float] = {}
    for token in lines[-1].split("backfill summary:", 1)[1].split():
        key, sep, value = token.partition("=")
        if sep:
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def backfill_simulator(
    workdir: Path, mode: str, scale: BackfillScale, extra: Sequence[str] = ()
) -> contextlib.AbstractContextManager[Sim]:
    """The simulator a run of ``mode`` backfills from: its clock frozen at ``sim_now``."""
    return simulator(
        workdir,
        DEFAULT_SYMBOLS,
        start=scale.sim_now,
        speed=FROZEN,
        weight_limit=WEIGHT_LIMIT if mode == "weight" else 1_000_000_000,
        extra=extra,
        name=f"sim-{mode}",
    )


def measure(
    kafka_bootstrap: str,
    workdir: Path,
    mode: str,
    scale: BackfillScale,
    sim: Sim | None = None,
) -> dict[str, Any]:
    """One run of ``mode`` (against ``sim`` when given, else a simulator of its own); returns
    the figures and the raw counters."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    limited = mode == "weight"
    kafka = kafka_config(kafka_bootstrap, f"bench-backfill-{mode}-{run_id()}", 6)
    ensure_topics(kafka)
    own = backfill_simulator(workdir, mode, scale) if sim is None else contextlib.nullcontext(sim)
    try:
        with own as sim:
            config = workdir / f"backfiller-{mode}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "pairs": list(scale.weight_pairs if limited else scale.pairs),
                        "rest": {"endpoint": sim.url, "timeout_s": 60},
                        "archive": {
                            "endpoint": sim.url,
                            "enabled": mode == "archive",
                            "cache_dir": str(workdir / f"archive-cache-{run_id()}"),
                        },
                        # no database in these runs: the gap finder is skipped
                        "db": {"dsn": "postgresql://bench:bench@127.0.0.1:1/none"},
                        "kafka": kafka.model_dump(mode="json"),
                        "backfill": {
                            "start_date": scale.weight_start_date if limited else scale.start_date,
                            "exit_when_done": True,
                        },
                        "metrics": {"port": 0},
                        "log": {"level": "INFO", "format": "human"},
                    }
                )
            )
            proc = service("backfiller", config, workdir, tag=f"-{mode}")
            result: dict[str, Any] = {"mode": mode, "scale": asdict(scale)}
            if limited:
                result |= _steady_state(proc, sim, kafka, scale)
            else:
                status = proc.wait(3600)
                if status != 0:
                    raise RuntimeError(f"backfiller exited {status}:\n{proc.text()[-3000:]}")
            summary = summary_of(proc.text())
            result["summary"] = summary
            result["sim"] = sim.stats()
            result["sim_cpu_s"] = sim.cpu_s()
            # The backfiller's own CPU (wait4): its capacity on a dedicated core, whatever
            # else the machine runs (the simulator, Kafka, other jobs).
            result["backfiller_cpu_s"] = proc.usage.cpu_s if proc.usage else float("nan")
            result["candles_per_cpu_s"] = summary["candles"] / result["backfiller_cpu_s"]
            if not limited:
                result["candles"] = summary["candles"]
                result["seconds"] = summary["seconds"]
                result["candles_per_s"] = summary["candles"] / summary["seconds"]
            return result
    finally:
        delete_topics(kafka)


def archive_files(scale: BackfillScale) -> list[str]:
    """URL paths of every archive zip (and CHECKSUM) the backfiller's plan takes for ``scale``:
    what to have the simulator build before a timed run."""
    pairs = [parse_pair(p) for p in scale.pairs]
    start = parse_time_ms(scale.start_date)
    now = parse_time_ms(scale.sim_now)
    min_candles = archive_min_candles(499, None)
    paths: list[str] = []
    for pair in pairs:
        for _a, _b, file in plan_archive(pair, start, align_open(pair.interval, now), now,
                                         min_candles=min_candles):  # fmt: skip
            if file is not None:
                paths += [f"/{file.path}", f"/{file.path}.CHECKSUM"]
    return paths


def prebuild_archive(sim: Sim, scale: BackfillScale) -> int:
    """Have the simulator build (and cache) every zip of ``scale`` now, before any clock
    starts: the archive figure times the download, not the exchange making the file."""
    paths = archive_files(scale)
    with httpx.Client(base_url=sim.url, timeout=120) as http:
        for path in paths:
            http.get(path).raise_for_status()
    return len(paths)


def librdkafka_ceiling(kafka_bootstrap: str, count: int, pairs: int = 8) -> float:
    """Messages/s librdkafka alone reaches here with the product's producer settings
    (idempotent, acks=all, compressed) and one delivery report per message, for ``count``
    kline records: the reference the archive path is held against."""
    from bench.replay_vs_copy import klines
    from qryptify.avro import KlineCodec

    codec = KlineCodec()
    sample = [(k.key.encode(), codec.encode(k)) for k in klines(min(count, 100_000), pairs)]
    kafka = kafka_config(kafka_bootstrap, f"bench-ceiling-{run_id()}", 6)
    acked = [0]

    def on_delivery(err: object, _msg: object) -> None:
        if err is None:
            acked[0] += 1

    producer = make_producer(kafka)
    try:
        started = time.perf_counter()
        for i in range(count):
            key, value = sample[i % len(sample)]
            produce_waiting(producer, kafka.topic, key=key, value=value, on_delivery=on_delivery)
        if producer.flush(300) != 0:
            raise RuntimeError("librdkafka did not deliver every message in 300 s")
        elapsed = time.perf_counter() - started
    finally:
        delete_topics(kafka)
    if acked[0] != count:
        raise RuntimeError(f"{acked[0]:,} of {count:,} messages acknowledged")
    return count / elapsed


#: The simulator's weight windows: fixed, WEIGHT_WINDOW_S long, on CLOCK_MONOTONIC (sim/limits.py),
#: which every process of this machine shares.
WEIGHT_WINDOW_S = 60.0
#: Read the counters this long before a window ends (a burst at a window's start stays whole).
_READ_BEFORE_S = 0.25


def whole_windows(
    now_s: float, until_s: float, window_s: float = WEIGHT_WINDOW_S
) -> tuple[float, int]:
    """Measure over whole limit windows: (when to take the first reading, how many windows),
    the first reading just before the next window starts, at least one window, as many as end
    by ``until_s``. Over part of a window the weight used can exceed the budget's share (all
    of one window's budget plus a burst at the next one's start): that is how 233.9 % of the
    budget came out of a run shorter than two windows."""
    first = (math.floor(now_s / window_s) + 1) * window_s - _READ_BEFORE_S
    if first < now_s:
        first += window_s
    windows = max(1, math.floor((until_s - first) / window_s))
    return first, windows


def _steady_state(proc: Proc, sim: Sim, kafka: KafkaConfig, scale: BackfillScale) -> dict[str, Any]:
    """Run for about ``weight_seconds``; measure whole limit windows from ``warmup_s`` on, each
    window on its own (``per_window``) and all of them together."""
    started = time.monotonic()
    time.sleep(scale.warmup_s)
    first, windows = whole_windows(time.monotonic(), started + scale.weight_seconds)
    windows = min(windows, scale.max_windows or windows)
    readings: list[tuple[float, dict[str, Any], int]] = []
    loads: list[tuple[float, float, float]] = []
    for k in range(windows + 1):
        time.sleep(max(0.0, first + k * WEIGHT_WINDOW_S - time.monotonic()))
        readings.append((time.monotonic(), sim.stats(), topic_end(kafka)))
        loads.append(os.getloadavg())
    proc.stop(120)
    per_window = [
        window_figures(a, b) | {"load": load}
        for a, b, load in zip(readings, readings[1:], loads[1:], strict=False)
    ]
    whole = window_figures(readings[0], readings[-1], windows)
    return whole | {"seconds": readings[-1][0] - started, "windows": windows,
                    "per_window": per_window}  # fmt: skip


def window_figures(
    a: tuple[float, dict[str, Any], int], b: tuple[float, dict[str, Any], int], windows: int = 1
) -> dict[str, Any]:
    """What happened between two readings (time, simulator stats, topic size) ``windows``
    limit windows apart."""
    (t0, s0, c0), (t1, s1, c1) = a, b
    used = s1["weight_used"] - s0["weight_used"]
    return {
        "steady_seconds": t1 - t0,
        "candles": c1 - c0,
        "candles_per_s": (c1 - c0) / (t1 - t0),
        "weight_used": used,
        "weight_share": used / (WEIGHT_LIMIT * windows),
        "http_429": s1["responses_429"] - s0["responses_429"],
        "http_418": s1["responses_418"] - s0["responses_418"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.backfill_figures", description=__doc__)
    parser.add_argument("--kafka", default="127.0.0.1:19092")
    parser.add_argument("--quick", action="store_true", help="smaller range, shorter runs")
    parser.add_argument("--only", default=",".join(MODES), help="comma list of " + "/".join(MODES))
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else BackfillScale()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        for mode in args.only.split(","):
            pairs, start = (
                (scale.weight_pairs, scale.weight_start_date)
                if mode == "weight"
                else (scale.pairs, scale.start_date)
            )
            say(f"{mode}: running ({', '.join(pairs)} from {start})")
            result = measure(args.kafka, Path(tmp) / mode, mode.strip(), scale)
            results.append(result)
            line = f"{mode}: {result['candles']:,.0f} candles, {result['candles_per_s']:,.0f}/s"
            if mode == "weight":
                line += (
                    f" in steady state; weight used {result['weight_share']:.1%} of "
                    f"{WEIGHT_LIMIT}/min, 429 {result['http_429']}, 418 {result['http_418']}"
                )
            else:
                s = result["summary"]
                line += (
                    f" ({result['seconds']:.1f}s, {s['requests']:.0f} requests, "
                    f"{s['archive_downloaded']:.0f} archive files)"
                )
            line += (
                f"; backfiller CPU {result['backfiller_cpu_s']:.0f}s = "
                f"{result['candles_per_cpu_s']:,.0f} candles per CPU-second"
                f" (whole run), simulator CPU {result['sim_cpu_s']:.0f}s"
            )
            say(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
