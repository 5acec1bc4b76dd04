"""End-to-end fixtures: the integration fixtures (real Kafka, real PostgreSQL, unique topics
and databases per test) plus an in-process exchange simulator on port 0.

Shared by every e2e module: append, do not replace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sim.server import SimulatorThread
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
