"""Control endpoints, counters, and the command-line entry point."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from sim.server import SimulatorThread
from tests.integration.sim.helpers import START_MS, WAIT_S, closes, collect

REPO = Path(__file__).resolve().parents[3]


def test_faults_get_post_delete(http: httpx.Client) -> None:
    assert http.get("/sim/faults").json()["rest_429_next"] == 0
    assert http.post("/sim/faults", json={"slow_ms": 1}).json()["slow_ms"] == 1
    bad = http.post("/sim/faults", json={"slow_msec": 1})
    assert bad.status_code == 400 and "unknown fault flag" in bad.json()["error"]
    assert http.post("/sim/faults", content=b"{nope").status_code == 400
    assert http.delete("/sim/faults").json()["slow_ms"] == 0


def test_clock_control(http: httpx.Client) -> None:
    before = http.get("/sim/clock").json()
    assert before["speed"] == 60 and before["now"] >= START_MS
    after = http.post("/sim/clock", json={"advance_ms": 3_600_000, "speed": 1}).json()
    assert after["speed"] == 1 and after["now"] >= before["now"] + 3_600_000
    server = http.get("/fapi/v1/time").json()["serverTime"]
    assert server >= after["now"]
    assert http.post("/sim/clock", json={"set_ms": START_MS}).status_code == 400  # backwards
    assert http.post("/sim/clock", json={"speed": 0}).status_code == 400
    assert http.post("/sim/clock", json={"rewind": 1}).status_code == 400


def test_truth_is_closed_candles_only_and_validates(http: httpx.Client) -> None:
    now = http.get("/fapi/v1/time").json()["serverTime"]
    rows = http.get(
        "/sim/truth", params={"symbol": "BTCUSDT", "interval": "1h", "start": now - 5 * 3_600_000}
    ).json()
    assert rows and all(row[6] < now for row in rows)
    assert http.get("/sim/truth", params={"symbol": "NOPE", "interval": "1h"}).status_code == 400
    assert (
        http.get(
            "/sim/truth", params={"symbol": "BTCUSDT", "interval": "1h", "start": "x"}
        ).status_code
        == 400
    )


def test_stats_count_what_clients_did(sim: SimulatorThread, http: httpx.Client) -> None:
    http.get("/fapi/v1/time")
    http.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": 500})
    http.get("/fapi/v1/klines", params={"symbol": "NOPE", "interval": "1m", "limit": 5})
    asyncio.run(
        collect(
            f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m", lambda fs: len(closes(fs)) >= 1
        )
    )
    stats = http.get("/sim/stats").json()
    assert stats["requests"] == 3 and stats["weight_used"] == 1 + 5 + 1
    assert stats["request_errors"] == 1
    assert stats["ws_connections_total"] == 1 and stats["ws_frames_sent"] >= 2
    assert stats["ws_closed_frames_sent"] >= 1
    for key in ("responses_429", "responses_418", "ws_connections_open", "archive_files_served"):
        assert key in stats


def test_cli_prints_the_url_and_serves() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "--port", "0", "--speed", "60", "--start", "2024-09-01"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sim listening on http://127.0.0.1:")
        url = line.removeprefix("sim listening on ")
        server_time = httpx.get(f"{url}/fapi/v1/time", timeout=WAIT_S).json()["serverTime"]
        assert server_time >= START_MS
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT_S)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0


def test_cli_rejects_bad_faults() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sim", "--faults", '{"bogus": 1}'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 2 and "bogus" in result.stderr
