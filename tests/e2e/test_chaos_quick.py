"""``make chaos QUICK=1`` inside ``make test``: the whole pipeline under every kind of fault, on
its own Kafka + PostgreSQL (ports 39192 / 35532 unless ``QRYPTIFY_CHAOS_KAFKA_PORT`` /
``QRYPTIFY_CHAOS_PG_PORT`` choose others; ``.stack-chaos-quick``), so the shared test stack is
never restarted. The run checks itself (chaos/run.py) and exits non-zero on any
violation; this test runs it and shows its report when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import clean_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
#: Fixed: CI runs the same schedule every time (chaos/faults.py is a pure function of it).
SEED = 20240712
#: A hang guard, not a timing assertion (the run takes about three minutes).
LIMIT_S = 900


def test_quick_chaos_run_converges_with_no_violation() -> None:
    # The run's own ports pass through; every other QRYPTIFY_* override is left behind.
    env = clean_env({k: v for k, v in os.environ.items() if k.startswith("QRYPTIFY_CHAOS_")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaos", "--quick", "--seed", str(SEED)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the run stops its services and its stack
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"the chaos run did not finish within {LIMIT_S}s:\n{out[-12_000:]}")
    assert proc.returncode == 0, f"chaos run failed (exit {proc.returncode}):\n{out[-12_000:]}"
    assert "PASS" in out
