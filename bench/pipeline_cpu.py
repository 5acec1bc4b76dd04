"""CPU per row of every process a replay uses, against raw COPY of the same rows.

    .venv/bin/python -m bench.pipeline_cpu --rows 1000000 [--kafka 127.0.0.1:19092]
        [--pg postgresql://postgres:postgres@127.0.0.1:15432/postgres] [--stack-dir .stack-test]

Produces N klines to a fresh topic, then runs, each into a fresh database: ``qryptify replay``
on the native core, the same on the pure-Python core, and a raw COPY; around each it reads the
CPU time of this process (consumer, writer and librdkafka threads: ``getrusage``), of the Kafka
broker and of the PostgreSQL cluster of the stack in ``--stack-dir`` (``/proc/<pid>/stat``,
the postmaster with its live and finished backends). The replay's CPU per row against the
database's is the arithmetic behind figure 1 (docs/performance.md). For COPY, "this process"
includes formatting the COPY text (or binary rows) in Python. The sink sends binary COPY when
the compiled core is built, so raw binary COPY is measured too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from bench import replay_vs_copy as rvc
from bench.harness import database, kafka_config, run_id

TICK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def python_core() -> Iterator[None]:
    """Run the block in this process on the pure-Python core (the reference for the native
    one): what ``QRYPTIFY_NATIVE=0`` selects at import."""
    from qryptify import native

    saved = native.MODULE, native.CORE
    native.MODULE, native.CORE = None, "python"
    try:
        yield
    finally:
        native.MODULE, native.CORE = saved


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int, *, children: bool = False) -> float:
    f = _stat(pid)
    own = (int(f[11]) + int(f[12])) / TICK
    return own + ((int(f[13]) + int(f[14])) / TICK if children else 0.0)


def find_pid(needle: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmd:
                return int(entry.name)
    raise SystemExit(f"no process whose command line holds {needle!r}")


def cluster_cpu_s(postmaster: int) -> float:
    """The postmaster, its finished backends and its live ones."""
    total = process_cpu_s(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                f = _stat(int(entry.name))
            except OSError:
                continue
            if int(f[1]) == postmaster:
                total += (int(f[11]) + int(f[12])) / TICK
    return total


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    from qryptify.commands.replay import replay
    from qryptify.config import build_config

    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_cpu", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--kafka", default=f"127.0.0.1:{os.environ.get('QRYPTIFY_KAFKA_PORT', '19092')}"
    )
    parser.add_argument(
        "--pg",
        default="postgresql://postgres:postgres@127.0.0.1:"
        f"{os.environ.get('QRYPTIFY_PG_PORT', '15432')}/postgres",
    )
    parser.add_argument("--stack-dir", default=".stack-test", help="the stack's data directory")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    stack = str(Path(args.stack_dir).resolve())
    broker = find_pid(f"{stack}/kafka/server.properties")
    postmaster = find_pid(f"postgres -D {stack}/pg-data")
    kafka = kafka_config(args.kafka, f"bench-cpu-{run_id()}", 6)
    items = rvc.klines(args.rows, 50)
    rvc.produce(kafka, items)
    report: dict[str, object] = {
        "rows": len(items),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "runs": {},
    }
    runs: dict[str, dict[str, float]] = {}
    for run in ("native", "python", "copy", "binary-copy"):
        with database(args.pg, f"bench_cpu_{run_id()}") as dsn:
            cfg = build_config({"kafka": kafka.model_dump(mode="json"), "db": {"dsn": dsn}})
            before = (own_cpu_s(), process_cpu_s(broker), cluster_cpu_s(postmaster))
            started = time.monotonic()
            if run == "copy":
                rvc.raw_copy(dsn, items)
            elif run == "binary-copy":
                rvc.raw_copy_binary(dsn, items)
            elif run == "python":
                with python_core():
                    replay(cfg, dsn, progress=False)
            else:
                replay(cfg, dsn, progress=False)
            wall = time.monotonic() - started
            after = (own_cpu_s(), process_cpu_s(broker), cluster_cpu_s(postmaster))
        us = [(b - a) * 1e6 / len(items) for a, b in zip(before, after, strict=True)]
        runs[run] = {
            "wall_us_per_row": wall * 1e6 / len(items),
            "process_cpu_us_per_row": us[0],
            "broker_cpu_us_per_row": us[1],
            "postgresql_cpu_us_per_row": us[2],
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        print(
            f"{run:11s} wall {wall * 1e6 / len(items):.2f} µs/row; CPU µs/row: this process "
            f"{us[0]:.2f}, Kafka broker {us[1]:.2f}, PostgreSQL {us[2]:.2f}; total {sum(us):.2f}; "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    if args.out is not None:
        report["runs"] = runs
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
