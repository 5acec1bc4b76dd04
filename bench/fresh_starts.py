"""Fresh ``make up`` starts against the simulator at real speed, each checked by
``qryptify status --json`` a fixed time after the start (issue 20: the backfill → live handoff).

    .venv/bin/python -m bench.fresh_starts [--runs 20] [--after-s 60] [--seed N] [--json PATH]

Each run: wipe a private stack directory, wait for a chosen offset within the wall minute
(run i of n waits for ``i * 60 / n`` s plus a seeded random part of one such slot past the
minute, so the starts fall all over the minute and so all over the candle's life), run
``make up`` with the simulator (``--speed 1``, its clock at the real time) and the three
services, wait until ``--after-s`` seconds after ``make up`` was *invoked*, run
``qryptify status --json`` (exchange time from the simulator), record the verdict and the
breaches, then ``python -m stack down`` and wipe.

Ports and the stack directory are taken from the environment so that the stack does not collide
with anyone else's: QRYPTIFY_KAFKA_PORT, QRYPTIFY_KAFKA_CONTROLLER_PORT, QRYPTIFY_PG_PORT (all
required), QRYPTIFY_STACK_DIR (default /tmp/qryptify-fresh-starts), FRESH_SIM_PORT and
FRESH_METRICS_PORT (required: the simulator's port and the services' metrics base port).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
PAIRS = ("BTCUSDT/1m", "ETHUSDT/1m")


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"fresh_starts: set {name} (your own port)")
    return value


def config(stack_dir: Path, sim_port: int, kafka_port: int, pg_port: int, metrics: int) -> Path:
    sim = f"http://127.0.0.1:{sim_port}"
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    doc: dict[str, Any] = {
        "pairs": list(PAIRS),
        "rest": {"endpoint": sim},
        "ws": {"endpoint": f"ws://127.0.0.1:{sim_port}/market/stream"},
        "archive": {"endpoint": sim, "cache_dir": str(stack_dir / "archive-cache")},
        "db": {"dsn": f"postgresql://postgres:postgres@127.0.0.1:{pg_port}/qryptify"},
        "kafka": {"bootstrap_servers": f"127.0.0.1:{kafka_port}"},
        "backfill": {"start_date": yesterday},
        "metrics": {"port": metrics},
    }
    path = stack_dir.parent / f"{stack_dir.name}.config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(
    command: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([PY, "-m", "stack", *args], env)


def one_run(
    index: int, offset_s: float, cfg: Path, env: dict[str, str], after_s: float
) -> dict[str, Any]:
    stack(env, "wipe", "--config", str(cfg))
    # Wait for the chosen offset within the wall minute.
    now = time.time()
    target = now - now % 60 + offset_s
    if target <= now + 1:
        target += 60
    time.sleep(target - time.time())
    invoked = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    up = run(["make", "up", f"CONFIG={cfg}", "SERVICES=sim,backfiller,producer,sink"], env, 600)
    up_s = time.monotonic() - invoked
    result: dict[str, Any] = {
        "run": index,
        "offset_s": round(offset_s, 3),
        "started_at": started_at,
        "make_up_s": round(up_s, 1),
        "make_up_rc": up.returncode,
    }
    if up.returncode != 0:
        result["error"] = (up.stdout + up.stderr)[-2000:]
    else:
        time.sleep(max(0.0, invoked + after_s - time.monotonic()))
        result["status_at_s"] = round(time.monotonic() - invoked, 1)
        status = run([PY, "-m", "qryptify", "--config", str(cfg), "status", "--json"], env, 120)
        result["status_rc"] = status.returncode
        try:
            report = json.loads(status.stdout)
            result["healthy"] = report["healthy"]
            result["breaches"] = report["breaches"]
            result["pairs"] = {
                p["pair"]: {
                    k: p[k] for k in ("rows", "gap_count", "behind", "arriving", "stale_ms")
                }
                for p in report["pairs"]
            }
        except (ValueError, KeyError) as exc:
            result["healthy"] = False
            result["error"] = f"status output unreadable ({exc}): {status.stdout[-500:]}"
            result["stderr"] = status.stderr[-1000:]
    down = stack(env, "down", "--config", str(cfg))
    result["down_rc"] = down.returncode
    stack(env, "wipe", "--config", str(cfg))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--after-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    kafka_port = int(required("QRYPTIFY_KAFKA_PORT"))
    required("QRYPTIFY_KAFKA_CONTROLLER_PORT")
    pg_port = int(required("QRYPTIFY_PG_PORT"))
    sim_port = int(required("FRESH_SIM_PORT"))
    metrics = int(required("FRESH_METRICS_PORT"))
    stack_dir = Path(os.environ.get("QRYPTIFY_STACK_DIR", "/tmp/qryptify-fresh-starts"))  # noqa: S108
    env = {
        **os.environ,
        "QRYPTIFY_STACK_DIR": str(stack_dir),
        "QRYPTIFY_SIM_ARGS": f"--port {sim_port} --speed 1",
    }
    cfg = config(stack_dir, sim_port, kafka_port, pg_port, metrics)
    rng = random.Random(args.seed)
    slot = 60.0 / args.runs
    offsets = [i * slot + rng.uniform(0, slot) for i in range(args.runs)]
    rng.shuffle(offsets)
    results: list[dict[str, Any]] = []
    for i, offset in enumerate(offsets):
        result = one_run(i, offset, cfg, env, args.after_s)
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    healthy = sum(1 for r in results if r.get("healthy"))
    print(f"fresh starts: {healthy}/{len(results)} healthy at {args.after_s:.0f}s after make up")
    return 0 if healthy == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
