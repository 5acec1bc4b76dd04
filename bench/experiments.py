"""What ``make bench`` runs: each experiment measures ours and its references side by side,
repetition after repetition, and yields one ``Repetition`` of named values per repetition
(the names ``bench/figures.py`` reads). Setup that is not part of any figure (producing the
topic, building the simulator's zips) happens before the first repetition's clock starts.

The measuring code of a path lives with its owner (``bench/replay_vs_copy.py``,
``bench/backfill_figures.py``, ``bench/live_latency.py``, ``bench/resources.py``); the
reference for the seed's way of working is ``bench/seed_baseline.py``.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench import backfill_figures as bf
from bench import live_latency, resources
from bench import replay_vs_copy as rvc
from bench.harness import (
    LastRowWatch,
    base_doc,
    database,
    delete_topics,
    group_lag,
    kafka_config,
    profiled_services,
    run_id,
    service,
    service_env,
    simulator,
    summary_values,
    table_rows,
    topic_end,
    wait_for,
    write_config,
)
from bench.model import Context, ExperimentResult, Repetition
from bench.seed_baseline import run_seed, seed_write
from bench.stats import cores_per_10k, spread

RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")
FROZEN = 1e-6  # sim speed: the clock stands still, so "closed" stays put during a run
DAY_MS = 86_400_000

Run = Callable[[Context, ExperimentResult], Generator[Repetition, None, None]]


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Experiment:
    key: str
    title: str
    run: Run


# ---------------------------------------------------------------------------------------------
# the core in use, signals, profiles
# ---------------------------------------------------------------------------------------------


def native_core() -> str:
    from qryptify import native

    return native.CORE


def _keep_signals(fn: Callable[[], T]) -> T:
    """Run ``fn`` and put SIGTERM/SIGINT back as they were (``qryptify replay`` installs its
    own stop handlers, which would otherwise outlive it and swallow the bench's Ctrl-C)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return fn()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _profiled(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` under pyinstrument; the text report goes to bench/results/profile-NAME.txt.
    Only for extra runs: the profiler's overhead must not reach a measured repetition."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        return _keep_signals(fn)
    finally:
        profiler.stop()
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"profile-{name}.txt"
        path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        say(f"profile written: {path}")


# ---------------------------------------------------------------------------------------------
# 1. Replay: topic → DB, against raw COPY of the same rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayScale:
    rows: int = 1_000_000
    pairs: int = 50
    partitions: int = 6
    #: The seed's executemany path is ~5× slower: timed on the first rows only (a rate).
    seed_rows: int = 50_000


REPLAY_QUICK = ReplayScale(rows=100_000, pairs=20, seed_rows=10_000)


def replay(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
    from qryptify.commands.replay import replay as run_replay
    from qryptify.config import build_config

    scale = REPLAY_QUICK if ctx.quick else ReplayScale()
    result.scale = asdict(scale) | {"rows_m": f"{scale.rows / 1e6:.1f}"}
    rid = run_id()
    kafka = kafka_config(ctx.kafka, f"bench-replay-{rid}", scale.partitions)
    steps: list[dict[str, tuple[float, float]]] = []
    try:
        items = rvc.klines(scale.rows, scale.pairs)
        produce_s = rvc.produce(kafka, items)
        say(f"replay: produced {len(items):,} klines in {produce_s:.1f}s")

        def once(dsn: str) -> Any:
            cfg = build_config({"kafka": kafka.model_dump(mode="json"), "db": {"dsn": dsn}})
            return _keep_signals(partial(run_replay, cfg, dsn, progress=False))

        for rep in range(ctx.reps):
            with database(ctx.pg, f"bench_copy_{rid}_{rep}") as dsn:
                copy_s = rvc.raw_copy(dsn, items)
            # The sink sends binary rows when the native core is built: that reference too.
            with database(ctx.pg, f"bench_bincopy_{rid}_{rep}") as dsn:
                binary_s = rvc.raw_copy_binary(dsn, items)
            with database(ctx.pg, f"bench_replay_{rid}_{rep}") as dsn:
                fresh = once(dsn)
                again = once(dsn)
            if fresh.totals["written"] != len(items) or again.totals["written"] != 0:
                raise RuntimeError(f"replay wrote {fresh.totals}, then {again.totals}")
            with database(ctx.pg, f"bench_seed_{rid}_{rep}") as dsn:
                seed_s = seed_write(dsn, items[: scale.seed_rows])
            if ctx.profile == "replay" and rep == ctx.reps - 1:  # an extra run, not counted
                with database(ctx.pg, f"bench_profile_{rid}") as dsn:
                    cfg = build_config({"kafka": kafka.model_dump(mode="json"), "db": {"dsn": dsn}})
                    _profiled("replay", partial(run_replay, cfg, dsn, progress=False))
            steps.append(fresh.times.per_row_us(fresh.rows))
            values = {
                "copy_rows_per_s": len(items) / copy_s,
                "binary_copy_rows_per_s": len(items) / binary_s,
                "replay_rows_per_s": fresh.rows / fresh.elapsed_s,
                "noop_rows_per_s": again.rows / again.elapsed_s,
                "seed_write_rows_per_s": scale.seed_rows / seed_s,
                "consumer_cpu_us": _consumer_cpu_us(fresh.times.per_row_us(fresh.rows)),
            }
            say(f"replay rep {rep + 1}: " + _brief(values))
            detail = {
                "steps_us_per_row": steps[-1],
                "steady_rows_per_s": fresh.rows / fresh.steady_s,
            }
            yield Repetition(values, detail)
    finally:
        delete_topics(kafka)
    medians = {
        step: (spread(s[step][0] for s in steps).median, spread(s[step][1] for s in steps).median)
        for step in (steps[0] if steps else {})
    }
    result.notes += [
        f"core {native_core()}; time per row in the sink's steps (wall/CPU µs, median): "
        + ", ".join(f"{k} {w:.2f}/{c:.2f}" for k, (w, c) in medians.items()),
        "replay rates include the consumer-group join; raw COPY writes pre-formatted text (raw "
        "binary COPY: pre-formatted binary rows) into an empty table with its primary key; the "
        "sink sends binary rows when the native core is built; the seed's executemany path is "
        f"timed on the first {scale.seed_rows:,} rows (pages of 1,500, one COMMIT each, as the "
        "seed did)",
    ]


def _consumer_cpu_us(per_row: dict[str, tuple[float, float]]) -> float:
    """CPU µs per row of the sink's consumer thread (what the native core takes on)."""
    return sum(per_row[step][1] for step in ("poll", "stage", "handover"))


def _brief(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.3g}" for k, v in values.items())


# ---------------------------------------------------------------------------------------------
# 2. Full history: backfiller + sink as processes, against the raw-COPY floor and the seed
# ---------------------------------------------------------------------------------------------

HISTORY_SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT", "LTCUSDT", "LINKUSDT", "ADAUSDT", "DOGEUSDT",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistoryScale:
    pairs: int = 8
    start_date: str = "2024-01-01"
    sim_now: str = "2025-01-01T06:00:00Z"
    #: The seed-style baseline and our REST-only run cover the newest ``sample_days`` of the
    #: range (the seed is strictly sequential: its full-range time is projected by its rate).
    #: 42 days (484k candles): long enough that our services' start-up (two processes, imports,
    #: the sink's group join: ~0.5 s) does not decide the REST-only figure; the seed's time
    #: starts at its first request.
    sample_days: int = 42


HISTORY_QUICK = HistoryScale(start_date="2024-12-30", sample_days=1)


def history_bounds(scale: HistoryScale) -> tuple[int, int, int]:
    """(start, sample start, end) in ms: the candles opening in [start, end) are closed."""
    from qryptify.pairs import align_open
    from sim.symbols import parse_time_ms

    start = parse_time_ms(scale.start_date)
    end = align_open("1m", parse_time_ms(scale.sim_now))  # the candle open at now is not closed
    return start, max(start, end - scale.sample_days * DAY_MS), end


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_history(
    ctx: Context, sim: Any, pairs: int, start_ms: int, end_ms: int, *, archive: bool, tag: str
) -> dict[str, Any]:
    """Backfiller + sink as processes, started together; wall clock until every row of the
    range is in ``candlesticks`` (the sink's group has no lag and the count matches). With
    ``archive``, also the raw-COPY floor of exactly the rows that arrived."""
    import time

    rid = run_id()
    workdir = ctx.workdir / f"history-{tag}-{rid}"
    expected = pairs * (end_ms - start_ms) // 60_000
    kafka = kafka_config(ctx.kafka, f"bench-hist-{rid}", 6)
    try:
        with database(ctx.pg, f"bench_hist_{rid}") as dsn:
            doc = base_doc(
                pairs=[f"{s}/1m" for s in HISTORY_SYMBOLS[:pairs]],
                kafka=kafka,
                dsn=dsn,
                sim_url=sim.url,
                cache_dir=workdir / "cache",
            )
            doc["archive"]["enabled"] = archive
            doc["backfill"] = {"start_date": _iso(start_ms), "exit_when_done": True}
            doc["sink"] = {"group_id": f"bench-hist-{rid}"}
            if not archive:
                doc["rest"]["klines_limit"] = 1500  # no weight limit: the biggest pages
            cfg = write_config(workdir / "config.yaml", doc)
            sim_cpu0, sim_stats0 = sim.cpu_s(), sim.stats()
            watch = LastRowWatch(dsn, pairs, end_ms - 60_000).start()
            started = time.monotonic()
            sink = service("sink", cfg, workdir)
            backfiller = service("backfiller", cfg, workdir)
            try:
                code = backfiller.wait(3600)
                if code != 0:
                    raise RuntimeError(f"backfiller exited {code}: {backfiller.text()[-3000:]}")
                wait_for(lambda: group_lag(kafka, doc["sink"]["group_id"]) == 0, 3600, "sink")
                # The last rows' arrival, seen every 20 ms (the lag check above polls slower).
                done = watch.stop() or time.monotonic()
                sim_cpu1, sim_stats1 = sim.cpu_s(), sim.stats()
            finally:
                watch.stop()
                sink.stop()
            rows = table_rows(dsn)
            if rows != expected:
                raise RuntimeError(f"{rows:,} rows in the table, {expected:,} expected")
            floor_s = rvc.copy_floor_s(ctx.pg, dsn, workdir) if archive else float("nan")
            summary = summary_values(backfiller.text())
            return {
                "seconds": done - started,
                "rows": rows,
                "published": topic_end(kafka),
                "floor_s": floor_s,
                "requests": sim_stats1["requests"] - sim_stats0["requests"],
                "archive_files": sim_stats1["archive_files_served"]
                - sim_stats0["archive_files_served"],
                "sim_cpu_share": (sim_cpu1 - sim_cpu0) / (done - started),
                "backfiller_cpu_s": backfiller.usage.cpu_s if backfiller.usage else None,
                "summary": summary,
            }
    finally:
        delete_topics(kafka)


def run_seed_sample(ctx: Context, sim: Any, pairs: int, start_ms: int, end_ms: int) -> Any:
    """The seed's way over every pair for the sample range."""
    from qryptify.pairs import Pair

    with database(ctx.pg, f"bench_seed_{run_id()}") as dsn:
        result = run_seed(sim.url, dsn, [Pair(s, "1m") for s in HISTORY_SYMBOLS[:pairs]],
                          start_ms, end_ms)  # fmt: skip
    if result.stopped:
        raise RuntimeError(f"the seed stopped: {result.stopped}")
    return result


def history(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
    from sim.symbols import DEFAULT_SYMBOLS

    scale = HISTORY_QUICK if ctx.quick else HistoryScale()
    start, sample_start, end = history_bounds(scale)
    rows = scale.pairs * (end - start) // 60_000
    result.scale = {"pairs": scale.pairs, "start": _iso(start), "end": _iso(end), "rows": rows,
                    "rows_m": f"{rows / 1e6:.2f}", "days": round((end - start) / DAY_MS),
                    "sample_days": scale.sample_days}  # fmt: skip
    symbols = [s for s in DEFAULT_SYMBOLS if s.symbol in HISTORY_SYMBOLS[: scale.pairs]]
    with simulator(ctx.workdir, symbols, start=scale.sim_now, speed=FROZEN,
                   name="sim-history") as sim:  # fmt: skip
        for rep in range(ctx.reps):
            seed = run_seed_sample(ctx, sim, scale.pairs, sample_start, end)
            ours = run_history(ctx, sim, scale.pairs, start, end, archive=True, tag="archive")
            rest = run_history(ctx, sim, scale.pairs, sample_start, end, archive=False,
                               tag="rest")  # fmt: skip
            values = {
                "archive_s": ours["seconds"],
                "floor_s": ours["floor_s"],
                "seed_projected_s": rows / seed.candles_per_s,
                "rest_candles_per_s": rest["rows"] / rest["seconds"],
                "seed_candles_per_s": seed.candles_per_s,
                "sim_cpu_share": max(ours["sim_cpu_share"], rest["sim_cpu_share"]),
            }
            say(f"history rep {rep + 1}: " + _brief(values))
            yield Repetition(values, {"archive": ours, "rest": rest,
                                      "seed": {"candles": seed.candles, "pages": seed.pages,
                                               "seconds": seed.seconds}})  # fmt: skip
    result.notes.append(
        "wall clock from starting the backfiller and the sink to the last row in the table "
        "(archive zips + REST tail); the floor is a raw COPY (text) of exactly those rows, "
        "exported from that run's table, into an empty one, in the same repetition; the "
        f"seed-style baseline (sequential pages of 1500, a new HTTP client per request, "
        f"executemany INSERT … ON CONFLICT DO NOTHING) runs the newest {scale.sample_days} "
        "day(s) of the range, where our REST-only run is measured too, and is projected to the "
        "whole range by its rate (it is strictly sequential)"
    )


# ---------------------------------------------------------------------------------------------
# 3. The weight limit
# ---------------------------------------------------------------------------------------------


def weight_scale(quick: bool, windows: int) -> bf.BackfillScale:
    """The weight run: the exchange's windows are fixed minutes, so the steady state is
    measured over whole windows after a warm-up, one window per repetition."""
    warmup = 5.0 if quick else 30.0
    return bf.BackfillScale(weight_seconds=warmup + bf.WEIGHT_WINDOW_S * (windows + 1),
                            warmup_s=warmup, max_windows=windows)  # fmt: skip


def weight(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
    """One backfill per page limit (499 and 1500), side by side, each with its own simulator
    (the limit is per client there); each whole limit window is one repetition, the two runs
    measured in the same window."""
    scale = weight_scale(ctx.quick, ctx.reps)
    result.scale = {"pairs": list(scale.weight_pairs), "start_date": scale.weight_start_date,
                    "warmup_s": scale.warmup_s, "weight_limit": bf.WEIGHT_LIMIT}  # fmt: skip
    out: dict[str, Any] = {}
    errors: list[BaseException] = []

    def one(limit: int) -> None:
        try:
            with service_env(QRYPTIFY_REST__KLINES_LIMIT=str(limit)):
                out[str(limit)] = bf.measure(
                    ctx.kafka, ctx.workdir / f"weight-{limit}", "weight", scale
                )
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in (499, 1500)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    windows = zip(out["499"]["per_window"], out["1500"]["per_window"], strict=False)
    for rep, (w, w1500) in enumerate(list(windows)[: ctx.reps]):
        values = {
            "share_pct": 100 * w["weight_share"],
            "candles_per_min": w["candles_per_s"] * 60,
            "candles_per_min_1500": w1500["candles_per_s"] * 60,
            "http_429_418": float(w["http_429"] + w["http_418"]),
        }
        say(f"weight window {rep + 1}: " + _brief(values))
        yield Repetition(values, {"499": w, "1500": w1500}, load=w["load"])
    result.raw["runs"] = {k: {n: v for n, v in r.items() if n != "per_window"}
                          for k, r in out.items()}  # fmt: skip
    result.notes.append(
        f"each repetition is one whole 60 s limit window after a {scale.warmup_s:g} s warm-up, "
        "the two page limits measured in the same window; page limit 499 (weight 2) is the "
        "backfiller's default: 249.5 candles per weight vs 150 at limit 1500 (weight 10), the "
        "same code with rest.klines_limit=1500"
    )


# ---------------------------------------------------------------------------------------------
# 4. The archive path alone: zip download → Kafka ack
# ---------------------------------------------------------------------------------------------

ARCHIVE_PAIRS = tuple(f"{s}/1m" for s in HISTORY_SYMBOLS[:6])
#: 6 pairs × 1m from 2023-05-01: 3.18M candles, 12 monthly zips per pair, then 2 daily zips
#: and half a day of REST.
ARCHIVE_FULL = bf.BackfillScale(pairs=ARCHIVE_PAIRS, start_date="2023-05-01",
                                sim_now="2024-05-03T12:00:00Z")  # fmt: skip
ARCHIVE_QUICK = bf.BackfillScale(pairs=ARCHIVE_PAIRS[:2], start_date="2024-03-01",
                                 sim_now="2024-05-03T12:00:00Z")  # fmt: skip
#: MiB of built zips the simulator keeps: all of ARCHIVE_FULL's (~2 MB per monthly file).
ARCHIVE_SIM_CACHE_MB = 512


def archive(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
    from qryptify.pairs import align_open
    from sim.symbols import parse_time_ms

    scale = ARCHIVE_QUICK if ctx.quick else ARCHIVE_FULL
    end = align_open("1m", parse_time_ms(scale.sim_now))
    candles = len(scale.pairs) * (end - parse_time_ms(scale.start_date)) // 60_000
    result.scale = {"pairs": list(scale.pairs), "start_date": scale.start_date,
                    "sim_now": scale.sim_now, "candles": candles,
                    "candles_m": f"{candles / 1e6:.2f}"}  # fmt: skip
    runs: list[dict[str, Any]] = []
    extra = ("--archive-cache-mb", str(ARCHIVE_SIM_CACHE_MB))
    with bf.backfill_simulator(ctx.workdir, "archive", scale, extra) as sim:
        files = bf.prebuild_archive(sim, scale)
        say(f"archive: the simulator built {files} archive files before the clock starts")
        built = sim.stats()["archive_files_served"]
        for rep in range(ctx.reps):
            a = bf.measure(ctx.kafka, ctx.workdir / f"archive-{rep}", "archive", scale, sim)
            ceiling = bf.librdkafka_ceiling(ctx.kafka, int(a["candles"]))
            runs.append(a)
            values = {
                "archive_candles_per_s": a["candles_per_s"],
                "ceiling_msgs_per_s": ceiling,
                "backfiller_cpu_us_per_candle": 1e6 * a["backfiller_cpu_s"] / a["candles"],
            }
            say(f"archive rep {rep + 1}: " + _brief(values))
            yield Repetition(values, a)
        if ctx.profile == "archive":  # one extra run under the profiler, not counted
            path = RESULTS / "profile-archive.txt"
            with profiled_services(backfiller=path):
                bf.measure(ctx.kafka, ctx.workdir / "archive-profile", "archive", scale, sim)
            say(f"profile written: {path}")
        result.raw["files_served_before_timing"] = built
    cpu = spread(1e6 * r["backfiller_cpu_s"] / r["candles"] for r in runs).median
    result.notes.append(
        "candles ÷ the backfiller's own run time (process start to the last Kafka ack, "
        "exchangeInfo and the REST tail included), the simulator's zips built before the first "
        f"repetition; backfiller CPU per candle: {cpu:.1f} µs on the {native_core()} core; the "
        "reference produces as many kline records with the product's producer settings and one "
        "delivery report per message"
    )


# ---------------------------------------------------------------------------------------------
# 5. Live latency
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveScale:
    pairs: int = 500
    speed: float = 60.0
    seconds: float = 30.0
    warmup_s: float = 10.0


LIVE_QUICK = LiveScale(pairs=100, seconds=15.0, warmup_s=5.0)


def live(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
    scale = LIVE_QUICK if ctx.quick else LiveScale()
    result.scale = asdict(scale)
    missing = total = 0
    for rep in range(ctx.reps):
        run = live_latency.measure(ctx.kafka, ctx.pg, ctx.workdir / f"live-{rep}",
                                   pairs=scale.pairs, speed=scale.speed, seconds=scale.seconds,
                                   warmup_s=scale.warmup_s)  # fmt: skip
        ack, dbc = run["frame_to_ack_ms"], run["frame_to_db_commit_ms"]
        values = {"ack_p50_ms": ack["p50"], "ack_p99_ms": ack["p99"], "db_p50_ms": dbc["p50"],
                  "db_p99_ms": dbc["p99"], "db_max_ms": dbc["max"]}  # fmt: skip
        missing += int(run["candles_without_commit"])
        total += int(run["candles"])
        say(f"live rep {rep + 1}: {run['candles']:,} candles; " + _brief(values))
        yield Repetition(values, run)
    result.notes.append(
        f"speed {scale.speed:g}: the {scale.pairs} candles of a minute close at one instant and "
        f"their x:true frames arrive in one burst (the hard case); {missing} of {total:,} "
        "measured candles had no DB commit seen"
    )


# ---------------------------------------------------------------------------------------------
# 6 and 7. Memory and CPU per service
# ---------------------------------------------------------------------------------------------


def service_resources(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
    scale = resources.QUICK_SCALE if ctx.quick else resources.ResourceScale()
    result.scale = asdict(scale)
    for rep in range(ctx.reps):
        usage = resources.measure_services(ctx.kafka, ctx.pg, ctx.workdir, scale)
        values: dict[str, float] = {}
        for name, u in usage.items():
            values[f"{name}_rss_mb"] = u.peak_rss_mb
            values[f"{name}_cores_per_10k"] = cores_per_10k(u.cpu_s, float(u.candles))
        values["producer_closes_per_s"] = usage["producer"].candles_per_s
        values["sink_rows_per_s"] = usage["sink"].candles_per_s
        values["backfiller_candles_per_s"] = usage["backfiller"].candles_per_s
        say(f"resources rep {rep + 1}: " + _brief(values))
        yield Repetition(values, {k: v.to_json() for k, v in usage.items()})
    result.notes.append(
        "peak RSS = the process's VmHWM (/proc, sampled every 0.1 s) over its whole life; CPU = "
        "utime + stime from wait4() (the sink's: up to the moment its group had no lag; the "
        "producer's: over a window after its start-up, whose CPU is in startup_cpu_s); the "
        "producer parses every WebSocket frame, x:false updates included, to publish the closes"
    )


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("replay", "Replay: topic → DB vs raw COPY", replay),
    Experiment("history", "Full history vs the raw-COPY floor and the seed", history),
    Experiment("weight", "Backfill under the real weight limit", weight),
    Experiment("archive", "Archive path alone: zip → Kafka ack", archive),
    Experiment("live", "Live: x:true → Kafka ack / DB commit", live),
    Experiment("resources", "Memory and CPU per service", service_resources),
)
