"""qryptify-sink: wiring only (config → edges → run loop); see services/sink/run.py."""

from __future__ import annotations

from collections.abc import Sequence

from qryptify.service import service_main
from services.sink.run import build_sink


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(
        "sink", argv, build_sink, "Kafka klines topic → TimescaleDB (idempotent upserts)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
