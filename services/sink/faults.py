"""Test-only fault injection: ``QRYPTIFY_SINK_CRASH_AT=POINT:N`` hard-kills the sink (exit 137,
no cleanup, like ``kill -9``) when the N-th batch reaches POINT of its cycle.

POINT is one of ``qryptify.sink.loop.HOOK_POINTS``. Unset (the normal case), nothing is hooked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from qryptify.errors import ConfigError
from qryptify.sink.loop import HOOK_POINTS, FaultHook

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
