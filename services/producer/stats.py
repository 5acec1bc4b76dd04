"""The producer's plain counters of one run (the Prometheus ones are process-wide)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RunStats:
    """Plain counters of this run (the Prometheus ones are process-wide)."""

    frames: int = 0
    published_ws: int = 0
    published_rest: int = 0
    duplicates: int = 0
    malformed: int = 0
    reconnects: int = 0
    rotations: int = 0
    abandoned_rotations: int = 0
    stale_replaced: int = 0
    watchdog_fetches: int = 0
    gap_fill_fetches: int = 0
    rest_errors: int = 0
    server_closes: dict[str, int] = field(default_factory=dict)
