"""Where the sink's writer spends a replay's time, step by step in the database edge: a replay
of N klines into an empty database, then the same replay again into the now full table (the
no-op path), with wall-clock timers around ``qryptify.db``'s steps (the binary conversion,
the COPY, the COPY into the staging table and its upsert, the whole ``write_rows``).

    .venv/bin/python -m bench.write_steps [--rows 1000000] [--kafka HOST:PORT] [--pg DSN]
        [--out bench/results/write-steps.json]

Timers on the writer thread only; everything else as ``qryptify replay`` runs it. Reported,
never asserted; not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import replay_vs_copy as rvc
from bench.harness import base_doc, database, delete_topics, kafka_config
from bench.model import load_average
from bench.replay_vs_copy import klines, produce
from qryptify import db, native
from qryptify.commands.replay import replay
from qryptify.config import build_config
from qryptify.kafka import ensure_topics

#: The database edge's steps, in the order a batch runs them.
STEPS = ("copy_binary", "_copy_rows", "_insert_new", "_upsert", "write_rows")


def timed(
    seconds: defaultdict[str, float], calls: Counter[str], name: str, f: Callable[..., Any]
) -> Any:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started
            calls[name] += 1

    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=50)
    rvc.stack_arguments(parser)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    seconds: defaultdict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    for name in STEPS:
        setattr(db, name, timed(seconds, calls, name, getattr(db, name)))
    kafka = kafka_config(args.kafka, f"bench-steps-{uuid.uuid4().hex[:8]}", 6)
    ensure_topics(kafka)
    runs: dict[str, Any] = {}
    try:
        produce(kafka, klines(args.rows, args.pairs))
        with database(args.pg, f"bench_steps_{uuid.uuid4().hex[:8]}") as dsn:
            cfg = build_config(base_doc(pairs=[], kafka=kafka, dsn=dsn))
            for name in ("fresh", "noop"):
                seconds.clear()
                calls.clear()
                load = load_average()
                result = replay(cfg, dsn, progress=False)
                runs[name] = {
                    "rows": result.rows,
                    "elapsed_s": result.elapsed_s,
                    "rows_per_s": result.rows / result.elapsed_s,
                    "load": load,
                    "steps_s": {s: seconds[s] for s in STEPS if calls[s]},
                    "steps_us_per_row": {
                        s: seconds[s] * 1e6 / result.rows for s in STEPS if calls[s]
                    },
                    "calls": {s: calls[s] for s in STEPS if calls[s]},
                }
                print(f"{name}: {json.dumps(runs[name])}")
    finally:
        delete_topics(kafka)
    doc = {"rows": args.rows, "core": native.CORE, "runs": runs}
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
