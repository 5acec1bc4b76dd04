"""``make bench`` / ``python -m bench``: every performance figure of the README, each with its
reference measured in the same run on the same machine, printed as ONE table and written as
JSON (``bench/results/latest.json``) to compare across commits.

    .venv/bin/python -m bench [--quick] [--only replay,resources] [--reps 3]
                              [--out bench/results/latest.json] [--markdown docs/performance.md]
                              [--stack bench|test|external] [--profile NAME]

The stack: by default a dedicated one (``--stack bench``: Kafka 127.0.0.1:29092, PostgreSQL
127.0.0.1:25432, data in ``.stack-bench/``), started with ``python -m stack up --profile test``
when it is not running, stopped again at the end if this run started it (``--keep-stack``
leaves it up). ``--stack test`` uses the running test stack (19092/15432); ``--stack external``
takes ``--kafka`` and ``--pg``.

Each figure runs ``--reps`` repetitions (≥ 3; ``--quick``: 1, at a small scale, in under three
minutes). A figure whose code is not there yet (another engineer's bench script) is listed as
``pending``; one that fails is listed with its error and the run goes on. Timings are never
asserted by tests; ``tests/unit/test_bench_stats.py`` covers the statistics.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.model import Context, FigureResult, LoadTooHigh, Pending, json_safe, load_average
from bench.stats import fmt_spread, markdown_table, text_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_OUT = RESULTS / "latest.json"
QUICK_OUT = RESULTS / "quick.json"

# The bench stack's ports: QRYPTIFY_BENCH_KAFKA_PORT (controller: +1) and QRYPTIFY_BENCH_PG_PORT
# on a machine shared with other engineers; the test stack's: the stack's own variables.
_BENCH_KAFKA_PORT = int(os.environ.get("QRYPTIFY_BENCH_KAFKA_PORT", "29092"))
_BENCH_PG_PORT = int(os.environ.get("QRYPTIFY_BENCH_PG_PORT", "25432"))
BENCH_STACK_ENV = {
    "QRYPTIFY_STACK_DIR": str(REPO / ".stack-bench"),
    "QRYPTIFY_KAFKA_PORT": str(_BENCH_KAFKA_PORT),
    "QRYPTIFY_KAFKA_CONTROLLER_PORT": str(_BENCH_KAFKA_PORT + 1),
    "QRYPTIFY_PG_PORT": str(_BENCH_PG_PORT),
}
TEST_KAFKA = f"127.0.0.1:{os.environ.get('QRYPTIFY_KAFKA_PORT', '19092')}"
TEST_PG = (
    f"postgresql://postgres:postgres@127.0.0.1:{os.environ.get('QRYPTIFY_PG_PORT', '15432')}"
    "/postgres"
)
BENCH_KAFKA = f"127.0.0.1:{_BENCH_KAFKA_PORT}"
BENCH_PG = f"postgresql://postgres:postgres@127.0.0.1:{_BENCH_PG_PORT}/postgres"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


FigureFn = Callable[[Context, FigureResult], None]


@dataclass(frozen=True)
class Figure:
    key: str
    number: str
    title: str
    run: FigureFn


# ---------------------------------------------------------------------------------------------
# the figures (each module imported lazily: a missing one is "pending", not a crash)
# ---------------------------------------------------------------------------------------------


def _lazy(module: str, function: str) -> FigureFn:
    def run(ctx: Context, result: FigureResult) -> None:
        mod = importlib.import_module(module)
        getattr(mod, function)(ctx, result)

    return run


FIGURES: tuple[Figure, ...] = (
    Figure(
        "replay",
        "1",
        "Replay: topic → DB vs raw COPY",
        _lazy("bench.figures", "replay_figure"),
    ),
    Figure(
        "history",
        "2",
        "Full history 8 pairs × 1m × 1 y vs the seed",
        _lazy("bench.figures", "history_figure"),
    ),
    Figure(
        "weight",
        "3",
        "Backfill under the real weight limit",
        _lazy("bench.figures", "weight_figure"),
    ),
    Figure(
        "archive",
        "4",
        "Archive path alone: zip → Kafka ack",
        _lazy("bench.figures", "archive_figure"),
    ),
    Figure(
        "live",
        "5",
        "Live 500 pairs × 1m: x:true → ack / DB",
        _lazy("bench.figures", "live_figure"),
    ),
    Figure(
        "resources",
        "6–7",
        "Memory and CPU per service at 1,000 pairs",
        _lazy("bench.figures", "resources_figure"),
    ),
)


def run_figure(figure: Figure, ctx: Context) -> FigureResult:
    result = FigureResult(figure.key, figure.number, figure.title)
    started = time.monotonic()
    say(f"figure {figure.number} ({figure.key}): {figure.title}")
    load_start = load_average()
    try:
        ctx.check_load(f"figure {figure.number}")
        figure.run(ctx, result)
    except Pending as exc:
        result.status = "pending"
        result.error = str(exc)
    except LoadTooHigh as exc:
        result.status = "refused"
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one failing figure must not lose the others
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    result.seconds = time.monotonic() - started
    result.raw["load_average"] = {"start": load_start, "end": load_average()}
    say(
        f"figure {figure.number} ({figure.key}): {result.status} in {result.seconds:.0f}s, "
        f"load average {load_start[0]:.2f} → {result.raw['load_average']['end'][0]:.2f}"
    )
    return result


# ---------------------------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------------------------


def _port_open(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


@contextlib.contextmanager
def bench_stack(keep: bool) -> Iterator[tuple[str, str]]:
    """The dedicated bench stack: started if needed; stopped at the end if started here."""
    env = {**os.environ, **BENCH_STACK_ENV}
    running = _port_open(BENCH_KAFKA) and _port_open(BENCH_PG.split("@")[1].split("/")[0])
    if not running:
        say("starting the bench stack (python -m stack up --profile test, .stack-bench/)")
    cmd = [sys.executable, "-m", "stack", "up", "--profile", "test"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: the bench stack did not start:\n{proc.stdout}{proc.stderr}")
    try:
        yield BENCH_KAFKA, BENCH_PG
    finally:
        if not running and not keep:
            gc.collect()  # Kafka clients left by figures disconnect before the broker goes
            say("stopping the bench stack (it was not running before)")
            subprocess.run(
                [sys.executable, "-m", "stack", "down", "--profile", "test"],
                cwd=REPO,
                env=env,
                capture_output=True,
                check=False,
            )


# ---------------------------------------------------------------------------------------------
# machine information
# ---------------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def machine_info(kafka: str, pg: str) -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": bool(_git("status", "--porcelain")),
        "load_average_at_start": list(load_average()),
        "core": _core(),
        "kafka_bootstrap": kafka,
    }
    info |= _versions(kafka, pg)
    return info


def _core() -> str:
    from qryptify import native

    return native.CORE


def _versions(kafka: str, pg: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        from qryptify import db

        with db.connect(pg) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["postgresql"] = None if row is None else str(row[0])
            out["timescaledb"] = db.timescale_version(conn)
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'shared_buffers', 'full_page_writes')"
            ).fetchall()
            out["postgresql_settings"] = {str(n): str(v) for n, v in settings}
    except Exception as exc:  # noqa: BLE001 - informational only
        out["postgresql"] = f"unknown ({exc})"
    out["kafka"] = os.environ.get("QRYPTIFY_KAFKA_VERSION") or _kafka_version()
    with contextlib.suppress(Exception):
        import confluent_kafka

        out["librdkafka"] = confluent_kafka.libversion()[0]
        out["confluent_kafka"] = confluent_kafka.__version__
    return out


def _kafka_version() -> str:
    try:
        from stack.config import KAFKA_VERSION

        return KAFKA_VERSION
    except ImportError:
        return "unknown"


def other_load() -> list[str]:
    """Other heavy Python processes (tests, benches) running now: the machine is shared."""
    found: list[str] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        cmd = _read(f"/proc/{entry.name}/cmdline").replace("\0", " ").strip()
        if "pytest" in cmd and "bench" not in cmd:
            found.append(cmd[:120])
    return found


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

HEADER = ("Fig", "Measure", "Ours", "Reference (same run)", "Ratio", "Target", "Met")


def table_rows(results: Sequence[FigureResult]) -> list[list[str]]:
    rows: list[list[str]] = []
    for fig in results:
        if fig.status != "ok" and not fig.rows:
            rows.append([fig.number, fig.title, fig.status, fig.error or "", "", "", ""])
            continue
        for row in fig.rows:
            reference = ""
            if row.reference is not None:
                unit = row.unit if row.reference_unit is None else row.reference_unit
                reference = fmt_spread(row.reference, unit)
                if row.reference_label:
                    reference = f"{row.reference_label}: {reference}"
            elif row.reference_label:
                reference = row.reference_label
            met = {True: "yes", False: "NO", None: ""}[row.met]
            rows.append(
                [
                    fig.number,
                    row.metric,
                    fmt_spread(row.ours, row.unit),
                    reference,
                    fmt_spread(row.ratio, "x") if row.ratio is not None else "",
                    row.target,
                    met,
                ]
            )
        if fig.status != "ok":
            rows.append([fig.number, f"({fig.status})", fig.error or "", "", "", "", ""])
    return rows


def _reps_text(report: dict[str, Any]) -> str:
    text = f"{report['reps']} repetition(s) per figure"
    special = report.get("reps_by_figure") or {}
    if special:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in special.items()) + ")"
    return text


def render_markdown(report: dict[str, Any], results: Sequence[FigureResult]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {m['date']} on {m['nproc']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB RAM, Linux {m['kernel']}; Python {m['python']}, "
        f"Kafka {m.get('kafka')}, PostgreSQL {m.get('postgresql')}"
        f"{', TimescaleDB ' + m['timescaledb'] if m.get('timescaledb') else ' (no TimescaleDB)'};"
        f" commit {(m.get('git_commit') or '?')[:10]}{' (dirty)' if m.get('git_dirty') else ''}.",
        "",
        f"Command: `{report['command']}` — {_reps_text(report)}, median [min–max]; every "
        "ratio is taken within one repetition (ours and its reference side by side).",
        "",
        f"Core: {m.get('core', '?')}. Load average (1/5/15 min) at start "
        f"{_load_text(m.get('load_average_at_start'))}, at end "
        f"{_load_text(m.get('load_average_at_end'))} on {m['nproc']} cores; repetitions refused "
        f"above {report.get('max_load') or 'no limit'}.",
        "",
        markdown_table(HEADER, table_rows(results)),
        "",
    ]
    notes = [(f.number, n) for f in results for n in f.notes]
    if notes:
        lines.append("Notes:")
        lines.extend(f"- ({number}) {note}" for number, note in notes)
        lines.append("")
    if report.get("other_load"):
        lines.append(
            f"The machine was shared: {len(report['other_load'])} test process(es) ran during "
            "the bench (ratios are measured side by side, absolute numbers are lower)."
        )
        lines.append("")
    return "\n".join(lines)


def _load_text(load: Sequence[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in load) if load else "?"


BEGIN_MARK = "<!-- bench:begin (generated by python -m bench --markdown; edit outside) -->"
END_MARK = "<!-- bench:end -->"


def splice(document: str, generated: str) -> str:
    """Replace what lies between the markers (or append them): the prose around survives."""
    block = f"{BEGIN_MARK}\n{generated.rstrip()}\n{END_MARK}"
    start = document.find(BEGIN_MARK)
    end = document.find(END_MARK)
    if start == -1 or end < start:
        return (document.rstrip() + "\n\n" if document.strip() else "") + block + "\n"
    return document[:start] + block + document[end + len(END_MARK) :]


def write_markdown(path: Path, generated: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    path.write_text(splice(existing, generated))


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [f.key for f in FIGURES]
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small scale, 1 rep, < 3 minutes")
    p.add_argument("--only", default="", help=f"comma-separated figures: {', '.join(names)}")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    p.add_argument(
        "--reps-for",
        default="",
        metavar="NAME=N[,NAME=N]",
        help="repetitions for some figures only (e.g. history=1 when time is short)",
    )
    p.add_argument("--out", type=Path, default=None, help=f"JSON (default {DEFAULT_OUT})")
    p.add_argument(
        "--markdown",
        type=Path,
        action="append",
        default=[],
        help="also write the markdown table between the bench markers of this file (repeatable;"
        " e.g. README.md and docs/performance.md)",
    )
    p.add_argument("--stack", choices=("bench", "test", "external"), default="bench")
    p.add_argument("--keep-stack", action="store_true", help="leave a started bench stack up")
    p.add_argument("--kafka", default=TEST_KAFKA, help="with --stack external")
    p.add_argument("--pg", default=TEST_PG, help="admin DSN, with --stack external")
    p.add_argument(
        "--profile",
        choices=("replay", "archive"),
        default=None,
        help="also profile that hot path with pyinstrument → bench/results/profile-NAME.txt",
    )
    p.add_argument("--workdir", type=Path, default=None, help="logs and configs (default: tmp)")
    p.add_argument(
        "--max-load",
        type=float,
        default=float(os.environ.get("QRYPTIFY_BENCH_MAX_LOAD", "0") or 0) or None,
        help="refuse to start (and refuse a figure or repetition) while the 1-minute load "
        "average is above this (default: env QRYPTIFY_BENCH_MAX_LOAD, else 1.5 × cores)",
    )
    args = p.parse_args(argv)
    if args.max_load is None:
        args.max_load = 1.5 * (os.cpu_count() or 1)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"--only: unknown figure(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.only_list = chosen or names
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        p.error("--reps must be ≥ 1")
    args.reps_by_figure = {}
    for item in (x.strip() for x in args.reps_for.split(",")):
        if not item:
            continue
        name, sep, count = item.partition("=")
        if not sep or name not in names or not count.isdigit() or int(count) < 1:
            p.error(f"--reps-for: expected NAME=N with NAME one of {', '.join(names)}: {item!r}")
        args.reps_by_figure[name] = int(count)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    return args


@contextlib.contextmanager
def chosen_stack(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.stack == "bench":
        with bench_stack(args.keep_stack) as endpoints:
            yield endpoints
    elif args.stack == "test":
        yield TEST_KAFKA, TEST_PG
    else:
        yield args.kafka, args.pg


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: every simulator and service this run started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    command = "make bench" + (" QUICK=1" if args.quick else "")
    if argv is not None or sys.argv[1:]:
        command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    load = load_average()
    say(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; --max-load {args.max_load:g}")
    if load[0] > args.max_load:
        say(
            f"refused: the 1-minute load average {load[0]:.2f} is above --max-load "
            f"{args.max_load:g}; figures measured now would measure the other jobs (raise it with "
            "--max-load or QRYPTIFY_BENCH_MAX_LOAD on a shared machine, and say so with the result)"
        )
        return 3
    started = time.monotonic()
    workdir = args.workdir or Path(f"/tmp/qryptify-bench-{os.getpid()}")  # noqa: S108
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[FigureResult] = []
    with chosen_stack(args) as (kafka, pg):
        machine = machine_info(kafka, pg)
        load_before = other_load()
        for figure in FIGURES:
            if figure.key in args.only_list:
                reps = args.reps_by_figure.get(figure.key, args.reps)
                ctx = Context(kafka, pg, workdir, args.quick, reps, args.profile, args.max_load)
                results.append(run_figure(figure, ctx))
        load_after = other_load()
    for cache in sorted(workdir.rglob("*cache*"), reverse=True):  # downloaded archive zips
        if cache.is_dir():
            shutil.rmtree(cache, ignore_errors=True)
    machine["load_average_at_end"] = list(load_average())
    report: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "reps": args.reps,
        "reps_by_figure": args.reps_by_figure,
        "max_load": args.max_load,
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine,
        "other_load": sorted(set(load_before + load_after)),
        "figures": {r.key: r.to_json() for r in results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    print(text_table(HEADER, table_rows(results)))
    for fig in results:
        for note in fig.notes:
            print(f"  ({fig.number}) {note}")
    print(
        f"\n{machine['nproc']} cores, {machine['cpu_model']}, {machine['memory_gib']} GiB; "
        f"Python {machine['python']}, Kafka {machine.get('kafka')}, "
        f"PostgreSQL {machine.get('postgresql')}; {machine['date']}; "
        f"commit {(machine.get('git_commit') or '?')[:10]}; {report['seconds']:.0f}s total"
    )
    print(
        f"core: {machine['core']}; load average {_load_text(machine['load_average_at_start'])} "
        f"at start, {_load_text(machine['load_average_at_end'])} at end (--max-load "
        f"{args.max_load:g})"
    )
    if report["other_load"]:
        print(f"machine shared with {len(report['other_load'])} test process(es) during the run")
    print(f"written: {args.out}")
    for path in args.markdown:
        write_markdown(path, render_markdown(report, results))
        print(f"written: {path}")
    return 1 if any(r.status in ("failed", "refused") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
