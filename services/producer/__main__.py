"""qryptify-producer: wiring only (config → edges → run loop)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from qryptify.config import Config
from qryptify.metrics import Health
from qryptify.service import service_main


class _Idle:
    """Placeholder until the service's run loop lands: ready, waits for SIGTERM."""

    def __init__(self, stop: threading.Event, health: Health) -> None:
        self.stop = stop
        self.health = health

    def run(self) -> int:
        self.health.set(True, "idle")
        self.stop.wait()
        return 0


def build(cfg: Config, stop: threading.Event, health: Health) -> _Idle:
    return _Idle(stop, health)


def main(argv: Sequence[str] | None = None) -> int:
    return service_main("producer", argv, build, "producer service")


if __name__ == "__main__":
    raise SystemExit(main())
