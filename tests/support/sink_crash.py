"""The sink with a crash point, for tests: ``python -m tests.support.sink_crash --config PATH``
runs the real sink service and, when ``QRYPTIFY_SINK_CRASH_AT=POINT:N`` is set, hard-kills it
(exit 137, no cleanup, like ``kill -9``) when the N-th batch reaches POINT of its cycle.

POINT is one of ``qryptify.sink.loop.HOOK_POINTS``, the places the loop calls its optional hook.
The product only offers that callback (``services.sink.run.build_sink(..., hook=...)``); nothing
in the shipped sink reads this variable, so no environment can crash a production sink.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qryptify.config import Config
from qryptify.errors import ConfigError
from qryptify.metrics import Health
from qryptify.service import EXIT_CONFIG, service_main
from qryptify.sink.loop import HOOK_POINTS, FaultHook
from services.sink.run import SinkRunner, build_sink

ENV_CRASH_AT = "QRYPTIFY_SINK_CRASH_AT"
CRASH_EXIT_CODE = 137  # what a shell reports for SIGKILL


@dataclass(frozen=True, slots=True)
class CrashPoint:
    point: str
    batch: int


def parse_crash_at(value: str | None) -> CrashPoint | None:
    if value is None or not value.strip():
        return None
    point, sep, batch = value.strip().partition(":")
    if point not in HOOK_POINTS or (sep and not batch.isdigit()):
        raise ConfigError(
            ENV_CRASH_AT,
            value,
            f"expected POINT[:BATCH] with POINT one of {', '.join(HOOK_POINTS)}",
        )
    number = int(batch) if sep else 1
    if number < 1:
        raise ConfigError(ENV_CRASH_AT, value, "BATCH counts from 1")
    return CrashPoint(point, number)


def crash_hook(environ: Mapping[str, str]) -> FaultHook | None:
    target = parse_crash_at(environ.get(ENV_CRASH_AT))
    if target is None:
        return None

    def hook(point: str, batch: int) -> None:
        if point == target.point and batch == target.batch:
            sys.stderr.write(f"{ENV_CRASH_AT}: crashing at {point} of batch {batch}\n")
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)

    return hook


def main(argv: Sequence[str] | None = None) -> int:
    try:
        hook = crash_hook(os.environ)
    except ConfigError as exc:
        print(f"sink_crash: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def build(cfg: Config, stop: threading.Event, health: Health) -> SinkRunner:
        return build_sink(cfg, stop, health, hook=hook)

    return service_main("sink", argv, build, "the sink with a crash point (tests only)")


if __name__ == "__main__":
    raise SystemExit(main())
