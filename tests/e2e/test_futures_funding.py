"""All four futures kinds end to end: simulator (archive months + REST tail, one symbol whose
funding interval changes twice mid-history, archive months missing) → backfiller → the futures
topic → the sink's futures path → funding_rates and the mark/index/premium kline tables,
compared row by row with the truth; then status, tap, reset + replay, and a second run."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from qryptify import db
from qryptify.pairs import HOUR_MS
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import BackfillEnv
from tests.e2e.futures_support import (
    backfill_with_sink,
    backfiller,
    cli,
    compare_all_prices,
    compare_funding,
    compare_prices,
    run_cli,
    status_rows,
)
from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e

START = "2024-04-01"
TO_4H = parse_time_ms("2024-06-15T04:00:00Z")  # ETHUSDT: 8 h → 4 h (archive months)
TO_1H = parse_time_ms("2024-07-03T00:00:00Z")  # ETHUSDT: 4 h → 1 h (the REST tail)
MISSING = "BNBUSDT-fundingRate-2024-05.zip"
MISSING_PRICES = "ETHUSDT-4h-2024-05.zip"  # every kind's (and the klines') May file
PAIRS = ("BTCUSDT/1h", "ETHUSDT/4h", "BNBUSDT/1d")
KINDS = ("mark", "index", "premium")


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    return backfill_env(
        PAIRS,
        start_date=START,
        funding_changes=(("ETHUSDT", TO_4H, 4), ("ETHUSDT", TO_1H, 1)),
        faults={"archive_missing": [MISSING, MISSING_PRICES]},
    )


def test_all_futures_kinds_match_the_truth(env: BackfillEnv) -> None:
    prices_pass = backfill_with_sink(env)

    start = parse_time_ms(START)
    end = env.sim.now_ms() + 1
    reports = {s: compare_funding(env.dsn, env.sim.url, s, start, end) for s in
               ("BTCUSDT", "ETHUSDT", "BNBUSDT")}  # fmt: skip
    for r in reports.values():
        print(r.symbol, r.truth, r.counts, r.missing[:3], r.extra[:3], r.wrong[:3])
    assert {s: r.counts for s, r in reports.items()} == {
        "BTCUSDT": (0, 0, 0),
        "ETHUSDT": (0, 0, 0),
        "BNBUSDT": (0, 0, 0),
    }
    prices = compare_all_prices(env, KINDS, start, end)
    assert [(p.kind, p.pair, p.counts) for p in prices] == [
        (kind, pair, (0, 0, 0)) for kind in KINDS for pair in PAIRS
    ]
    assert all(p.truth > 0 for p in prices)
    # Per kind: archive months April..June and days July 1..9 for BTC and BNB; April only for
    # ETH (its May file is missing), then its daily files from May 1 to July 9; REST after.
    assert prices_pass.archive_files == 3 * ((3 + 9) * 2 + 1 + 31 + 30 + 9)
    # REST for July 10 of the 1h and 4h series (the 1d series' July 10 candle is still open).
    assert prices_pass.rest_pages == 3 * 2

    # 8 h from April to mid-June, then 4 h, then 1 h: the schedule came from the data.
    with db.connect(env.dsn) as conn:
        gaps = Counter(
            int(g) // HOUR_MS
            for (g,) in conn.execute(
                "SELECT (extract(epoch FROM funding_time - lag(funding_time) OVER w) * 1000)"
                "::bigint FROM funding_rates WHERE symbol = 'ETHUSDT' WINDOW w AS "
                "(ORDER BY funding_time) OFFSET 1"
            ).fetchall()
        )
        pointer = conn.execute(
            "SELECT symbol, (extract(epoch FROM last_ts) * 1000)::bigint FROM "
            "futures_sync_state WHERE kind = 'funding' ORDER BY symbol"
        ).fetchall()
        candles = conn.execute("SELECT count(*) FROM candlesticks").fetchone()
    assert set(gaps) == {8, 4, 1}
    assert gaps[1] > 100  # 2024-07-03 .. 07-10 hourly
    # The pointer is the newest funding per symbol.
    newest = {s: max(t for t in _truth_times(env, s, start, end)) for s in reports}
    assert dict(pointer) == newest
    # Archive months (April..June) carry the interval, the REST tail the mark price; BNB's
    # missing May and everything after it came from REST.
    assert reports["BTCUSDT"].with_hours == 91 * 3
    assert reports["BNBUSDT"].with_hours == 30 * 3
    assert reports["BNBUSDT"].with_mark == reports["BNBUSDT"].truth - 30 * 3
    assert candles is not None and candles[0] > 0
    klines = env.check()
    assert [(len(r.missing), len(r.extra), len(r.wrong)) for r in klines] == [(0, 0, 0)] * 3

    _check_readme_query(env)

    # `qryptify status` shows the funding coverage per symbol (rows, no gaps, the pointer).
    status = run_cli(env, "status")
    print(status.stdout, status.stderr[-2000:])
    # One block: per symbol (funding) and per kind and pair: rows, no gaps, nothing empty.
    assert status_rows(status.stdout) == {
        **{("funding", s): (r.truth, 0, 0) for s, r in reports.items()},
        **{(p.kind, p.pair): (p.truth, 0, 0) for p in prices},
    }

    as_json = run_cli(env, "status", "--json")
    futures_json = json.loads(as_json.stdout)["futures"]
    assert {(f["kind"], f["series"]): (f["rows"], f["gaps"]) for f in futures_json} == {
        **{("funding", s): (r.truth, 0) for s, r in reports.items()},
        **{(p.kind, p.pair): (p.truth, 0) for p in prices},
    }

    # `qryptify tap --futures` shows every funding record of the topic, decoded.
    tap = cli(env, "tap", "--futures", "--from-beginning", "--exit-at-end", "--format", "json")
    tapped = [json.loads(line) for line in tap.splitlines() if line.startswith("{")]
    assert Counter((r["type"], r["symbol"]) for r in tapped if r["type"] == "funding") == {
        ("funding", s): r.truth for s, r in reports.items()
    }
    assert Counter(
        (r["type"], f"{r['symbol']}/{r['interval']}") for r in tapped if r["type"] != "funding"
    ) == {(p.kind, p.pair): p.truth for p in prices}

    # reset-db empties the futures tables too; replay rebuilds them from the topic.
    assert env.services[0].stop() == 0
    cli(env, "reset-db", "-f")
    with db.connect(env.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM funding_rates").fetchone() == (0,)
    cli(env, "replay", "--no-progress")
    replayed = {s: compare_funding(env.dsn, env.sim.url, s, start, end) for s in reports}
    assert {s: (r.counts, r.with_mark, r.with_hours) for s, r in replayed.items()} == {
        s: ((0, 0, 0), r.with_mark, r.with_hours) for s, r in reports.items()
    }
    replayed_prices = [
        compare_prices(env.dsn, env.sim.url, p.kind, p.pair, start, end) for p in prices
    ]
    assert [(p.counts, p.truth) for p in replayed_prices] == [((0, 0, 0), p.truth) for p in prices]

    # A second run publishes nothing: it resumes from what the futures topic holds.
    again = backfiller(env)
    assert again.run() == 0
    assert again.futures is not None
    assert again.futures.funding is not None and again.futures.funding.published == 0
    assert again.futures.prices is not None and again.futures.prices.published == 0


def _check_readme_query(env: BackfillEnv) -> None:
    """The README's funding-payment query, run as printed: one row per truth funding in
    June 2024, priced by the mark price (REST rows) or the last 1h close before it (archive
    rows, checked against the simulator's candles), payment = -0.5 x price x rate."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    query = text.split("<!-- funding-query", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    with db.connect(env.dsn) as conn:
        rows = conn.execute(query).fetchall()  # the README's literal query, no input
    lo, hi = parse_time_ms("2024-06-01"), parse_time_ms("2024-07-01")
    truth = {
        int(f["fundingTime"]): f
        for f in httpx.get(
            f"{env.sim.url}/sim/truth/funding",
            params={"symbol": "BTCUSDT", "start": lo + 1, "end": hi + 1},
            timeout=30,
        ).json()
    }
    candles = httpx.get(
        f"{env.sim.url}/sim/truth",
        params={"symbol": "BTCUSDT", "interval": "1h", "start": lo - HOUR_MS, "end": hi},
        timeout=30,
    ).json()
    assert len(rows) == len(truth) == 90
    total = 0.0
    for when, rate, price, payment, cumulative in rows:
        t = int(when.timestamp() * 1000)
        assert rate == float(truth[t]["fundingRate"])
        if t < hi:  # the June archive file: no mark price, the candle close before it
            last = max((c for c in candles if c[6] < t), key=lambda c: c[0])
            assert price == float(last[4])
        else:  # 2024-07-01 00:00 came from REST (July has no archive file yet)
            assert price == float(truth[t]["markPrice"])
        assert payment == pytest.approx(-0.5 * price * rate)
        total += payment
        assert cumulative == pytest.approx(total)


def _truth_times(env: BackfillEnv, symbol: str, start: int, end: int) -> list[int]:
    body = httpx.get(
        f"{env.sim.url}/sim/truth/funding",
        params={"symbol": symbol, "start": start, "end": end},
        timeout=30,
    ).json()
    return [int(f["fundingTime"]) for f in body]
