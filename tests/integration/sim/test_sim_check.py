"""``sim check`` against a real PostgreSQL (the integration tier's migrated ``db_dsn``)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from qryptify.pairs import HOUR_MS, Pair
from sim.check import compare_db_with_truth
from sim.server import SimulatorThread
from tests.integration.sim.helpers import START_MS, WAIT_S

REPO = Path(__file__).resolve().parents[3]
START = START_MS - 6 * HOUR_MS
END = START_MS - HOUR_MS
INSERT = (
    "INSERT INTO candlesticks (ts, symbol, interval, open, high, low, close, volume, close_time, "
    "quote_asset_volume, number_of_trades, taker_buy_base, taker_buy_quote) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def load_truth(dsn: str, url: str, pair: Pair) -> list[list[Any]]:
    rows: list[list[Any]] = httpx.get(
        f"{url}/sim/truth",
        params={"symbol": pair.symbol, "interval": pair.interval, "start": START, "end": END},
        timeout=WAIT_S,
    ).json()
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(
            INSERT,
            [
                (
                    _ts(r[0]),
                    pair.symbol,
                    pair.interval,
                    float(r[1]),
                    float(r[2]),
                    float(r[3]),
                    float(r[4]),
                    float(r[5]),
                    _ts(r[6]),
                    float(r[7]),
                    r[8],
                    float(r[9]),
                    float(r[10]),
                )
                for r in rows
            ],
        )
    return rows


def test_check_finds_nothing_then_every_kind_of_discrepancy(db_dsn: str) -> None:
    pairs = [Pair("BTCUSDT", "5m"), Pair("ETHUSDT", "1h")]
    with SimulatorThread(speed=60, start_ms=START_MS) as sim:
        truth = {p: load_truth(db_dsn, sim.url, p) for p in pairs}
        report = compare_db_with_truth(db_dsn, sim.url, pairs, START, END)
        assert report.ok, report
        assert [p.truth_rows for p in report.pairs] == [60, 5]
        btc = truth[pairs[0]]
        with psycopg.connect(db_dsn) as conn:
            conn.execute(
                "DELETE FROM candlesticks WHERE symbol = 'BTCUSDT' AND ts = %s", (_ts(btc[3][0]),)
            )
            conn.execute(
                "UPDATE candlesticks SET close = close + 0.01 WHERE symbol = 'BTCUSDT' AND ts = %s",
                (_ts(btc[4][0]),),
            )
            conn.execute(
                INSERT,
                (_ts(START + 3), "BTCUSDT", "5m", 1, 1, 1, 1, 1, _ts(START + 300_002), 1, 1, 1, 1),
            )
        report = compare_db_with_truth(db_dsn, sim.url, pairs, START, END)
        b, e = report.pairs
        assert b.missing == (btc[3][0],) and b.extra == (START + 3,)
        assert [(w.open_time, w.column) for w in b.wrong] == [(btc[4][0], "close")]
        assert e.ok and not report.ok
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "sim",
                "check",
                "--dsn",
                db_dsn,
                "--sim",
                sim.url,
                "--pair",
                "BTCUSDT/5m",
                "--pair",
                "ETHUSDT-1h",
                "--start",
                str(START),
                "--end",
                str(END),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cli.returncode == 1, cli.stderr
        assert "BTCUSDT/5m" in cli.stdout and "DISCREPANCIES FOUND" in cli.stdout
