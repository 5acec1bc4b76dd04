"""A simulator per test (port 0, background thread) and an HTTP client for it.

These tests need no Kafka or PostgreSQL (except test_sim_check.py, which uses the integration
tier's ``db_dsn``). Waits are hang guards scaled by QRYPTIFY_TEST_TIMEOUT_FACTOR; no assertion
is about how long something took.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sim.server import SimulatorThread
from tests.integration.sim.helpers import START_MS


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(speed=60, start_ms=START_MS) as running:
        yield running


@pytest.fixture
def http(sim: SimulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=30) as client:
        yield client
