"""The ``make bench`` figures: each measures ours and its reference in the same repetition and
fills a ``FigureResult``. The measuring code of a path lives with its owner
(``bench/replay_vs_copy.py``, ``bench/backfill_figures.py``, ``bench/live_latency.py``,
``bench/sim_throughput.py``); this module calls it, adds the references
(``bench/seed_baseline.py``) and the repetitions.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.harness import database, delete_topics, kafka_config, run_id
from bench.model import Context, FigureResult, Pending, Row
from bench.resources import QUICK_SCALE, ResourceScale, ServiceUsage, measure_services
from bench.seed_baseline import seed_write
from bench.stats import meets, paired_ratios, spread

RESULTS = Path(__file__).resolve().parent / "results"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def owner_module(name: str) -> ModuleType:
    """Another engineer's bench script, or Pending when it is not there yet."""
    if importlib.util.find_spec(name) is None:
        raise Pending(f"{name.replace('.', '/')}.py not there yet")
    return importlib.import_module(name)


# ---------------------------------------------------------------------------------------------
# Figure 1: replay vs raw COPY (and the seed's executemany write path)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayScale:
    rows: int = 2_000_000
    pairs: int = 50
    partitions: int = 6
    #: The seed's executemany path is ~10× slower: measured on the first rows only (a rate).
    seed_rows: int = 100_000


REPLAY_QUICK = ReplayScale(rows=200_000, pairs=20, seed_rows=20_000)


def replay_figure(ctx: Context, result: FigureResult) -> None:
    rvc = owner_module("bench.replay_vs_copy")
    from qryptify.commands.replay import replay
    from qryptify.config import build_config

    scale = REPLAY_QUICK if ctx.quick else ReplayScale()
    result.scale = {
        "klines": scale.rows,
        "pairs": scale.pairs,
        "partitions": scale.partitions,
        "seed_write_rows": scale.seed_rows,
    }
    rid = run_id()
    kafka = kafka_config(ctx.kafka, f"bench-replay-{rid}", scale.partitions)
    copy_rate: list[float] = []
    fresh_rate: list[float] = []
    fresh_steady: list[float] = []
    noop_rate: list[float] = []
    seed_rate: list[float] = []
    try:
        items = rvc.klines(scale.rows, scale.pairs)
        produce_s = rvc.produce(kafka, items)
        say(f"replay: produced {len(items):,} klines in {produce_s:.1f}s")
        result.raw["produce_rows_per_s"] = len(items) / produce_s
        for rep in range(ctx.reps):
            with database(ctx.pg, f"bench_copy_{rid}_{rep}") as dsn:
                copy_s = rvc.raw_copy(dsn, items)
            copy_rate.append(len(items) / copy_s)
            with database(ctx.pg, f"bench_replay_{rid}_{rep}") as dsn:
                cfg = build_config({"kafka": kafka.model_dump(mode="json"), "db": {"dsn": dsn}})
                run = partial(replay, cfg, dsn, progress=False)
                fresh = _profiled(ctx, "replay", run, rep == 0)
                again = replay(cfg, dsn, progress=False)
            if fresh.totals["written"] != len(items) or again.totals["written"] != 0:
                raise RuntimeError(f"replay wrote {fresh.totals}, then {again.totals}")
            fresh_rate.append(fresh.rows / fresh.elapsed_s)
            fresh_steady.append(fresh.rows / fresh.steady_s)
            noop_rate.append(again.rows / again.elapsed_s)
            with database(ctx.pg, f"bench_seed_{rid}_{rep}") as dsn:
                seed_s = seed_write(dsn, items[: scale.seed_rows])
            seed_rate.append(scale.seed_rows / seed_s)
            say(
                f"replay rep {rep + 1}: COPY {copy_rate[-1]:,.0f}/s, "
                f"replay {fresh_rate[-1]:,.0f}/s, no-op {noop_rate[-1]:,.0f}/s, "
                f"seed executemany {seed_rate[-1]:,.0f}/s"
            )
    finally:
        delete_topics(kafka)
    copy = spread(copy_rate)
    ratio = paired_ratios(fresh_rate, copy_rate)
    seed_ratio = paired_ratios(seed_rate, copy_rate)
    result.rows += [
        Row(
            f"replay topic → empty DB ({scale.rows / 1e6:.1f}M klines)",
            spread(fresh_rate),
            "rows/s",
            copy,
            "raw COPY",
            ratio,
            "≥ 0.6× COPY",
            meets(ratio.median, 0.6),
        ),
        Row(
            "seed write path (executemany) → empty DB",
            spread(seed_rate),
            "rows/s",
            copy,
            "raw COPY",
            seed_ratio,
            "(seed ≈ 0.17×)",
        ),
        Row(
            "replay into the full table (no-op)",
            spread(noop_rate),
            "rows/s",
            spread(fresh_rate),
            "replay into empty",
            paired_ratios(noop_rate, fresh_rate),
        ),
    ]
    result.raw["replay_rows_per_s_from_first_commit"] = spread(fresh_steady).to_json()
    result.notes.append(
        "replay rates include the consumer-group join; raw COPY writes pre-formatted text "
        f"into an empty table with its primary key; the seed's executemany path is timed on the "
        f"first {scale.seed_rows:,} rows (pages of 1,500, one COMMIT each, as the seed did)"
    )


