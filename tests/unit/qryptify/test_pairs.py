from __future__ import annotations

import pytest

from qryptify.errors import PairError
from qryptify.pairs import (
    Pair,
    align_open,
    close_time,
    count_opens,
    last_closed_open,
    next_open,
    open_times,
    parse_pair,
)


@pytest.mark.parametrize(
    ("raw", "pair"),
    [
        ("BTCUSDT/4h", Pair("BTCUSDT", "4h")),
        ("ETHUSDT-1h", Pair("ETHUSDT", "1h")),
        ({"symbol": "BNBUSDT", "interval": "15m"}, Pair("BNBUSDT", "15m")),
        ("1000SHIBUSDT/1M", Pair("1000SHIBUSDT", "1M")),
    ],
)
def test_parse_pair_forms(raw: object, pair: Pair) -> None:
    assert parse_pair(raw) == pair


@pytest.mark.parametrize("raw", ["BTCUSDT", "BTCUSDT/1s", "btcusdt/1m", 42, {"symbol": "X"}])
def test_parse_pair_rejects(raw: object) -> None:
    with pytest.raises(PairError):
        parse_pair(raw)


def test_key_and_stream_names() -> None:
    p = Pair("BTCUSDT", "1m")
    assert p.key == "BTCUSDT|1m"
    assert p.stream == "btcusdt@kline_1m"
    assert Pair.from_key("BTCUSDT|1m") == p


def test_binance_doc_weekly_candle() -> None:
    # The official /fapi/v1/klines example is a 1w candle: Mon 2017-07-03 .. Sun 23:59:59.999.
    assert align_open("1w", 1499040000000 + 3 * 86_400_000) == 1499040000000
    assert close_time("1w", 1499040000000) == 1499644799999


def test_monthly_candles_follow_the_calendar() -> None:
    jan = 1_704_067_200_000  # 2024-01-01
    feb = next_open("1M", jan)
    assert feb - jan == 31 * 86_400_000
    assert next_open("1M", feb) - feb == 29 * 86_400_000  # 2024 is a leap year
    assert align_open("1M", feb + 12345) == feb
    assert list(open_times("1M", jan, next_open("1M", feb))) == [jan, feb]


def test_grid_counts_and_last_closed() -> None:
    t0 = 1_704_067_200_000
    assert list(open_times("1m", t0 + 1, t0 + 180_000)) == [t0 + 60_000, t0 + 120_000]
    assert count_opens("1m", t0, t0 + 180_000) == 3
    assert count_opens("1h", t0, t0) == 0
    # At 00:00:30 the 00:00 candle is open; the newest closed one opened at 23:59.
    assert last_closed_open("1m", t0 + 30_000) == t0 - 60_000
