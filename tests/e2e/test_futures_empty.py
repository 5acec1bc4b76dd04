"""Exchange-confirmed empty ranges of the price kinds, end to end: simulator (two maintenance
windows of BTCUSDT: one inside a daily archive file, one in the REST tail) → backfiller →
the futures topic → the sink's futures path → the mark/index/premium kline tables and their
empty-range tables; then ``qryptify status`` (healthy, 0 gaps, the confirmed candles counted as
empty), ``tap --futures``, a second run (nothing asked again), reset-db + replay (the same
ranges), and what is not confirmed: a recorded range removed, candles lost — both gaps again.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable

import pytest
from psycopg import sql

from qryptify import db
from qryptify.futures.price import EMPTY_TABLES, TABLES
from qryptify.health_report import EXIT_UNHEALTHY
from qryptify.pairs import HOUR_MS, MINUTE_MS
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import BackfillEnv
from tests.e2e.futures_support import (
    backfill_with_sink,
    backfiller,
    cli,
    compare_all_prices,
    run_cli,
    status_rows,
)

pytestmark = pytest.mark.e2e

START = "2024-07-01"
ARCHIVED = (parse_time_ms("2024-07-03T06:00:00Z"), parse_time_ms("2024-07-03T09:00:00Z"))
TAIL = (parse_time_ms("2024-07-10T03:00:00Z"), parse_time_ms("2024-07-10T05:00:00Z"))
PAIRS = ("BTCUSDT/1h", "BTCUSDT/15m", "ETHUSDT/1h")
KINDS = ("mark", "index", "premium")


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    windows = [{"symbol": "BTCUSDT", "start": a, "end": b} for a, b in (ARCHIVED, TAIL)]
    return backfill_env(PAIRS, start_date=START, faults={"empty_ranges": windows})


def _status(env: BackfillEnv) -> subprocess.CompletedProcess[str]:
    done = run_cli(env, "status")
    print(done.stdout, done.stderr[-2000:])
    return done


def _empty_rows(dsn: str) -> dict[str, list[tuple[str, str, int, int]]]:
    out: dict[str, list[tuple[str, str, int, int]]] = {}
    with db.connect(dsn) as conn:
        for kind, table in EMPTY_TABLES.items():
            rows = conn.execute(
                sql.SQL(
                    "SELECT symbol, interval, (extract(epoch FROM start_ts) * 1000)::bigint,"
                    " (extract(epoch FROM end_ts) * 1000)::bigint FROM {} ORDER BY 1, 2, 3"
                ).format(sql.Identifier(table))
            ).fetchall()
            out[kind] = [(str(s), str(i), int(a), int(b)) for s, i, a, b in rows]
    return out


def test_confirmed_empty_price_ranges_are_recorded_and_not_gaps(env: BackfillEnv) -> None:
    prices_pass = backfill_with_sink(env, funding=False)

    start = parse_time_ms(START)
    end = env.sim.now_ms() + 1
    prices = compare_all_prices(env, KINDS, start, end)
    assert [(p.kind, p.pair, p.counts) for p in prices] == [
        (kind, pair, (0, 0, 0)) for kind in KINDS for pair in PAIRS
    ]
    # Nothing fabricated: no candle of any kind inside either window.
    with db.connect(env.dsn) as conn:
        for table in TABLES.values():
            inside = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM {} WHERE symbol = 'BTCUSDT' AND ("
                    "(ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)) OR"
                    " (ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)))"
                ).format(sql.Identifier(table)),
                (*ARCHIVED, *TAIL),
            ).fetchone()
            assert inside == (0,), table

    # Each window is one exchange-confirmed range per kind and BTCUSDT pair (the archived one
    # from the daily file's hole asked from REST, the other from the REST tail); ETHUSDT none.
    expected = [
        ("BTCUSDT", interval, a, b) for interval in ("15m", "1h") for a, b in (ARCHIVED, TAIL)
    ]
    assert _empty_rows(env.dsn) == {kind: expected for kind in KINDS}
    assert prices_pass.empty_ranges == 3 * 2 * 2
    # The trade klines recorded the same windows through the same mechanism.
    with db.connect(env.dsn) as conn:
        trade = conn.execute(
            "SELECT symbol, interval, (extract(epoch FROM start_ts) * 1000)::bigint,"
            " (extract(epoch FROM end_ts) * 1000)::bigint FROM empty_ranges ORDER BY 1, 2, 3"
        ).fetchall()
    assert [tuple(r) for r in trade] == expected

    # `qryptify status`: healthy; BTCUSDT's series have 0 gaps and the windows' candles empty.
    status = _status(env)
    assert status.returncode == 0, status.stdout[-3000:]
    per_series = {
        "BTCUSDT/1h": (3 + 2, 1),
        "BTCUSDT/15m": ((3 + 2) * 4, 4),
        "ETHUSDT/1h": (0, 1),
    }
    truth = {(p.kind, p.pair): p.truth for p in prices}
    assert status_rows(status.stdout) == {
        (kind, pair): (truth[(kind, pair)], 0, per_series[pair][0])
        for kind in KINDS
        for pair in PAIRS
    }

    # `qryptify tap --futures` shows the empty-range records, decoded.
    tap = cli(env, "tap", "--futures", "--from-beginning", "--exit-at-end", "--format", "json")
    tapped = [json.loads(line) for line in tap.splitlines() if line.startswith("{")]
    ranges = [r for r in tapped if r["type"] == "empty_range"]
    assert Counter((r["kind"], r["symbol"], r["interval"]) for r in ranges) == {
        (kind, "BTCUSDT", interval): 2 for kind in KINDS for interval in ("15m", "1h")
    }
    assert {(r["start_time"], r["end_time"]) for r in ranges} == {ARCHIVED, TAIL}
    table = cli(env, "tap", "--futures", "--from-beginning", "--exit-at-end")
    assert "BTCUSDT/1h mark" in table and "(exchange-confirmed)" in table

    # A second run asks nothing again: it resumes past the confirmed ranges.
    again = backfiller(env)
    assert again.run() == 0
    assert again.futures is not None and again.futures.prices is not None
    assert (again.futures.prices.published, again.futures.prices.empty_ranges) == (0, 0)
    assert again.futures.prices.rest_pages == 0

    # reset-db empties the tables; replay rebuilds them, the ranges included.
    assert env.services[0].stop() == 0
    cli(env, "reset-db", "-f")
    assert _empty_rows(env.dsn) == {kind: [] for kind in KINDS}
    cli(env, "replay", "--no-progress")
    assert _empty_rows(env.dsn) == {kind: expected for kind in KINDS}
    assert _status(env).returncode == 0

    # Not confirmed by the exchange, still a gap: a recorded range gone (the mark window of
    # BTCUSDT/1h in the archive), and index candles lost (never confirmed empty).
    lost = parse_time_ms("2024-07-05T10:00:00Z")
    with db.connect(env.dsn) as conn:
        conn.execute(
            "DELETE FROM mark_price_empty_ranges WHERE symbol = 'BTCUSDT' AND interval = '1h'"
            " AND start_ts = to_timestamp(%s / 1000.0)",
            (ARCHIVED[0],),
        )
        conn.execute(
            "DELETE FROM index_price_klines WHERE symbol = 'ETHUSDT' AND interval = '1h'"
            " AND ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)",
            (lost, lost + 2 * HOUR_MS),
        )
        conn.execute(
            "DELETE FROM premium_index_klines WHERE symbol = 'BTCUSDT' AND interval = '15m'"
            " AND ts = to_timestamp(%s / 1000.0)",
            (lost + 15 * MINUTE_MS,),
        )
        conn.commit()
    status = _status(env)
    assert status.returncode == EXIT_UNHEALTHY
    rows = status_rows(status.stdout)
    assert rows[("mark", "BTCUSDT/1h")][1:] == (3, 2)  # 3 candles missing, 2 still empty
    assert rows[("index", "ETHUSDT/1h")][1:] == (2, 0)
    assert rows[("premium", "BTCUSDT/15m")][1:] == (1, 20)
    assert "gaps     mark BTCUSDT/1h: 3 candles missing > --max-gaps 0" in status.stdout
    assert "gaps     index ETHUSDT/1h: 2 candles missing > --max-gaps 0" in status.stdout
    assert "gaps     premium BTCUSDT/15m: 1 candles missing > --max-gaps 0" in status.stdout
    assert {k: v for k, v in rows.items() if v[1]} == {
        ("mark", "BTCUSDT/1h"): rows[("mark", "BTCUSDT/1h")],
        ("index", "ETHUSDT/1h"): rows[("index", "ETHUSDT/1h")],
        ("premium", "BTCUSDT/15m"): rows[("premium", "BTCUSDT/15m")],
    }