def _profiled(ctx: Context, name: str, fn: Any, first: bool) -> Any:
    """Run ``fn``; under ``--profile name`` the first repetition runs under pyinstrument."""
    if ctx.profile != name or not first:
        return fn()
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        return fn()
    finally:
        profiler.stop()
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"profile-{name}.txt"
        path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        say(f"profile written: {path}")


# ---------------------------------------------------------------------------------------------
# Figures 6 and 7: memory and CPU per service at 1,000 pairs
# ---------------------------------------------------------------------------------------------


def resources_figure(ctx: Context, result: FigureResult) -> None:
    scale = QUICK_SCALE if ctx.quick else ResourceScale()
    result.scale = {
        "pairs": scale.pairs,
        "backfill_sim_now": scale.sim_now,
        "backfill_start_date": scale.start_date,
        "live_seconds": scale.live_seconds,
        "live_speed": scale.live_speed,
    }
    reps: list[dict[str, ServiceUsage]] = []
    for rep in range(ctx.reps):
        started = time.monotonic()
        usage = measure_services(ctx.kafka, ctx.pg, ctx.workdir, scale)
        reps.append(usage)
        say(
            f"resources rep {rep + 1} ({time.monotonic() - started:.0f}s): "
            + ", ".join(
                f"{u.service} {u.peak_rss_mb:.0f} MB {u.cores_per_10k:.2f} cores/10k"
                f" ({u.candles:,} candles, {u.candles_per_s:,.0f}/s)"
                for u in usage.values()
            )
        )
    for name in ("backfiller", "producer", "sink"):
        runs = [r[name] for r in reps if name in r]
        rss = spread(u.peak_rss_mb for u in runs)
        result.rows.append(
            Row(
                f"peak RSS, {name} ({scale.pairs:,} pairs)",
                rss,
                "MB",
                target="≤ 150 MB",
                met=meets(rss.median, 150.0, higher_is_better=False),
            )
        )
    for name in ("backfiller", "producer", "sink"):
        runs = [r[name] for r in reps if name in r]
        result.rows.append(
            Row(
                f"CPU cores per 10k candles/s, {name}",
                spread(u.cores_per_10k for u in runs),
                "cores",
                reference=spread(u.candles_per_s for u in runs),
                reference_label="measured at",
                reference_unit="candles/s",
            )
        )
    result.raw["runs"] = [{k: v.to_json() for k, v in r.items()} for r in reps]
    producer = [r["producer"] for r in reps if "producer" in r]
    if producer:
        frames = spread(u.extra.get("frames_per_s", float("nan")) for u in producer)
        result.notes.append(
            f"the producer parses every WebSocket frame (~{frames.median:,.0f} frames/s incl. "
            f"x:false updates) to publish {scale.live_speed / 60 * scale.pairs:,.0f} closes/s at "
            f"sim speed {scale.live_speed:g}: its CPU per candle is mostly frame parsing"
        )
    result.notes.append(
        "peak RSS and CPU from wait4() of each service process (exact over its life); sink CPU "
        "up to the moment its group had no lag"
    )


