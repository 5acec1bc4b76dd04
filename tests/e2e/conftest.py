"""End-to-end fixtures: the integration fixtures (real Kafka, real PostgreSQL, unique topics
and databases per test), an in-process exchange simulator on port 0, and the backfill
environment built on the three (``backfill_env``).

Shared by every e2e module: append, do not replace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from qryptify.config import KafkaConfig
from sim.server import SimulatorThread
from tests.e2e.backfill_support import FROZEN, SIM_NOW, BackfillEnv
from tests.integration.conftest import (  # noqa: F401 - re-exported fixtures
    app_config,
    db_dsn,
    kafka_bootstrap,
    kafka_cfg,
    pg_admin_dsn,
    unique,
)


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorThread]]:
    """Start simulators with ``simulator(**SimConfig overrides)``; all stop after the test."""
    started: list[SimulatorThread] = []

    def start(**overrides: Any) -> SimulatorThread:
        sim = SimulatorThread(**overrides)
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def backfill_env(
    simulator: Callable[..., SimulatorThread],
    kafka_cfg: KafkaConfig,  # noqa: F811 - the fixture re-exported above
    db_dsn: str,  # noqa: F811 - the fixture re-exported above
    tmp_path: Path,
) -> Iterator[Callable[..., BackfillEnv]]:
    """``backfill_env(pairs, start_date=…)``: an in-process simulator (``start_ms``/``speed``
    default to the frozen ``SIM_NOW``; further keywords are ``SimConfig`` overrides) and a
    ``BackfillEnv`` on this test's topics and database. ``ws`` adds a ``ws`` config section
    pointed at that simulator's stream; ``extra`` is ``BackfillEnv.extra``. The services an
    environment started are killed after the test."""
    made: list[BackfillEnv] = []

    def make(
        pairs: Sequence[str],
        *,
        start_date: str,
        start_ms: int = SIM_NOW,
        speed: float = FROZEN,
        ws: Mapping[str, Any] | None = None,
        extra: Mapping[str, dict[str, Any]] | None = None,
        **sim_overrides: Any,
    ) -> BackfillEnv:
        sim = simulator(start_ms=start_ms, speed=speed, **sim_overrides)
        sections = dict(extra or {})
        if ws is not None:
            sections["ws"] = {"endpoint": f"{sim.ws_url}/market/stream", **ws}
        environment = BackfillEnv(
            sim, kafka_cfg, db_dsn, tmp_path, pairs, start_date=start_date, extra=sections
        )
        made.append(environment)
        return environment

    yield make
    for environment in made:
        environment.cleanup()
