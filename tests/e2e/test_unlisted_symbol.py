"""One symbol the exchange does not list, beside good pairs: the good pairs complete, the
backfiller and the producer report it once and go on, ``qryptify status`` names it and exits
non-zero (no crash loop anywhere)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from tests.e2e.backfill_support import BackfillEnv, RecordingTransport
from tests.support.processes import PYTHON, ROOT, wait_until

pytestmark = pytest.mark.e2e

PAIRS = ("BTCUSDT/1h", "NOPEUSDT/1h", "ETHUSDT/15m")
GOOD = ("BTCUSDT/1h", "ETHUSDT/15m")


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    return backfill_env(PAIRS, start_date="2024-07-01")


def test_unlisted_symbol_is_reported_and_the_good_pairs_complete(env: BackfillEnv) -> None:
    env.start("services.sink")
    backfiller = env.backfiller(RecordingTransport())
    assert backfiller.run() == 0
    assert backfiller.summary.unlisted_pairs == ["NOPEUSDT/1h"]
    wait_until(env.sink_caught_up, 120, "the sink to write everything")
    reports = env.check(GOOD)
    assert [(len(r.missing), len(r.extra), len(r.wrong)) for r in reports] == [(0, 0, 0)] * 2
    assert all(r.db_rows > 0 for r in reports)

    status = subprocess.run(
        [PYTHON, "-m", "qryptify", "status", "--config", str(env.config_path()), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 3, status.stderr
    doc = json.loads(status.stdout)
    assert doc["unlisted"] == ["NOPEUSDT/1h"]
    assert [(b["check"], b["subject"]) for b in doc["breaches"]] == [("unlisted", "NOPEUSDT/1h")]

    producer = env.start("services.producer")
    wait_until(lambda: "streaming 2 pairs" in producer.text(), 60, "the producer to stream")
    assert producer.proc.poll() is None  # still running: no exit, no crash loop
    assert producer.stop() == 0
    reports_in_log = [line for line in producer.text().splitlines() if "NOPEUSDT" in line]
    assert len(reports_in_log) == 1 and "not listed on the exchange" in reports_in_log[0]
