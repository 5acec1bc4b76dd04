"""What every service's ``main`` shares: arguments, config, logging, signals, metrics.

A service module supplies ``build(cfg, stop, health) -> Runner``; ``service_main`` does the
rest and maps outcomes to exit codes: 0 clean stop, 1 unexpected failure, 2 bad config.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

from qryptify.config import Config, load_config
from qryptify.errors import ConfigError, IngestorError
from qryptify.logs import configure_logging
from qryptify.metrics import SERVICE_PORT_OFFSET, Health, serve_metrics

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
#: Command-line tools: Kafka, PostgreSQL or the exchange cannot be reached (also `status`
#: when unhealthy).
EXIT_UNAVAILABLE = 3
#: Command-line tools: nothing to work on yet (no topic, no rows).
EXIT_NO_DATA = 4
#: Allocations (net of frees) between two collections of the youngest generation (Python's
#: default: 700).
GC_YOUNG_THRESHOLD = 50_000


class Runner(Protocol):
    def run(self) -> int: ...


def config_argument(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="YAML config file (default: $QRYPTIFY_CONFIG, else built-in defaults)",
    )


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set the flag; the run loop finishes its unit of work and exits 0."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def settle_garbage_collector() -> None:
    """Move everything alive after start-up (modules, config, clients) out of the collector's
    reach, and let the youngest generation grow before a collection: the bulk paths allocate
    and drop millions of short-lived containers, and each full collection walked every
    long-lived object again (13 % of the backfiller's samples on the full-history run)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def service_main(
    name: str,
    argv: Sequence[str] | None,
    build: Callable[[Config, threading.Event, Health], Runner],
    description: str,
) -> int:
    parser = argparse.ArgumentParser(prog=f"qryptify-{name}", description=description)
    config_argument(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"qryptify-{name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(cfg, name)
    for warning in cfg.warnings:
        logger.warning("%s", warning)
    stop = threading.Event()
    install_stop_handlers(stop)
    health = Health()
    if cfg.metrics.port:
        try:
            serve_metrics(
                cfg.metrics.host, cfg.metrics.port + SERVICE_PORT_OFFSET.get(name, 0), health
            )
        except OSError as exc:
            logger.warning("metrics endpoint not started: %s", exc)
    try:
        runner = build(cfg, stop, health)
        settle_garbage_collector()
        return runner.run()
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    except IngestorError as exc:
        logger.error("%s stopped: %s", name, exc)
        return EXIT_FAILURE
    except Exception:
        logger.exception("%s failed", name)
        return EXIT_FAILURE
