"""REST contract: the simulator's /fapi answers pinned to Binance's documented formats."""

from __future__ import annotations

import httpx
import pytest

from qryptify.pairs import HOUR_MS, MINUTE_MS, align_open
from sim.server import SimulatorThread
from tests.integration.sim.helpers import REAL_REST_ROWS, START_MS, Params, check_rest_row

WEIGHT = "X-MBX-USED-WEIGHT-1M"


def test_server_time(http: httpx.Client) -> None:
    r = http.get("/fapi/v1/time")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["serverTime"] and type(body["serverTime"]) is int
    assert body["serverTime"] >= START_MS
    assert r.headers[WEIGHT] == "1"


def test_exchange_info_shape(http: httpx.Client) -> None:
    r = http.get("/fapi/v1/exchangeInfo")
    info = r.json()
    for key in (
        "timezone",
        "serverTime",
        "futuresType",
        "rateLimits",
        "exchangeFilters",
        "assets",
        "symbols",
    ):
        assert key in info
    assert info["timezone"] == "UTC" and info["futuresType"] == "U_MARGINED"
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 2400,
    }
    by_name = {s["symbol"]: s for s in info["symbols"]}
    btc = by_name["BTCUSDT"]
    assert btc["contractType"] == "PERPETUAL" and btc["deliveryDate"] == 4133404800000
    assert btc["onboardDate"] == 1569398400000 and btc["status"] == "TRADING"
    assert (btc["pricePrecision"], btc["quantityPrecision"]) == (2, 3)
    assert btc["pair"] == "BTCUSDT" and btc["baseAsset"] == "BTC" and btc["quoteAsset"] == "USDT"
    delisted = by_name["DELISTUSDT"]
    assert delisted["status"] in ("SETTLING", "CLOSE") and delisted["deliveryDate"] < START_MS


def test_klines_rows_match_the_documented_layout(http: httpx.Client) -> None:
    r = http.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "5m", "limit": 50})
    assert r.status_code == 200
    rows = r.json()
    assert len(rows) == 50
    for row in rows:
        check_rest_row(row)
        assert row[6] == row[0] + 5 * MINUTE_MS - 1
        assert row[11] == "0"
        # Decimals as in the real BTCUSDT rows: price 2, quantity 3, quote 5 (= 2 + 3).
        real = REAL_REST_ROWS[0]
        for i in (1, 2, 3, 4, 5, 7, 9, 10):
            assert len(row[i].split(".")[1]) == len(real[i].split(".")[1]), (i, row[i], real[i])
        assert float(row[3]) <= min(float(row[1]), float(row[4]))
        assert float(row[2]) >= max(float(row[1]), float(row[4]))
    opens = [row[0] for row in rows]
    assert opens == sorted(opens) and len(set(opens)) == 50
    assert all(b - a == 5 * MINUTE_MS for a, b in zip(opens, opens[1:], strict=False))


def test_last_row_is_the_still_open_candle_and_the_rest_equal_truth(http: httpx.Client) -> None:
    rows = http.get(
        "/fapi/v1/klines", params={"symbol": "ETHUSDT", "interval": "1h", "limit": 5}
    ).json()
    server_time = http.get("/fapi/v1/time").json()["serverTime"]
    assert rows[-1][0] == align_open("1h", server_time - 1) or rows[-1][0] == align_open(
        "1h", server_time
    )
    assert rows[-1][6] >= server_time - 1000  # not closed yet (allowing for the clock moving)
    truth = http.get(
        "/sim/truth",
        params={"symbol": "ETHUSDT", "interval": "1h", "start": rows[0][0], "end": rows[-1][0]},
    ).json()
    assert truth == rows[:-1]


def test_default_limit_is_500_and_max_is_1500(http: httpx.Client) -> None:
    base: Params = {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "startTime": START_MS - 10 * 24 * HOUR_MS,
    }
    assert len(http.get("/fapi/v1/klines", params=base).json()) == 500
    assert len(http.get("/fapi/v1/klines", params={**base, "limit": 1500}).json()) == 1500
    r = http.get("/fapi/v1/klines", params={**base, "limit": 1501})
    assert r.status_code == 400 and r.json()["code"] == -1130


