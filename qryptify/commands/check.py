"""``qryptify check --against-sim URL``: compare the database with the simulator's truth."""

from __future__ import annotations

import argparse

from qryptify.config import Config
from qryptify.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("check", help="compare the database with the simulator's truth")
    parser.add_argument("--against-sim", required=True, metavar="URL", help="simulator base URL")
    parser.add_argument("--dsn", default=None, help="database (default: db.dsn)")
    parser.add_argument(
        "--start",
        default=None,
        help="ISO date or ms (default: backfill.start_date)",
    )
    parser.add_argument("--end", default=None, help="ISO date or ms (default: the sim's now)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        # The simulator ships in the same distribution, its dependencies in the `sim` extra.
        from sim.check import main as check_main
    except ImportError as exc:
        raise ConfigError(
            "check", "--against-sim", f"needs pip install 'qryptify-ingestor[sim]' ({exc})"
        ) from None

    argv = ["--dsn", args.dsn or cfg.db.dsn.get_secret_value(), "--sim", args.against_sim]
    for pair in cfg.pairs:
        argv += ["--pair", str(pair)]
    argv += ["--start", args.start or str(cfg.backfill.start_ms)]
    if args.end:
        argv += ["--end", args.end]
    code: int = check_main(argv)
    return code
