"""``make bench`` / ``python -m bench``: every performance figure, each beside its reference
measured in the same repetition on the same machine and its target, as ONE table; the result
file (``bench/results/latest.json``, ``quick.json`` with ``--quick``) holds every repetition.

    .venv/bin/python -m bench [--quick] [--only replay,resources] [--reps 3]
                              [--out bench/results/latest.json] [--markdown docs/performance.md]
                              [--stack bench|test|external] [--profile NAME] [--max-load N]

The stack: by default a dedicated one (``--stack bench``: Kafka 127.0.0.1:29092, PostgreSQL
127.0.0.1:25432, data in ``.stack-bench/``; ``QRYPTIFY_BENCH_KAFKA_PORT`` /
``QRYPTIFY_BENCH_PG_PORT`` move it), started with ``python -m stack up --profile test`` when it
is not running, stopped again at the end if this run started it (``--keep-stack`` leaves it
up). ``--stack test`` uses the running test stack; ``--stack external`` takes ``--kafka`` and
``--pg``.

The experiments (``bench/experiments.py``) run ``--reps`` repetitions each (at least 3;
``--quick``: 1, at smoke scale, in a few minutes), the load average checked before every one.
The table (``bench/figures.py``) is rendered from the result file alone. One experiment that
fails or is refused is reported with its error and the run goes on. Timings are never asserted
by tests; ``tests/unit/bench`` covers the statistics, the renderer and the driver.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
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
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.experiments import EXPERIMENTS, Experiment
from bench.figures import HEADER, machine_line, render_markdown, splice, table_rows
from bench.model import Context, ExperimentResult, LoadTooHigh, json_safe, load_average
from bench.stats import text_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_OUT = RESULTS / "latest.json"
QUICK_OUT = RESULTS / "quick.json"
#: Every ratio of the full run comes from at least this many repetitions (issue 16).
MIN_REPS = 3

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


def run_experiment(experiment: Experiment, ctx: Context) -> ExperimentResult:
    """Run one experiment's repetitions, the load average checked (and recorded) before each;
    a failure or a refusal keeps the repetitions measured so far and the run goes on."""
    result = ExperimentResult(experiment.key, experiment.title)
    started = time.monotonic()
    say(f"{experiment.key}: {experiment.title}")
    reps = experiment.run(ctx, result)
    try:
        while True:
            load = ctx.check_load(f"{experiment.key} rep {len(result.reps) + 1}")
            try:
                rep = next(reps)
            except StopIteration:
                break
            result.add(rep, load)
    except LoadTooHigh as exc:
        result.status = "refused"
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one failing experiment must not lose the others
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    finally:
        reps.close()  # a generator stopped early cleans up (topics, databases, processes)
    result.seconds = time.monotonic() - started
    say(f"{experiment.key}: {result.status} in {result.seconds:.0f}s")
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
        from stack.settings import KAFKA_VERSION

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


def write_markdown(path: Path, generated: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    path.write_text(splice(existing, generated))


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [e.key for e in EXPERIMENTS]
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke scale, 1 repetition, minutes")
    p.add_argument("--only", default="", help=f"comma-separated experiments: {', '.join(names)}")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default and minimum 3; "
                   "--quick: 1)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help=f"JSON (default {DEFAULT_OUT})")
    p.add_argument(
        "--markdown",
        type=Path,
        action="append",
        default=[],
        help="also write the table between the bench markers of this file (repeatable; "
        "make bench: README.md and docs/performance.md)",
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
        help="refuse to start (and refuse a repetition) while the 1-minute load average is "
        "above this (default: env QRYPTIFY_BENCH_MAX_LOAD, else 1.5 × cores)",
    )
    args = p.parse_args(argv)
    if args.max_load is None:
        args.max_load = 1.5 * (os.cpu_count() or 1)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        p.error(f"--only: unknown experiment(s) {', '.join(unknown)}; choose from "
                f"{', '.join(names)}")  # fmt: skip
    args.only_list = chosen or names
    if args.reps is None:
        args.reps = 1 if args.quick else MIN_REPS
    if args.reps < 1 or (args.reps < MIN_REPS and not args.quick):
        p.error(f"--reps must be ≥ {MIN_REPS}: every ratio comes from at least {MIN_REPS} "
                "repetitions (--quick runs 1, at smoke scale)")  # fmt: skip
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
    results: list[ExperimentResult] = []
    with chosen_stack(args) as (kafka, pg):
        machine = machine_info(kafka, pg)
        load_before = other_load()
        ctx = Context(kafka, pg, workdir, args.quick, args.reps, args.profile, args.max_load)
        for experiment in EXPERIMENTS:
            if experiment.key in args.only_list:
                results.append(run_experiment(experiment, ctx))
        load_after = other_load()
    for cache in sorted(workdir.rglob("*cache*"), reverse=True):  # downloaded archive zips
        if cache.is_dir():
            shutil.rmtree(cache, ignore_errors=True)
    machine["load_average_at_end"] = list(load_average())
    report: dict[str, Any] = json_safe(
        {
            "out": _shown(args.out),
            "command": command,
            "quick": args.quick,
            "reps": args.reps,
            "max_load": args.max_load,
            "seconds": round(time.monotonic() - started, 1),
            "machine": machine,
            "other_load": sorted(set(load_before + load_after)),
            "experiments": {r.key: r.to_json() for r in results},
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(text_table(HEADER, table_rows(report)))
    print(f"\n{machine_line(report)}\n{report['seconds']:.0f}s in all")
    print(f"written: {args.out}")
    for path in args.markdown:
        write_markdown(path, render_markdown(report))
        print(f"written: {path}")
    return 1 if any(r.status in ("failed", "refused") for r in results) else 0


def _shown(path: Path) -> str:
    """The result file as the docs name it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


if __name__ == "__main__":
    raise SystemExit(main())