def test_start_and_end_select_by_open_time_inclusive(http: httpx.Client) -> None:
    start = START_MS - 5 * HOUR_MS
    params: Params = {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "startTime": start + 1,
        "endTime": start + 3 * HOUR_MS,
    }
    rows = http.get("/fapi/v1/klines", params=params).json()
    assert [r[0] for r in rows] == [start + HOUR_MS, start + 2 * HOUR_MS, start + 3 * HOUR_MS]
    only_end = http.get(
        "/fapi/v1/klines",
        params={"symbol": "BTCUSDT", "interval": "1h", "endTime": start, "limit": 2},
    ).json()
    assert [r[0] for r in only_end] == [start - HOUR_MS, start]


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)],
)
def test_request_weight_by_limit(http: httpx.Client, limit: int, weight: int) -> None:
    before = int(http.get("/fapi/v1/time").headers[WEIGHT])
    r = http.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": limit})
    assert r.status_code == 200
    assert int(r.headers[WEIGHT]) == before + weight


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121, "Invalid symbol."),
        ({"symbol": "BTCUSDT", "interval": "2m"}, -1120, "Invalid interval."),
        (
            {"symbol": "BTCUSDT", "interval": "1m", "startTime": 10, "endTime": 5},
            -1023,
            "Start time is greater than end time.",
        ),
        (
            {"symbol": "BTCUSDT", "interval": "1m", "startTime": "abc"},
            -1100,
            "Illegal characters found in parameter 'startTime'",
        ),
        (
            {"symbol": "BTCUSDT", "interval": "1m", "limit": "-5"},
            -1100,
            "Illegal characters found in parameter 'limit'",
        ),
        ({"interval": "1m"}, -1102, "Mandatory parameter 'symbol'"),
        ({"symbol": "BTCUSDT"}, -1102, "Mandatory parameter 'interval'"),
    ],
)
def test_error_bodies(http: httpx.Client, params: Params, code: int, msg: str) -> None:
    r = http.get("/fapi/v1/klines", params=params)
    assert r.status_code == 400
    body = r.json()
    assert list(body) == ["code", "msg"] and body["code"] == code and body["msg"].startswith(msg)
    assert WEIGHT in r.headers


def test_delisted_symbol_keeps_its_history_and_stops(http: httpx.Client) -> None:
    rows = http.get(
        "/fapi/v1/klines", params={"symbol": "DELISTUSDT", "interval": "1d", "limit": 3}
    ).json()
    assert len(rows) == 3
    assert rows[-1][0] == 1_717_113_600_000  # 2024-05-31: the last day before settlement
    assert all(row[6] < START_MS for row in rows)


def test_before_listing_is_empty(http: httpx.Client) -> None:
    rows = http.get(
        "/fapi/v1/klines",
        params={"symbol": "BTCUSDT", "interval": "1d", "startTime": 0, "endTime": 1569000000000},
    ).json()
    assert rows == []


def test_429_with_retry_after_then_418_ban() -> None:
    with (
        SimulatorThread(speed=60, start_ms=START_MS, weight_limit=12, ban_after_429s=2) as sim,
        httpx.Client(base_url=sim.url) as http,
    ):
        params: Params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 500}  # weight 5
        assert http.get("/fapi/v1/klines", params=params).headers[WEIGHT] == "5"
        assert http.get("/fapi/v1/klines", params=params).headers[WEIGHT] == "10"
        limited = http.get("/fapi/v1/klines", params=params)
        assert limited.status_code == 429
        assert limited.json()["code"] == -1003 and int(limited.headers["Retry-After"]) >= 1
        assert limited.headers[WEIGHT] == "10"
        # A small request still fits under the limit.
        assert http.get("/fapi/v1/time").status_code == 200
        statuses = [http.get("/fapi/v1/klines", params=params).status_code for _ in range(3)]
        assert statuses == [429, 429, 418]
        banned = http.get("/fapi/v1/time")
        assert banned.status_code == 418 and banned.json()["code"] == -1003
        assert int(banned.headers["Retry-After"]) > 60
        stats = http.get("/sim/stats").json()
        assert stats["responses_429"] == 3 and stats["responses_418"] == 2
