"""``python -m sim``: serve the simulator, or ``check`` a database against it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence

from sim.faults import FaultError, load_faults
from sim.funding import parse_funding_changes
from sim.server import SimConfig, run_simulator
from sim.state import ARCHIVE_CACHE_BYTES
from sim.symbols import DEFAULT_SYMBOLS, load_symbols, parse_time_ms


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qryptify-sim", description="Binance USDⓈ-M simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument("--speed", type=float, default=1.0, help="sim seconds per wall second")
    p.add_argument("--start", default=None, help="sim time at start: ISO date or epoch ms")
    p.add_argument("--symbols", default=None, help="YAML symbol list (default: built-in)")
    p.add_argument("--weight-limit", type=int, default=2400)
    p.add_argument("--weight-window-s", type=float, default=60.0, help="wall seconds")
    p.add_argument("--ban-s", type=float, default=120.0, help="418 ban length, wall seconds")
    p.add_argument("--ban-after", type=int, default=5, help="requests tolerated after a 429")
    p.add_argument("--ping-interval-s", type=float, default=180.0, help="wall seconds; 0 = off")
    p.add_argument("--faults", default=None, help="fault flags: JSON text or a JSON file")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--funding-changes",
        default=None,
        help='funding interval changes, JSON [["ETHUSDT", "2024-06-15", 4], …]',
    )
    p.add_argument(
        "--archive-cache-mb",
        type=int,
        default=ARCHIVE_CACHE_BYTES >> 20,
        help="built archive zips kept in memory, MiB",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "check":
        from sim.check import main as check_main

        return check_main(args_list[1:])
    args = _parser().parse_args(args_list)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        config = SimConfig(
            symbols=load_symbols(args.symbols) if args.symbols else DEFAULT_SYMBOLS,
            speed=args.speed,
            start_ms=None if args.start is None else parse_time_ms(args.start, "--start"),
            host=args.host,
            port=args.port,
            weight_limit=args.weight_limit,
            weight_window_s=args.weight_window_s,
            ban_after_429s=args.ban_after,
            ban_s=args.ban_s,
            ping_interval_s=args.ping_interval_s,
            faults=load_faults(args.faults),
            seed=args.seed,
            funding_changes=parse_funding_changes(args.funding_changes),
            archive_cache_bytes=args.archive_cache_mb << 20,
        )
    except (FaultError, ValueError, OSError) as exc:
        print(f"qryptify-sim: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(config))
    return 0


async def _serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with run_simulator(config) as sim:
        # The sender allocates short-lived tuples for every frame; with the default thresholds
        # the collector runs hundreds of times a second and its occasional full passes over the
        # market caches delay close frames. Fewer collections, and none over startup objects.
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        print(f"sim listening on {sim.url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    raise SystemExit(main())
