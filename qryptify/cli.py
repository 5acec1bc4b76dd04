"""The ``qryptify`` command line (also ``python -m qryptify``).

Exit status of every command: 0 done, 1 unexpected failure, 2 bad configuration or arguments
(a pair that is not configured too), 3 Kafka, PostgreSQL or the exchange unreachable (and
``status`` unhealthy), 4 no data yet (e.g. the topic does not exist). Expected failures print
one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from qryptify.config import load_config
from qryptify.errors import (
    ConfigError,
    DatabaseUnavailable,
    ExchangeUnavailable,
    IngestorError,
    KafkaUnavailable,
    NoDataYet,
)
from qryptify.logs import configure_logging, quiet_librdkafka
from qryptify.service import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_NO_DATA,
    EXIT_UNAVAILABLE,
    config_argument,
)

#: Each module in qryptify.commands registers one subcommand.
COMMANDS = ("config", "migrate", "check", "status", "reset-db", "replay", "tap", "audit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qryptify", description="Qryptify Ingestor: operate the kline pipeline."
    )
    config_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"qryptify.commands.{name.replace('-', '_')}").register(sub)
    # `qryptify status --config x` as well as `qryptify --config x status`.
    for command in _leaf_parsers(sub):
        config_argument(command, default=argparse.SUPPRESS)
    return parser


def _one_line(exc: BaseException) -> str:
    # libpq's messages span lines ("...refused\n\tIs the server running...").
    return " ".join(str(exc).split())


def _leaf_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for command in dict.fromkeys(sub.choices.values()):
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for inner in nested:
                found += _leaf_parsers(inner)
        else:
            found.append(command)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "run_without_config", None) is not None:
        code: int = args.run_without_config(args)
        return code
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"qryptify: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(cfg, f"qryptify-{args.command}")
    quiet_librdkafka(cfg.log.level)
    try:
        code = args.run(args, cfg)
    except ConfigError as exc:
        print(f"qryptify {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (DatabaseUnavailable, KafkaUnavailable, ExchangeUnavailable) as exc:
        print(f"qryptify {args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except NoDataYet as exc:
        print(f"qryptify {args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_NO_DATA
    except IngestorError as exc:
        print(f"qryptify {args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code
