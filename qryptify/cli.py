"""The ``qryptify`` command line (also ``python -m qryptify``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from qryptify.config import load_config
from qryptify.errors import ConfigError, IngestorError
from qryptify.logs import configure_logging
from qryptify.service import EXIT_CONFIG, EXIT_FAILURE, config_argument

#: Each module in qryptify.commands registers one subcommand.
COMMANDS = ("migrate", "check", "status", "reset-db", "replay", "tap", "audit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qryptify", description="Qryptify Ingestor: operate the kline pipeline."
    )
    config_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"qryptify.commands.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"qryptify: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(cfg, f"qryptify-{args.command}")
    try:
        code: int = args.run(args, cfg)
    except ConfigError as exc:
        print(f"qryptify {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except IngestorError as exc:
        print(f"qryptify {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code