# ---------------------------------------------------------------------------------------------
# Figures 2–5: measured by the backfiller's and the producer's bench scripts
# ---------------------------------------------------------------------------------------------


def history_figure(ctx: Context, result: FigureResult) -> None:
    owner_module("bench.backfill_figures")
    raise Pending("bench/backfill_figures.py: integration pending")


def weight_figure(ctx: Context, result: FigureResult) -> None:
    owner_module("bench.backfill_figures")
    raise Pending("bench/backfill_figures.py: integration pending")


def archive_figure(ctx: Context, result: FigureResult) -> None:
    owner_module("bench.backfill_figures")
    raise Pending("bench/backfill_figures.py: integration pending")


@dataclass(frozen=True, slots=True)
class LiveScale:
    pairs: int = 500
    speed: float = 60.0
    seconds: float = 45.0
    warmup_s: float = 10.0


LIVE_QUICK = LiveScale(pairs=100, seconds=15.0, warmup_s=5.0)


def live_figure(ctx: Context, result: FigureResult) -> None:
    live = owner_module("bench.live_latency")
    scale = LIVE_QUICK if ctx.quick else LiveScale()
    result.scale = {
        "pairs": scale.pairs,
        "speed": scale.speed,
        "seconds": scale.seconds,
        "warmup_s": scale.warmup_s,
    }
    runs: list[dict[str, Any]] = []
    for rep in range(ctx.reps):
        run = live.measure(
            ctx.kafka,
            ctx.pg,
            ctx.workdir / f"live-{rep}",
            pairs=scale.pairs,
            speed=scale.speed,
            seconds=scale.seconds,
            warmup_s=scale.warmup_s,
        )
        runs.append(run)
        ack, dbc = run["frame_to_ack_ms"], run["frame_to_db_commit_ms"]
        say(
            f"live rep {rep + 1}: {run['candles']:,} candles; frame→ack p50 {ack['p50']:.1f} "
            f"p99 {ack['p99']:.1f} max {ack['max']:.1f} ms; frame→DB p50 {dbc['p50']:.1f} "
            f"p99 {dbc['p99']:.1f} max {dbc['max']:.1f} ms"
        )
    targets = {"p50": 50.0, "p99": 250.0}
    for key, label in (
        ("frame_to_ack_ms", "x:true → Kafka ack"),
        ("frame_to_db_commit_ms", "x:true → DB commit"),
    ):
        for stat in ("p50", "p99", "max"):
            values = spread(float(r[key][stat]) for r in runs)
            end_to_end = key == "frame_to_db_commit_ms" and stat in targets
            result.rows.append(
                Row(
                    f"{label} {stat} ({scale.pairs} pairs)",
                    values,
                    "ms",
                    target=f"≤ {targets[stat]:g} ms" if end_to_end else "",
                    met=meets(values.median, targets[stat], higher_is_better=False)
                    if end_to_end
                    else None,
                )
            )
    result.raw["runs"] = runs
    missing = sum(int(r["candles_without_commit"]) for r in runs)
    result.notes.append(
        f"speed {scale.speed:g}: all {scale.pairs} candles of a minute close at one instant and "
        f"their x:true frames arrive in one burst (the hard case); {missing} of "
        f"{sum(int(r['candles']) for r in runs):,} measured candles had no DB commit seen"
    )
